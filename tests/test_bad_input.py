"""Bad input through the command line: a clear one-line error (exit 2) or a one-line warning.

Every case writes its file in ``tmp_path`` and runs ``automl.cli.main`` in this process
(the same code path as the ``automl`` command, without paying its start-up per case); fd
2 is captured, so output from forked trial children counts too. A few of the same cases
run as real subprocesses in ``tests/test_cli.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl import cli
from automl.exceptions import DataError

FIT = ("--n-trials", "1", "--include", "logistic,ridge")


def _frame(n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    df = pd.DataFrame(
        {"x1": x1, "x2": rng.uniform(size=n), "color": rng.choice(["red", "blue"], n)}
    )
    df["label"] = np.where(x1 + rng.normal(scale=0.5, size=n) > 0, "yes", "no")
    return df


def _csv(df: pd.DataFrame, **kw) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        df.to_csv(path, index=False, **kw)
        return path

    return write


def _raw(data: bytes) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return write


def _with(**cols) -> pd.DataFrame:
    df = _frame()
    for name, values in cols.items():
        df[name] = values(df) if callable(values) else values
    return df


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


def _mixed_types(df):
    values = df["x2"].round(3).astype(str).to_numpy(dtype=object)
    values[:3] = ["oops", "n.a.", "?!"]
    return values


def _inf_huge(df):
    values = df["x1"].to_numpy(copy=True)
    values[:2] = [np.inf, -np.inf]
    values[2:4] = [1e308, -1e300]
    return values


_TEXT = [
    "good value for money",
    "arrived late and broken",
    "works as described fine",
    "would not buy this again",
    "great quality for the price",
]

# (id, file writer, extra arguments, expected exit status, expected text on stderr)
FIT_CASES = [
    ("missing file", lambda p: p.with_name("nope.csv"), (), 2, "file not found"),
    ("directory", _dir, (), 2, "holds no image files"),  # a folder is read as class folders of images
    ("empty file", _raw(b""), (), 2, "is empty"),
    ("header only", _raw(b"x1,x2,label\n"), (), 2, "header but no data rows"),
    ("binary file", _raw(bytes(range(256)) * 8), (), 2, "is not a text file"),
    ("ragged rows", _raw(b"x1,x2,label\n1,2,yes\n3,4,no,5,6\n"), (), 2, "as many fields as the header"),
    (
        "header shorter than the rows",
        _raw(b"x1,label\n" + b"".join(f"{i},{i % 2},x{i}\n".encode() for i in range(20))),
        (),
        2,
        "add the missing column name",
    ),
    (
        "copy of the target",
        _csv(_with(answer=lambda d: d["label"])),
        (),
        2,
        "column 'answer' is a copy of the target 'label'",
    ),
    (
        "one class with more than one row",
        _csv(_with(label=["a"] * 78 + ["b", "c"])),
        (),
        2,
        "only one class with more than one row",
    ),
    ("target missing", _csv(_frame()), ("--target", "Label"), 2, "did you mean 'label'"),
    ("target all missing", _csv(_with(label=np.nan)), (), 2, "has no values"),
    ("single class", _csv(_with(label="yes")), (), 2, "single class"),
    (
        "binary class with one row",
        _csv(_with(label=["no"] + ["yes"] * 79)),
        (),
        2,
        "a class with a single row",
    ),
    ("one row", _csv(_frame().head(1)), (), 2, "only 1 row"),
    ("no feature column", _csv(_frame()[["label"]]), (), 2, "no feature columns"),
    (
        "only useless columns",
        _csv(
            pd.DataFrame(
                {"row_id": range(80), "const": 1, "blank": np.nan, "label": _frame()["label"]}
            )
        ),
        (),
        2,
        "no usable feature column",
    ),
    ("unknown ignored column", _csv(_frame()), ("--ignore-columns", "nope"), 2, "--ignore-columns"),
    (
        "regression target text",
        _csv(_with(label="abc")),
        ("--task", "regression"),
        2,
        "not numeric",
    ),
    # handled, with a warning where something was changed
    (
        "target partly missing",
        _csv(_with(label=lambda d: d["label"].where(d.index >= 3))),
        (),
        0,
        "dropped 3 rows whose target 'label' is missing",
    ),
    (
        "multiclass class with one row",
        _csv(_with(label=["a"] * 40 + ["b"] * 39 + ["c"])),
        (),
        0,
        "dropped 1 row(s) of class(es) with a single row: c",
    ),
    ("semicolon", _csv(_frame(), sep=";"), (), 0, ""),
    (
        "semicolon and decimal commas",
        _csv(_frame(), sep=";", decimal=","),
        (),
        0,
        "read numbers written as '1.234,5' (decimal comma) in 2 column(s): x1, x2",
    ),
    (
        "thousands separators",
        _csv(_with(x2=lambda d: [f"{v * 1e5:,.1f}" for v in d["x2"]])),
        (),
        0,
        "read numbers written as '1,234.5' (thousands separators) in 1 column(s): x2",
    ),
    (
        "mostly numbers with some words",
        _csv(_with(x2=lambda d: d["x2"].round(3).astype(str).where(d.index % 5 > 0, "unknown"))),
        (),
        0,
        "column 'x2': 80% of its values are numbers but 16 are not (e.g. 'unknown')",
    ),
    ("target name with spaces", _csv(_frame().rename(columns={"label": " label "})),
     ("--target", " label"), 0, ""),
    (
        "labels with stray spaces",
        _csv(_with(label=lambda d: np.where(d.index % 2, d["label"] + "  ", " " + d["label"]))),
        (),
        0,
        "",
    ),
    (
        "timezone offsets across daylight saving time",
        _csv(_with(when=lambda d: pd.date_range("2024-03-01", periods=len(d), freq="D",
                                                tz="Europe/Paris").astype(str))),
        (),
        0,
        "",
    ),
    (
        "headers equal after trimming spaces",
        _csv(_frame().rename(columns={"x2": "x1 "})),
        (),
        0,
        "duplicate column names ['x1'] (after trimming spaces)",
    ),
    ("very long strings", _csv(_with(note=lambda d: [("abc " * 5000) + str(i % 3) for i in d.index])),
     (), 0, ""),
    ("tab", _csv(_frame(), sep="\t"), (), 0, ""),
    (
        "latin-1",
        _csv(_with(color=lambda d: np.where(d.index % 2, "café", "crème")), encoding="latin-1"),
        (),
        0,
        "",
    ),
    (
        "utf-8 bom, target first",
        _csv(_frame()[["label", "x1", "x2", "color"]], encoding="utf-8-sig"),
        (),
        0,
        "",
    ),
    (
        "duplicate column names",
        _raw(
            b"x1,x1,label\n"
            + b"".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n".encode() for i in range(60))
        ),
        (),
        0,
        "duplicate column names ['x1']",
    ),
    (
        "identifier, constant and empty columns",
        _csv(_with(row_id=lambda d: range(len(d)), const=7, blank=np.nan)),
        (),
        0,
        "dropping 3 column(s): 1 identifier ('row_id'); 1 constant ('const'); 1 empty ('blank')",
    ),
    ("mixed types", _csv(_with(x2=_mixed_types)), (), 0, "mixed types: 3 non-numeric values"),
    (
        "inf and huge values",
        _csv(_with(x1=_inf_huge)),
        (),
        0,
        "2 infinite value(s) read as missing",
    ),
    (
        "datetime and free text",
        _csv(
            _with(
                when=lambda d: pd.date_range("2024-01-01", periods=len(d), freq="D").astype(str),
                review=lambda d: [_TEXT[i % 5] for i in range(len(d))],
            )
        ),
        (),
        0,
        "",
    ),
    (
        "fewer rows than folds",
        _csv(_frame(6)[["x1", "x2"]].assign(label=[1.5, 2.5, 3.1, 4.2, 5.7, 6.3])),
        ("--cv", "10"),
        0,
        "6-fold cross-validation instead of 10",
    ),
    (
        "more columns than rows",
        _csv(
            pd.DataFrame(
                np.random.default_rng(0).normal(size=(20, 40)), columns=[f"c{i}" for i in range(40)]
            ).assign(label=["yes", "no"] * 10)
        ),
        (),
        0,
        "more columns (40) than rows (20)",
    ),
    (
        "leaking column",
        _csv(_with(outcome_code=lambda d: np.where(d["label"] == "yes", "Y", "N"))),
        (),
        0,
        "column 'outcome_code' alone predicts the target",
    ),
]


def _run(argv, capfd) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    captured = capfd.readouterr()
    return code, captured.err + captured.out


def _check(code: int, err: str, expected: int, pattern: str) -> None:
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    if expected:
        assert code == expected, err
        assert len(errors) == 1 and errors[0].startswith("automl: error: "), err
        assert pattern in errors[0], err
    else:
        assert code == 0, err
        assert not errors, err
        assert pattern in err, err
        if pattern:  # the warning is one line
            assert len([ln for ln in err.splitlines() if pattern in ln]) == 1, err


@pytest.mark.parametrize(
    "case,write,args,expected,pattern", FIT_CASES, ids=[c[0] for c in FIT_CASES]
)
def test_fit_bad_input(case, write, args, expected, pattern, tmp_path, capfd):
    path = write(tmp_path / "data.csv")
    target = () if "--target" in args else ("--target", "label")
    code, err = _run(["fit", path, *target, "--output", tmp_path / "out", *FIT, *args], capfd)
    _check(code, err, expected, pattern)
    if expected == 0:
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["members"]


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        cli.main(["fit", str(tmp_path / "nope.csv"), "--target", "y", "--debug"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("model")
    _frame(120).to_csv(base / "train.csv", index=False)
    code = cli.main(
        ["fit", str(base / "train.csv"), "--target", "label", "--output", str(base / "model"), *FIT]
    )
    assert code == 0
    return base / "model"


def _new(n: int = 30) -> pd.DataFrame:
    return _frame(n, seed=5).drop(columns="label")


PREDICT_CASES = [
    ("missing column", lambda d: d.drop(columns="x2"), 2, "column(s) the model needs are missing"),
    ("extra column", lambda d: d.assign(note="hello"), 0, "ignoring 1 column(s)"),
    ("reordered columns", lambda d: d[d.columns[::-1]], 0, ""),
    ("unseen category", lambda d: d.assign(color=["purple"] * len(d)), 0, ""),
    (
        "numbers as text, a few not numbers",
        lambda d: d.assign(x1=d["x1"].round(2).astype(str).where(d.index > 1, "n/a!")),
        0,
        "column 'x1': 2 of 30 values are not numbers (e.g. 'n/a!'); read as missing",
    ),
    (
        "numbers as text, many not numbers",
        lambda d: d.assign(x1=d["x1"].round(2).astype(str).where(d.index > 3, "n/a!")),
        2,
        "column 'x1' should hold numbers but 4 of 30 values are not (e.g. 'n/a!'), more than 10%",
    ),
    ("all text", lambda d: d.assign(x2="abc"), 2, "column 'x2' should hold numbers but 30 of 30"),
    (
        "decimal commas",
        lambda d: d.assign(x1=d["x1"].map(lambda v: f"{v:.4f}".replace(".", ","))),
        0,
        "column 'x1': 30 value(s) written as '1.234,5' (decimal comma) read as numbers",
    ),
    ("target column present", lambda d: d.assign(label="yes"), 0, ""),
]


@pytest.mark.parametrize(
    "case,change,expected,pattern", PREDICT_CASES, ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_bad_input(case, change, expected, pattern, model_dir, tmp_path, capfd):
    src = tmp_path / "new.csv"
    change(_new()).to_csv(src, index=False)
    code, err = _run(["predict", model_dir, src, "--output", tmp_path / "p.csv"], capfd)
    _check(code, err, expected, pattern)
    if expected == 0:
        preds = pd.read_csv(tmp_path / "p.csv")
        assert len(preds) == 30 and preds["prediction"].isin(["yes", "no"]).all()
        if case == "reordered columns":
            _new().to_csv(tmp_path / "plain.csv", index=False)
            assert (
                cli.main(
                    [
                        "predict",
                        str(model_dir),
                        str(tmp_path / "plain.csv"),
                        "--output",
                        str(tmp_path / "plain-p.csv"),
                    ]
                )
                == 0
            )
            pd.testing.assert_frame_equal(preds, pd.read_csv(tmp_path / "plain-p.csv"))


def test_decimal_commas_at_predict_give_the_same_probabilities(model_dir, tmp_path, capfd):
    """Numbers written with decimal commas in a ;-file predict as the plain numbers do."""
    new = _new()
    new.to_csv(tmp_path / "plain.csv", index=False)
    new.to_csv(tmp_path / "comma.csv", index=False, sep=";", decimal=",")
    for name in ("plain", "comma"):
        code, err = _run(["predict", model_dir, tmp_path / f"{name}.csv", "--output",
                          tmp_path / f"{name}-p.csv"], capfd)
        assert code == 0, err
    plain, comma = pd.read_csv(tmp_path / "plain-p.csv"), pd.read_csv(tmp_path / "comma-p.csv")
    np.testing.assert_allclose(comma["proba_yes"], plain["proba_yes"], atol=1e-9)


def test_predict_file_problems(model_dir, tmp_path, capfd):
    code, err = _run(["predict", model_dir, tmp_path / "nope.csv"], capfd)
    _check(code, err, 2, "file not found")
    _new().to_csv(tmp_path / "new.csv", index=False)
    code, err = _run(
        ["predict", model_dir, tmp_path / "new.csv", "--output", tmp_path / "new.csv", "--force"],
        capfd,
    )
    _check(code, err, 2, "--output is the input file")


def test_formula_cells_are_escaped_in_output_csvs(tmp_path, capfd):
    """Labels a spreadsheet would run as formulas come back quoted (CSV injection)."""
    df = _frame(80)
    df["label"] = np.where(df["label"] == "yes", '=HYPERLINK("http://x")', "@SUM(A1)")
    df.to_csv(tmp_path / "d.csv", index=False)
    code, err = _run(
        ["fit", tmp_path / "d.csv", "--target", "label", "--output", tmp_path / "m", *FIT], capfd
    )
    assert code == 0, err
    code, err = _run(
        ["predict", tmp_path / "m", tmp_path / "d.csv", "--output", tmp_path / "p.csv"], capfd
    )
    assert code == 0, err
    preds = pd.read_csv(tmp_path / "p.csv")
    assert set(preds["prediction"]) <= {'\'=HYPERLINK("http://x")', "'@SUM(A1)"}
    assert not any(str(c).startswith(("=", "+", "-", "@")) for c in preds.columns)
    board = pd.read_csv(tmp_path / "m" / "leaderboard.csv")
    for col in board.columns:
        assert not board[col].astype(str).str.startswith(("=", "+", "@")).any()
