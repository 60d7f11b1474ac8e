"""Reading files, inferring tasks and column kinds, preparing targets."""

import io
import logging

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


def test_a_cleaned_categorical_holds_each_value_once_stripped_and_missing_as_missing():
    # read from a file, as the CLI reads: pandas makes each cell's string anew when the
    # column becomes objects (2,000,000 copies of a few carrier codes: 100 MB a column)
    df = pd.read_csv(io.StringIO("colour,x\n" + "".join(
        f"{c},{i}\n" for i, c in enumerate([" red", "blue ", "", "red", "NA", "7"] * 500))))
    schema = infer_schema(df)
    assert schema.get("colour").kind == "categorical"
    clean = clean_frame(df, schema)["colour"]
    assert clean.dtype == object and clean.fillna("-").tolist()[:6] == ["red", "blue", "-", "red", "-", "7"]
    assert len({id(v) for v in clean}) == 4  # red, blue, 7 and the missing value
    again = clean_frame(df.iloc[[3, 1]], schema)["colour"]  # a row is cleaned as it is alone
    assert again.tolist() == ["red", "blue"]


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


@pytest.mark.parametrize("values,fmt,expected", [
    (["12,345", "1,234", "-3,000"], "1,234.5", [12345.0, 1234.0, -3000.0]),
    (["0,126", "-0,132", "1.234,5"], "1.234,5", [0.126, -0.132, 1234.5]),
    (["1 234,5", "2,5", "7"], "1.234,5", [1234.5, 2.5, 7.0]),
    (["1'234.5", "2.5", "1,000,000.25"], "1,234.5", [1234.5, 2.5, 1000000.25]),
    (["1.5", "-2e3", "inf"], "", [1.5, -2000.0, np.inf]),
])
def test_number_formats_detected_and_parsed(values, fmt, expected):
    from automl import numbers

    found, share, _ = numbers.detect(pd.Series(values))
    assert found == fmt and share == 1.0
    assert numbers.parse(pd.Series(values), found).tolist() == expected


def test_numbers_as_text_in_schema_and_predict_time_coercion(caplog):
    from automl.schema import MAX_UNREADABLE

    rng = np.random.default_rng(0)
    values = rng.normal(size=200) * 5000
    df = pd.DataFrame({
        "comma": [f"{v:.2f}".replace(".", ",") for v in values],
        "thousands": [f"{v:,.1f}" for v in values],
        "mostly": [f"{v:.1f}" if i % 4 else "unknown" for i, v in enumerate(values)],
    })
    schema = infer_schema(df)
    assert schema.get("comma").number_format == "1.234,5"
    assert schema.get("thousands").number_format == "1,234.5"
    assert schema.get("mostly").kind == "categorical" and "75% of its values are numbers" in \
        schema.get("mostly").note
    assert "read numbers written as '1.234,5' (decimal comma) in 1 column(s): comma" in caplog.text
    clean = clean_frame(df, schema)
    np.testing.assert_allclose(clean["comma"], values, atol=0.01)
    np.testing.assert_allclose(clean["thousands"], values, atol=0.1)
    # the saved rule survives the manifest and reads plain numbers too
    restored = type(schema).from_dict(schema.to_dict())
    new = pd.DataFrame({"comma": ["1,5", "2.5", "x"] + ["3"] * 7, "thousands": ["1,000"] * 10,
                        "mostly": ["1"] * 10})
    caplog.clear()
    out = clean_frame(new, restored, check=True)
    assert out["comma"].tolist()[:2] == [1.5, 2.5] and np.isnan(out["comma"][2])
    assert out["thousands"][0] == 1000.0
    assert "column 'comma': 1 of 10 values are not numbers (e.g. 'x'); read as missing" in caplog.text
    bad = new.assign(thousands=["n/a!"] * 2 + ["5"] * 8)
    assert 2 / 10 > MAX_UNREADABLE
    with pytest.raises(DataError, match=r"column 'thousands' should hold numbers but 2 of 10 values "
                                        r"are not \(e.g. 'n/a!'\), more than 10%"):
        clean_frame(bad, restored, check=True)


def test_dates_with_offsets_across_dst_are_utc():
    when = pd.date_range("2024-03-25", periods=20, freq="D", tz="Europe/Paris").astype(str)
    df = pd.DataFrame({"when": when})
    schema = infer_schema(df)
    assert schema.get("when").kind == "datetime"
    clean = clean_frame(df, schema)
    assert clean["when"].iloc[0] == pd.Timestamp("2024-03-24 23:00")  # +01:00
    assert clean["when"].iloc[10] == pd.Timestamp("2024-04-03 22:00")  # +02:00


def test_labels_trimmed_under_every_string_dtype():
    for dtype in (object, "str", "string"):
        y = pd.Series(["yes ", " no", "yes", "no  "] * 5, dtype=dtype)
        X, t = prepare_target(pd.DataFrame({"y": y, "x": range(20)}), "y")
        assert t.classes == ["no", "yes"] and t.task is Task.BINARY


def test_single_row_classes_dropped_and_copies_refused(caplog):
    df = pd.DataFrame({"y": ["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["z"], "x": range(31)})
    X, t = prepare_target(df, "y")
    assert t.classes == ["a", "b", "c"] and len(X) == 30 and t.task is Task.MULTICLASS
    assert "dropped 1 row(s) of class(es) with a single row: z" in caplog.text
    X, t = prepare_target(df.iloc[:21], "y")  # a, b and one c: binary after dropping c
    assert t.task is Task.BINARY and t.classes == ["a", "b"]
    copy = df.iloc[:30].assign(again=lambda d: d["y"] + " ")
    with pytest.raises(DataError, match="column 'again' is a copy of the target 'y'.*--ignore-columns"):
        prepare_target(copy, "y")
    numbers = pd.DataFrame({"y": np.arange(30) * 1.5, "y_float": [str(v) for v in np.arange(30) * 1.5],
                            "x": np.ones(30)})
    with pytest.raises(DataError, match="'y_float' is a copy"):
        prepare_target(numbers, "y")


CSV = "x,y\n" + "".join(f"{i % 7},{'ab'[i % 2]}\n" for i in range(20))


@pytest.mark.parametrize("method", ["gzip", "bz2", "xz", "zip"])
def test_compressed_files_read_whatever_their_name(tmp_path, method):
    pd.read_csv(io.StringIO(CSV)).to_csv(tmp_path / "d.csv.any", index=False, compression=(
        {"method": "zip", "archive_name": "d.csv"} if method == "zip" else method))
    df = read_table(tmp_path / "d.csv.any")
    assert list(df.columns) == ["x", "y"] and len(df) == 20


def test_zstd_needs_its_package(tmp_path):
    path = _write(tmp_path / "d.csv.zst", "")
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(20))
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="zstd-compressed.*zstd -d"):
            read_table(path)
    else:
        with pytest.raises(DataError, match="cannot"):
            read_table(path)


def test_preambles_trailing_delimiters_and_names(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="automl")
    df = read_table(_write(tmp_path / "c.csv", "# made by x, v2\n\n# more\n" + CSV))
    assert list(df.columns) == ["x", "y"] and len(df) == 20
    assert "skipped 2 comment line(s)" in caplog.text
    df = read_table(_write(tmp_path / "t.csv", "Sales 2024\n" + CSV))
    assert list(df.columns) == ["x", "y"] and len(df) == 20
    lines = CSV.splitlines()
    df = read_table(_write(tmp_path / "d.csv", "\r\n".join([lines[0]] + [ln + "," for ln in lines[1:]])))
    assert list(df.columns) == ["x", "y"] and df["x"].tolist()[:3] == [0, 1, 2]
    df = read_table(_write(tmp_path / "n.csv", '"x ", x,y\n1,2,a\n3,4,b\n'))
    assert list(df.columns) == ["x", "x.1", "y"]
    assert "duplicate column names ['x'] (after trimming spaces)" in caplog.text


def test_excel_sep_line_and_a_target_written_with_decimal_commas(tmp_path):
    df = read_table(_write(tmp_path / "e.csv", "sep=;\nx;y\n" + "".join(
        f"{i % 5},5;{(i * 37 % 101) / 4:.2f}\n".replace(".", ",") for i in range(30))))
    assert list(df.columns) == ["x", "y"] and len(df) == 30
    X, t = prepare_target(df, "y")
    assert t.task is Task.REGRESSION and t.y[1] == 37 / 4
    assert infer_schema(X).get("x").number_format == "1.234,5"


def test_currency_percent_and_accounting_negatives_are_numbers():
    df = pd.DataFrame({"price": ["$1,200.50", "$3", "-$4.25", "(12)"] * 10,
                       "rate": ["12%", "3.5 %", "\u22121%", "0%"] * 10})
    schema = infer_schema(df)
    assert schema.get("price").kind == "numeric" and "currency" in schema.get("price").note
    clean = clean_frame(df, schema)
    assert clean["price"].tolist()[:4] == [1200.5, 3.0, -4.25, -12.0]
    assert clean["rate"].tolist()[:4] == [12.0, 3.5, -1.0, 0.0]


@pytest.mark.parametrize("make", [
    lambda r: r.integers(0, 50, 300_000),                       # small range: counted by value
    lambda r: r.integers(-10**6, 10**6, 300_000),               # negative, wider than the rows
    lambda r: r.integers(0, 2**63 - 1, 300_000, dtype=np.int64),  # too wide: sorted
    lambda r: r.integers(0, 1000, 300_000).astype(np.uint64),
    lambda r: r.integers(-40, 40, 300_000).astype(float),       # whole numbers as floats
    lambda r: np.round(r.normal(size=300_000), 2),              # fractions: sorted
    lambda r: pd.array(r.integers(0, 9, 300_000), dtype="Int64"),
    lambda r: np.array([1e300, -1e300] * 150_000),              # whole, but no range to count
])
def test_distinct_count_of_long_numeric_columns_is_exact(make):
    from automl.schema import _n_distinct

    values = pd.Series(make(np.random.default_rng(0)))
    assert _n_distinct(values) == values.nunique()


def test_clean_frame_keeps_numbers_in_one_block_and_the_columns_in_order():
    """Numbers are written once into one float block (no copies of a large table), in
    place: infinities missing, magnitudes clipped; the frame keeps the schema's order."""
    frame = pd.DataFrame({"a": [1, 2, 3, 4] * 30, "c": ["x", " y", "x", None] * 30,
                          "b": [1.5, np.inf, -1e40, np.nan] * 30, "d": [0, 5, 7, 9] * 30})
    schema = infer_schema(frame)
    out = clean_frame(frame, schema)
    assert list(out.columns) == list(schema.used)
    assert out["b"].tolist()[:4][0] == 1.5 and np.isnan(out["b"][1]) and out["b"][2] == -1e30
    assert out["c"].tolist()[:4] == ["x", "y", "x", out["c"][3]] and pd.isna(out["c"][3])
    assert [str(out[c].dtype) for c in "abd"] == ["float64"] * 3
    floats = [b for b in out._mgr.blocks if b.dtype == float]
    assert len(floats) == 1 and sorted(floats[0].mgr_locs.as_array) == [0, 2, 3]


def _number_columns(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Number columns of every shape the kinds depend on."""
    def with_nan(a, at):
        a = a.astype(float)
        a[at] = np.nan
        return a

    inf = rng.normal(size=n)
    inf[:3], inf[3] = np.inf, -np.inf
    huge = rng.normal(size=n)
    huge[:2] = 1e31
    one = np.full(n, np.nan)
    one[0] = 3
    return {
        "normal": rng.normal(size=n), "missing": with_nan(rng.normal(size=n), rng.random(n) < .3),
        "infinite": inf, "huge": huge, "constant": np.full(n, 2.5),
        "constant_missing": with_nan(np.full(n, 2.5), 0), "all_missing": np.full(n, np.nan),
        "all_infinite": np.full(n, np.inf), "one_value": one,
        "whole": rng.integers(0, 10, n).astype(float), "zero_one": rng.integers(0, 2, n).astype(float),
        "zero_two": rng.integers(0, 2, n) * 2.0, "count": np.arange(n, dtype=float) + 7,
        "count_missing": with_nan(np.arange(n), n // 2), "shuffled": rng.permutation(n).astype(float),
        "repeat_last": np.r_[np.arange(n - 1), 0].astype(float), "signed_zero": np.where(
            rng.random(n) < .5, 0.0, -0.0), "ints": rng.integers(-5, 5, n),
        "int_count": rng.permutation(n) + 100, "row_id": rng.permutation(n) * 3,
        "spaced": rng.permutation(n) * 3, "int_constant": np.full(n, 4),
        "int_zero_one": rng.integers(0, 2, n), "big_ids": 10**18 + rng.permutation(n),
        "int32": rng.integers(0, 1000, n).astype(np.int32),
        "uint8": rng.integers(0, 255, n).astype(np.uint8),
        "float32": rng.normal(size=n).astype(np.float32),
    }


@pytest.mark.parametrize("n", [4, 19, 20, 21, 1_000, 30_000])
def test_a_wide_tables_number_columns_get_the_kinds_one_by_one_inference_gives(n):
    """automl.schema_numeric reads a wide table's number columns as blocks; each gets the
    same ColumnInfo as infer_column gives it alone."""
    import dataclasses

    from automl.schema import infer_column
    from automl.schema_numeric import numeric_infos

    rng = np.random.default_rng(n)
    X = pd.DataFrame({**_number_columns(n, rng),
                      **{f"pad{i}": rng.normal(size=n) for i in range(40)}, "text": ["a"] * n})
    known = numeric_infos(X)
    assert set(known) == set(X.columns) - {"text"}
    for name in known:
        assert dataclasses.asdict(known[name]) == dataclasses.asdict(infer_column(name, X[name])), name
    kinds = {name: known[name].kind for name in ("constant", "all_missing", "count", "row_id",
                                                 "spaced", "zero_one", "zero_two")}
    if n >= 20:
        assert kinds == {"constant": "constant", "all_missing": "empty", "count": "identifier",
                         "row_id": "identifier", "spaced": "numeric", "zero_one": "boolean",
                         "zero_two": "numeric"}
    assert numeric_infos(X.iloc[:, :10]) == {}  # narrow: one by one
