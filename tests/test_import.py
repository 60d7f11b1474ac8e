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


def test_loading_a_model_file_imports_neither_torch_nor_pytest(tmp_path):
    """skops lists scikit-learn's estimators when imported (every sklearn module, pytest and
    torch with it); automl checks names itself, so `predict` skips that (persistence.skops_io)."""
    from sklearn.linear_model import LogisticRegression

    from automl.persistence import skops_io

    path = tmp_path / "m.skops"
    path.write_bytes(skops_io().dumps(LogisticRegression().fit([[0.0], [1.0]], [0, 1])))
    code = (
        "import sys\n"
        "from automl.persistence import skops_io\n"
        f"sio = skops_io(); data = open({str(path)!r}, 'rb').read()\n"
        "model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))\n"
        "assert list(model.predict([[0.0], [1.0]])) == [0, 1]\n"
        "print(','.join(m for m in ('torch', 'pytest') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
