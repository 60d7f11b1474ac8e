import subprocess
import sys


def test_import_automl_loads_no_heavy_framework():
    code = (
        "import sys, automl, automl.cli, automl.engine, automl.registry\n"
        "heavy = [m for m in ('torch', 'lightning', 'ray', 'pytorch_lightning') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_and_lazy_estimators():
    import automl

    assert automl.__version__
    assert automl.AutoMLClassifier.__name__ == "AutoMLClassifier"
