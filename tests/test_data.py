"""Reading files, inferring tasks and column kinds, preparing targets."""

import numpy as np
import pandas as pd
import pytest

from automl.contracts import Task
from automl.data import infer_task, prepare_target, read_table
from automl.exceptions import DataError
from automl.schema import clean_frame, infer_schema


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_delimiter_sniffed(tmp_path, sep):
    p = _write(tmp_path / "d.csv", f"a{sep}b{sep}y\n1{sep}x{sep}0\n2{sep}y{sep}1\n3{sep}z{sep}0\n")
    df = read_table(p)
    assert list(df.columns) == ["a", "b", "y"] and len(df) == 3


def test_latin1_and_bom(tmp_path):
    df = read_table(_write(tmp_path / "l.csv", "name,y\ncafé,1\nnaïve,0\n", "latin-1"))
    assert df["name"].tolist() == ["café", "naïve"]
    df = read_table(_write(tmp_path / "b.csv", "\ufeffname,y\nx,1\nz,0\n", "utf-8"))
    assert list(df.columns) == ["name", "y"]


def test_parquet(tmp_path):
    pd.DataFrame({"a": [1, 2], "y": [0, 1]}).to_parquet(tmp_path / "d.parquet")
    assert read_table(tmp_path / "d.parquet").shape == (2, 2)


@pytest.mark.parametrize("case,pattern", [
    ("missing", "file not found"), ("dir", "is a directory"), ("empty", "is empty"),
    ("header", "header but no data rows"),
])
def test_bad_files(tmp_path, case, pattern):
    path = tmp_path / "f.csv"
    if case == "dir":
        path.mkdir()
    elif case == "empty":
        path.write_text("")
    elif case == "header":
        path.write_text("a,b,y\n")
    with pytest.raises(DataError, match=pattern):
        read_table(path)


def test_target_errors_and_suggestions():
    df = pd.DataFrame({"Income": [1, 2, 3], "x": [1, 2, 3]})
    with pytest.raises(DataError, match="did you mean 'Income'"):
        prepare_target(df, "income")
    with pytest.raises(DataError, match="no values"):
        prepare_target(pd.DataFrame({"y": [np.nan] * 3, "x": [1, 2, 3]}), "y")
    with pytest.raises(DataError, match="single class"):
        prepare_target(pd.DataFrame({"y": ["a"] * 3, "x": [1, 2, 3]}), "y")


def test_missing_target_rows_dropped(caplog):
    df = pd.DataFrame({"y": ["a", None, "b", "a", "b"], "x": [1, 2, 3, 4, 5]})
    X, t = prepare_target(df, "y")
    assert len(X) == 4 and t.dropped_rows == 1 and t.task is Task.BINARY
    assert "dropped 1 rows" in caplog.text


@pytest.mark.parametrize("values,task", [
    (["a", "b"] * 10, Task.BINARY), ([1, 2, 3] * 10, Task.MULTICLASS),
    (list(np.linspace(0, 1, 30)), Task.REGRESSION), (list(range(30)), Task.REGRESSION),
    ([True, False] * 5, Task.BINARY),
])
def test_infer_task(values, task):
    assert infer_task(pd.Series(values)) is task


def test_column_kinds(mixed_frame):
    schema = infer_schema(mixed_frame.drop(columns="label"))
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {"row_id": "identifier", "x1": "numeric", "x2": "numeric", "color": "categorical",
                     "flag": "boolean", "when": "datetime", "review": "text", "const": "constant"}
    clean = clean_frame(mixed_frame, schema)
    assert "row_id" not in clean and "const" not in clean
    assert set(clean["flag"].dropna().unique()) == {0.0, 1.0}


def test_mixed_types_inf_and_leading_zero_codes():
    df = pd.DataFrame({
        "num": ["1", "2", "x", "4"] + [str(i) for i in range(100)],
        "code": ["01", "02", "01", "03"] + ["02"] * 100,
        "big": [np.inf, 1e308, -np.inf, 2.0] + list(range(100)),
    })
    schema = infer_schema(df)
    assert schema.get("num").kind == "numeric" and "mixed" in schema.get("num").note
    assert schema.get("code").kind == "categorical"
    clean = clean_frame(df, schema)
    assert clean["big"].isna().sum() == 2 and np.isnan(clean["num"][2])


def _leak_target(task: str, y) -> "object":
    from automl.data import Target

    classes = sorted(set(y)) if task != "regression" else None
    return Target(np.asarray(y), Task(task), classes, 0)


def test_leak_check_finds_the_leak_among_many_columns(caplog):
    from automl.leaks import warn_leaks

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.integers(0, 5, size=(50, 2000)).astype(float),
                     columns=[f"c{i}" for i in range(2000)])
    y = rng.integers(0, 2, 50)
    X["c1234"] = np.where(y == 1, 7.0, 3.0)
    X["code"] = np.where(y == 1, "Y", "N")
    X.loc[0, "code"] = np.nan
    warn_leaks(X, _leak_target("binary", y))
    warned = [r.getMessage() for r in caplog.records]
    assert any("'c1234' alone predicts" in m for m in warned)
    assert any("'code' alone predicts" in m for m in warned)
    assert len(warned) == 2, warned


def test_leak_check_samples_large_tables_and_checks_regression(caplog):
    from automl.leaks import LEAK_SAMPLE_ROWS, warn_leaks

    rng = np.random.default_rng(1)
    n = LEAK_SAMPLE_ROWS * 3
    y = rng.normal(size=n)
    X = pd.DataFrame({"noise": rng.normal(size=n), "y_later": y * 2 + 1, "few": rng.integers(0, 2, n)})
    X.loc[::7, "y_later"] = np.nan  # missing values do not hide it
    warn_leaks(X, _leak_target("regression", y))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "'y_later' is almost identical to the target" in warned[0], warned
