"""Input forms: compressed files, preambles, odd layouts, non-CSV files, standard input (``-``).

The file cases run ``automl.cli.main`` in this process, like ``tests/test_bad_input.py``;
standard input runs the real ``automl`` command, whose fit also checks that a multiclass
class with a single row no longer fails every LightGBM and HistGradientBoosting trial
("previously unseen labels").
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import AUTOML, ROOT
from tests.test_bad_input import FIT, _check, _csv, _frame, _raw, _run


def _zip(members: dict[str, str]) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        with zipfile.ZipFile(path, "w") as archive:
            for name, text in members.items():
                archive.writestr(name, text)
        return path

    return write


def _compressed(method: str) -> Callable[[Path], Path]:
    """The plain test frame, compressed; the file keeps the name ``data.csv``: its bytes tell."""

    def write(path: Path) -> Path:
        _frame().to_csv(path, index=False, compression={"method": method, "archive_name": "d.csv"}
                        if method == "zip" else method)
        return path

    return write


def _preamble(text: str) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_text(text + _frame().to_csv(index=False))
        return path

    return write


def _trailing_delimiter(path: Path) -> Path:
    lines = _frame().to_csv(index=False).splitlines()
    path.write_text("\n".join([lines[0]] + [ln + "," for ln in lines[1:]]) + "\n")
    return path


# (id, file writer, expected exit status, expected text on stderr)
FILE_CASES = [
    ("web page", _raw(b"<!DOCTYPE html>\n<html><body>x1,label</body></html>\n"), 2, "HTML"),
    ("json", _raw(b'[{"x1": 1, "label": "yes"}, {"x1": 2, "label": "no"}]\n'), 2, "JSON"),
    ("xlsx", _zip({"[Content_Types].xml": "<x/>", "xl/workbook.xml": "<x/>"}), 2, "spreadsheet"),
    ("xls", _raw(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)), 2, "spreadsheet"),
    ("zip of two files", _zip({"a.csv": "x,label\n", "b.csv": "x,label\n"}), 2, "zip archive of 2"),
    ("corrupt gzip", _raw(b"\x1f\x8b\x08\x00" + b"garbage" * 20), 2, "cannot decompress"),
    ("only comment lines", _raw(b"# exported\n# nothing else\n"), 2, "only comment lines"),
    ("gzip", _compressed("gzip"), 0, ""),
    ("bz2", _compressed("bz2"), 0, ""),
    ("xz", _compressed("xz"), 0, ""),
    ("zip", _compressed("zip"), 0, ""),
    ("utf-16", _csv(_frame(), encoding="utf-16"), 0, ""),
    ("no header row", _raw(b"".join(f"{i},{i % 3},{'ab'[i % 2]}\n".encode() for i in range(30))), 2,
     "the first row looks like data: add a header row"),
    ("crlf line endings", _csv(_frame(), lineterminator="\r\n"), 0, ""),
    ("quoted headers and values", _csv(_frame(), quoting=csv.QUOTE_ALL), 0, ""),
    ("trailing delimiter on rows", _trailing_delimiter, 0, ""),
    (
        "blank lines",
        _raw(b"x1,label\n\n" + b"".join(f"{i % 7},{'ab'[i % 2]}\n\n".encode() for i in range(40))),
        0,
        "",
    ),
    ("comment preamble", _preamble("# exported by tool\n# 2024-01-01, v2\n"), 0,
     "skipped 2 comment line(s) ('#') above the header"),
    ("title line", _preamble("Monthly report\n\n"), 0,
     "skipped 2 line(s) above the header of"),
]


@pytest.mark.parametrize("case,write,expected,pattern", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_forms(case, write, expected, pattern, tmp_path, capfd):
    path = write(tmp_path / "data.csv")
    code, err = _run(["fit", path, "--target", "label", "--output", tmp_path / "out", *FIT], capfd)
    _check(code, err, expected, pattern)
    if expected == 0:
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["members"]


def _automl(*args: object, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([AUTOML, *map(str, args)], input=stdin, capture_output=True, timeout=300,
                          env=env, cwd=ROOT)


def _multiclass(n: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    df = pd.DataFrame({"x": x, "z": rng.normal(size=n)})
    df["kind"] = np.where(x > 0.4, "high", np.where(x < -0.4, "low", "mid"))
    df.loc[0, "kind"] = "rare"  # a class with a single row
    return df


def test_fit_and_predict_from_standard_input(tmp_path):
    out = tmp_path / "run"
    fit = _automl("fit", "-", "--target", "kind", "--output", out, "--n-trials", "2",
                  "--include", "lightgbm,hist_gb", "--progress", "plain",
                  stdin=_multiclass().to_csv(index=False).encode())
    err = fit.stderr.decode()
    assert fit.returncode == 0, err
    assert "Traceback" not in err
    assert "dropped 1 row(s) of class(es) with a single row: rare" in err
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["learner"]) == {"lightgbm", "hist_gb"}
    assert (board["state"] == "complete").all(), board.to_string()

    new = _multiclass(20).drop(columns="kind").to_csv(index=False).encode()
    pred = _automl("predict", out, "-", stdin=gzip.compress(new))
    assert pred.returncode == 0, pred.stderr.decode()
    preds = pd.read_csv(io.BytesIO(pred.stdout))
    assert len(preds) == 20 and set(preds["prediction"]) <= {"high", "low", "mid"}
    assert "proba_rare" not in preds.columns


def test_empty_standard_input_is_a_one_line_error(tmp_path):
    res = _automl("fit", "-", "--target", "y", "--output", tmp_path / "run")
    err = res.stderr.decode().strip().splitlines()
    assert res.returncode == 2
    assert err == ["automl: error: standard input ('-') is empty; pipe a CSV file into the command, "
                   "e.g. `cat data.csv | automl ... -`."]
