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


def _cli_modules(args, tmp_path):
    """Run the CLI with ``args`` in a fresh interpreter; whether pyarrow was loaded, and the
    storage of pandas' strings there."""
    code = (
        "import sys\n"
        "from automl.cli import main\n"
        f"rc = main({args!r})\n"
        "import pandas as pd\n"
        "print(rc, 'pyarrow' in sys.modules, pd.Series(['a']).dtype.storage)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-3:]


def test_a_small_csv_is_fitted_and_predicted_without_pyarrow_and_parquet_with_it(tmp_path):
    """pandas imports pyarrow (about 45 MB a process) only to back its strings: `fit` and
    `predict` of a small CSV leave it out (automl.lean_import), a Parquet file keeps it, and
    a model fitted either way predicts from the other."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b", "c"], 200)})
    df["y"] = np.where(df.x + (df.c == "a") > 0.3, "yes", "no")
    df.to_csv(tmp_path / "small.csv", index=False)
    df.to_parquet(tmp_path / "small.parquet")
    fit = ["fit", "--target", "y", "--n-trials", "2", "--include", "lightgbm", "--quiet"]
    assert _cli_modules([*fit[:1], "small.csv", *fit[1:], "-o", "m1"], tmp_path) == ["0", "False", "python"]
    assert _cli_modules([*fit[:1], "small.parquet", *fit[1:], "-o", "m2"], tmp_path) == ["0", "True", "pyarrow"]
    assert _cli_modules(["predict", "m2", "small.csv", "-o", "p1.csv"], tmp_path)[1] == "False"
    assert _cli_modules(["predict", "m1", "small.parquet", "-o", "p2.csv"], tmp_path)[1] == "True"
    p1, p2 = pd.read_csv(tmp_path / "p1.csv"), pd.read_csv(tmp_path / "p2.csv")
    assert len(p1) == len(p2) == 200


def test_which_tables_are_read_without_pyarrow(tmp_path, monkeypatch):
    from automl import lean_import

    small = tmp_path / "t.csv"
    small.write_text("a,b\n1,2\n")
    (tmp_path / "t.parquet").write_text("a,b\n1,2\n")
    (tmp_path / "parquet_named.csv").write_bytes(b"PAR1" + b"\0" * 20)
    assert lean_import.small_csv(str(small))
    assert not lean_import.small_csv("-") and not lean_import.small_csv(str(tmp_path))
    assert not lean_import.small_csv(str(tmp_path / "t.parquet"))
    assert not lean_import.small_csv(str(tmp_path / "parquet_named.csv"))
    assert not lean_import.small_csv(str(tmp_path / "missing.csv"))
    monkeypatch.setattr(lean_import, "SMALL_TABLE_BYTES", 4)
    assert not lean_import.small_csv(str(small))
