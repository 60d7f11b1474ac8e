"""Column kinds: inferred once from the training data, then applied to every frame.

The same :class:`FeatureSchema` cleans the training frame and every frame given to
``predict``, so a changed dtype at predict time (numbers read as text, ...) is coerced
back to what the model was trained on.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from automl import numbers
from automl.exceptions import DataError

log = logging.getLogger("automl")

Kind = Literal[
    "numeric", "categorical", "boolean", "datetime", "text", "identifier", "constant", "empty",
    "image",
]
USED_KINDS = ("numeric", "categorical", "boolean", "datetime", "text", "image")
HIGH_CARDINALITY = 50
COUNT_ALL_ROWS = 100_000  # up to this, distinct values are counted by hashing (_n_distinct)
# beyond it, a column of fractional numbers with more than MANY_DISTINCT distinct values
# among DISTINCT_SAMPLE of its rows is not counted further (see _n_distinct)
DISTINCT_SAMPLE = 20_000
MANY_DISTINCT = 1_000
HUGE = 1e30  # numbers beyond are clipped: their squares overflow scaling and float32 learners
NUMERIC_SHARE = 0.95  # a text column is numeric when this share of its values reads as numbers
MOSTLY_NUMBERS = 0.5  # from this share up to NUMERIC_SHARE: categorical, with a notice
MAX_UNREADABLE = 0.10  # predict refuses a column with a larger share of unreadable values

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}
_ID_NAME = re.compile(r"(^|[_\W])(id|idx|index|key|uuid|guid)$|[a-z]Id$|ID$", re.IGNORECASE)


@dataclass
class ColumnInfo:
    name: str
    kind: Kind
    dtype: str
    n_unique: int  # distinct values (a lower bound for long fractional columns: _n_distinct)
    missing_fraction: float
    high_cardinality: bool = False
    note: str = ""
    number_format: str = numbers.PLAIN  # how a numeric column written as text reads (numbers.py)


@dataclass
class FeatureSchema:
    """The inferred kind of every input column, in the order of the training data."""

    columns: list[ColumnInfo] = field(default_factory=list)

    def columns_of(self, *kinds: str) -> list[str]:
        return [c.name for c in self.columns if c.kind in kinds]

    @property
    def used(self) -> list[str]:
        return self.columns_of(*USED_KINDS)

    @property
    def dropped(self) -> list[ColumnInfo]:
        return [c for c in self.columns if c.kind not in USED_KINDS]

    def get(self, name: str) -> ColumnInfo:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls([ColumnInfo(**c) for c in data["columns"]])

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.columns:
            out[c.kind] = out.get(c.kind, 0) + 1
        return out


def _as_str(s: pd.Series) -> pd.Series:
    return s.dropna().astype(str).str.strip()


def _bool_like(values: Iterable[str]) -> bool:
    lowered = {v.lower() for v in values}
    return len(lowered) == 2 and lowered <= (_TRUE | _FALSE) and bool(lowered & _TRUE) and bool(
        lowered & _FALSE
    )


def _sample(text: pd.Series, k: int = 5000) -> pd.Series:
    """At most ``k`` values, for statistics that need not read every row."""
    return numbers.row_sample(text, k)


def _n_distinct(values: pd.Series) -> int:
    """How many distinct values (none missing). A long numeric column is counted without
    hashing: whole numbers in a range not much wider than the column by counting each
    value's occurrences (``np.bincount``: 2,000,000 in 0.01 s), other numbers on their
    sorted values (0.05-0.17 s, against 0.45 s hashed).

    Except: fractional numbers with over ``MANY_DISTINCT`` distinct values among
    ``DISTINCT_SAMPLE`` evenly spaced rows give that sample's count, a lower bound (0.001 s
    instead of a sort: at 2,000,000 rows, four such columns took 0.5 s of the time to the
    first trial). Nothing depends on such a column's exact count: it is not constant or
    two-valued, nor an identifier (those are whole numbers), and the leak check only reads
    whether it exceeds a limit (a lower bound under the limit just costs a check).

    Integers are counted as integers: as floats, ids beyond 2**53 would merge.

    Example:
        >>> _n_distinct(pd.Series([3.0, 1.0, 3.0, 7.5] * 50_000))
        3
        >>> _n_distinct(pd.Series([3.0, 1.0, 3.0, -7.0] * 50_000))
        3
        >>> _n_distinct(pd.Series(10**18 + np.arange(200_000)))  # 64-bit ids stay apart
        200000
        >>> _n_distinct(pd.Series(np.arange(200_000) * 10**12))  # too wide to count: sorted
        200000
        >>> MANY_DISTINCT < _n_distinct(pd.Series(np.arange(200_000) / 7)) < 200_000  # at least
        True
        >>> _n_distinct(pd.Series(np.tile(np.arange(900) / 7, 250)))  # few: counted exactly
        900
    """
    if len(values) > COUNT_ALL_ROWS and pd.api.types.is_numeric_dtype(values.dtype) \
            and not pd.api.types.is_bool_dtype(values.dtype):
        # the column's own numpy type (nullable Int64 too: nothing is missing here)
        a = values.to_numpy(dtype=getattr(values.dtype, "numpy_dtype", values.dtype))
        lo, hi = a.min(), a.max()
        whole = a.dtype.kind != "f" or np.array_equal(a, np.floor(a))
        if a.dtype.kind == "f" and whole and np.isfinite(hi - lo):
            lo, hi = int(lo), int(hi)
        if not isinstance(lo, float) and int(hi) - int(lo) < len(a):
            return int(np.count_nonzero(np.bincount((a - lo).astype(np.intp))))
        if not whole:
            seen = len(np.unique(a[::max(1, len(a) // DISTINCT_SAMPLE)]))
            if seen > MANY_DISTINCT:
                return seen
        a = np.sort(a)
        return int(1 + np.count_nonzero(a[1:] != a[:-1]))
    return int(values.nunique())


def _looks_datetime(text: pd.Series) -> bool:
    sample = _sample(text, 500)
    if not sample.str.contains(r"\d[-/:.]\d|\d{4}[-/]", regex=True).mean() > 0.9:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed", utc=True)
    return bool(parsed.notna().mean() > 0.9)


def infer_column(name: str, s: pd.Series) -> ColumnInfo:
    """Infer the kind of one column from its values."""
    n = len(s)
    nonnull = s.dropna()
    missing = float(1 - len(nonnull) / n) if n else 1.0
    odd = ""
    if pd.api.types.is_float_dtype(s):
        values = nonnull.to_numpy(dtype=float)
        finite = np.isfinite(values)
        n_inf, n_huge = int((~finite).sum()), int((np.abs(values[finite]) > HUGE).sum())
        nonnull = nonnull[finite]
        odd = "; ".join(([f"{n_inf} infinite value(s) read as missing"] if n_inf else [])
                        + ([f"{n_huge} value(s) beyond +/-{HUGE:g} clipped"] if n_huge else []))
    n_unique = _n_distinct(nonnull)
    info = ColumnInfo(name, "numeric", str(s.dtype), n_unique, missing, note=odd)
    if len(nonnull) == 0:
        info.kind = "empty"
        return info
    if n_unique == 1 and missing == 0:
        info.kind = "constant"
        return info
    if pd.api.types.is_bool_dtype(s):
        info.kind = "boolean"
        return info
    unique_ratio = n_unique / max(1, len(nonnull))
    if pd.api.types.is_numeric_dtype(s):
        values = nonnull.to_numpy(dtype=float)
        integer = pd.api.types.is_integer_dtype(s) or np.array_equal(values, np.floor(values))
        if integer and unique_ratio > 0.98 and n >= 20:
            consecutive = bool(np.all(np.diff(np.sort(values)) == 1))
            if _ID_NAME.search(name) or consecutive:
                info.kind = "identifier"
                info.note = "unique integer per row"
        if n_unique == 2 and info.kind == "numeric":
            info.kind = "boolean" if set(nonnull.unique()) <= {0, 1} else "numeric"
        return info
    text = _as_str(s)
    if _image_paths(s):  # see "Image columns" below
        info.kind = "image"
        return info
    if pd.api.types.is_datetime64_any_dtype(s):
        info.kind = "datetime"
        return info
    if n_unique == 2 and _bool_like(text.unique()):
        info.kind = "boolean"
        return info
    number_format, parsed, guessed = numbers.detect(text)
    # (read only for a column of numbers: its distinct values, 0.035 s at 2,000,000 rows)
    leading_zero = parsed >= MOSTLY_NUMBERS and \
        bool(pd.Series(text.unique(), dtype="string").str.match(r"^0\d+$").any())
    if parsed >= NUMERIC_SHARE and not leading_zero:
        info.kind, info.number_format = "numeric", number_format
        words = text[numbers.parse(text, number_format).isna().to_numpy()]
        notes = [f"mixed types: {len(words)} non-numeric values read as missing (e.g. "
                 f"{_examples(words)})"] if len(words) else []
        if numbers.has_units(text):
            notes.append("currency and % signs dropped, (12) read as -12")
        if guessed:
            notes.append("values like '12,345' read with the comma as thousands separator (12345); "
                         "if it is a decimal comma, write at least one value with another number of decimals")
        info.note = "; ".join(notes)
        return info
    if _looks_datetime(text):
        info.kind = "datetime"
        return info
    if parsed >= MOSTLY_NUMBERS and not leading_zero:
        info.number_format = number_format
        return _mostly_numbers(info, text, parsed)
    counts = _sample(text).value_counts(sort=False)  # each distinct value split once
    words = pd.Series(counts.index.to_numpy(dtype=object), dtype="string").str.split().str.len()
    tokens = float(np.dot(words.to_numpy(dtype=float), counts.to_numpy(dtype=float)) / counts.sum())
    if tokens >= 4 and unique_ratio > 0.3:
        info.kind = "text"
        return info
    if unique_ratio > 0.98 and n >= 50 and tokens < 2:
        info.kind = "identifier"
        info.note = "a distinct value in nearly every row"
        return info
    info.kind = "categorical"
    info.high_cardinality = n_unique > HIGH_CARDINALITY
    return info


def _mostly_numbers(info: ColumnInfo, text: pd.Series, share: float) -> ColumnInfo:
    """A column of numbers with some words: categorical (the words may mean something)."""
    words = text[numbers.parse(text, info.number_format).isna().to_numpy()]
    info.number_format = numbers.PLAIN
    info.kind, info.high_cardinality = "categorical", info.n_unique > HIGH_CARDINALITY
    info.note = (f"{share:.0%} of its values are numbers but {len(words)} are not (e.g. {_examples(words)}): "
                 "treated as categorical; make every value a number (or empty) to use it as numeric")
    return info


def _examples(values: pd.Series, k: int = 3) -> str:
    return ", ".join(repr(str(v)[:40]) for v in pd.unique(values.to_numpy())[:k])


def infer_schema(X: pd.DataFrame, overrides: Mapping[str, str] | None = None) -> FeatureSchema:
    """Infer the kind of every column of ``X``; ``overrides`` sets the kind of named columns.

    Example:
        >>> import pandas as pd
        >>> infer_schema(pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": ["x", "y", "x"]})).summary()
        {'numeric': 1, 'categorical': 1}
    """
    from automl.schema_numeric import numeric_infos

    known = numeric_infos(X)  # a wide table's number columns, at once
    schema = FeatureSchema([known[c] if c in known else infer_column(str(c), X[c])
                            for c in X.columns])
    for name, kind in (overrides or {}).items():
        if name in X.columns:
            schema.get(str(name)).kind = kind  # type: ignore[assignment]
    for fmt in (numbers.COMMA_DECIMAL, numbers.COMMA_THOUSANDS):
        names = [c.name for c in schema.columns if c.kind == "numeric" and c.number_format == fmt]
        if names:
            log.warning("read numbers written as %s in %d column(s): %s", numbers.describe(fmt),
                        len(names), ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
    return schema


def _to_bool(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return pd.to_numeric(s, errors="coerce").astype(float)
    lowered = s.astype("string").str.strip().str.lower()
    out = pd.Series(np.nan, index=s.index, dtype=float)
    out[lowered.isin(_TRUE).fillna(False).to_numpy(dtype=bool)] = 1.0
    out[lowered.isin(_FALSE).fillna(False).to_numpy(dtype=bool)] = 0.0
    return out


def clean_frame(X: pd.DataFrame, schema: FeatureSchema, *, check: bool = False,
                between: Callable[[], None] | None = None, quiet: bool = False) -> pd.DataFrame:
    """Return the used columns of ``X`` coerced to the kinds in ``schema``.

    Numbers become float (read in the column's number format; ``inf`` becomes missing),
    booleans 0/1, datetimes ``datetime64`` in UTC, categoricals and texts strings (missing
    stays missing). With ``check`` (at predict time), values of a numeric, boolean or
    datetime column that cannot be read are counted: a warning gives the count, and more
    than :data:`MAX_UNREADABLE` of a column's values is a :class:`DataError`. ``between``
    is called after each column; ``quiet``: no warnings (a part of rows cleaned before the
    whole table, whose clean reports them). Each row is cleaned on its own: the rows of a
    cleaned frame are those rows cleaned alone.
    """
    dtypes = X.dtypes  # (built anew at each access: once, not once a column)
    numbers_as_numbers = [c.name for c in schema.columns if c.kind == "numeric"
                          and pd.api.types.is_numeric_dtype(dtypes[c.name])]
    numeric = pd.DataFrame(_float_block(X, numbers_as_numbers, between), index=X.index,
                           columns=numbers_as_numbers, copy=False)
    out: dict[str, pd.Series] = {}
    unreadable: list[tuple[ColumnInfo, pd.Series, int]] = []
    for col in schema.columns:
        if col.kind not in USED_KINDS or col.name in numeric.columns:
            continue
        if between is not None:
            between()
        s = X[col.name]
        if col.kind == "numeric":
            v = _to_number(s, col, quiet)
            a = v.to_numpy(dtype=float, copy=True)  # numpy: wide frames pay per operation
            out[col.name] = pd.Series(_finite_clipped(a), index=X.index, name=col.name)
        elif col.kind == "boolean":
            v = out[col.name] = _to_bool(s)
        elif col.kind == "datetime":
            v = out[col.name] = _to_datetime(s)
        else:
            out[col.name] = _strings(s)
            continue
        if check:
            present = _present(s)
            bad = present & v.isna().to_numpy()
            if bad.any():
                unreadable.append((col, s[bad], int(present.sum())))
    if unreadable:
        _report_unreadable(unreadable)
    # the numbers stay in the one block they were written to (a 2,000,000-row table copied
    # it twice more: 1.5 s); the frame only orders the columns
    others = pd.DataFrame(out, index=X.index)  # one block per dtype
    return pd.concat([numeric, others], axis=1)[list(schema.used)]


def _float_block(X: pd.DataFrame, names: list[str],
                 between: Callable[[], None] | None = None) -> np.ndarray:
    """The numeric columns ``names`` of ``X`` as one float array, column by column (Fortran
    order: each column is one contiguous write), with infinities missing and magnitudes
    clipped at :data:`HUGE`; in place, without the temporaries of ``np.where``/``np.clip``.
    A numpy column is written as it is (numpy converts it; nothing is missing in an
    integer or bool one): asking pandas for floats with missing values as NaN took 0.15 ms
    a column more, 0.7 s on 5,000 columns."""
    block = np.empty((len(X), len(names)), dtype=float, order="F")
    for j, name in enumerate(names):
        s = X[name]
        if isinstance(s.dtype, np.dtype):
            block[:, j] = s.to_numpy()
        else:  # pandas' nullable integers, floats and booleans: missing as NaN
            block[:, j] = s.to_numpy(dtype=float, na_value=np.nan)
        if between is not None:
            between()
    return _finite_clipped(block)


def _finite_clipped(a: np.ndarray) -> np.ndarray:
    """``a`` (a float array of its own) with infinities missing and magnitudes clipped at
    :data:`HUGE`, in place."""
    inf = np.isinf(a)
    if inf.any():
        a[inf] = np.nan
    np.minimum(a, HUGE, out=a)
    np.maximum(a, -HUGE, out=a)
    return a


def _strings(s: pd.Series) -> pd.Series:
    """Stripped strings, missing kept missing, one object per distinct value (one per cell
    was 100 MB a column at 2,000,000 rows, copied again by every trial's child)."""
    codes, uniques = pd.factorize(s.astype("string"))
    again, distinct = pd.factorize(pd.Series(uniques, dtype="string").str.strip())  # ' a' = 'a'
    values = np.append(distinct.to_numpy(dtype=object)[again], np.nan)[codes]  # (-1: missing)
    return pd.Series(values, index=s.index, name=s.name, dtype=object)


def _present(s: pd.Series) -> np.ndarray:
    """Values that are there (not missing, not blank)."""
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_datetime64_any_dtype(s):
        return s.notna().to_numpy()
    text = s.astype("string").str.strip()
    return (text.notna() & (text != "")).fillna(False).to_numpy(dtype=bool)


def _to_number(s: pd.Series, col: ColumnInfo, quiet: bool = False) -> pd.Series:
    """Floats from numbers or text; text in another clear format (decimal commas) is read too."""
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return pd.Series(s.to_numpy(dtype=float, na_value=np.nan), index=s.index)
    text = s.astype("string").str.strip()
    values = numbers.parse(text, col.number_format)
    failed = (values.isna() & text.notna() & (text != "")).fillna(False).to_numpy(dtype=bool)
    if failed.any():
        other, share, _ = numbers.detect(text[failed])
        if other != col.number_format and share > 0:
            again = numbers.parse(text[failed], other)
            values[failed] = again.to_numpy()
            if not quiet:
                log.warning("column '%s': %d value(s) written as %s read as numbers", col.name,
                            int(again.notna().sum()), numbers.describe(other))
    return values


def _to_datetime(s: pd.Series) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
    return dt.dt.tz_localize(None)


def _report_unreadable(found: list[tuple[ColumnInfo, pd.Series, int]]) -> None:
    """Warn about unreadable values per column; refuse when a column has too many."""
    for col, bad, n in found:
        if len(bad) > MAX_UNREADABLE * n:
            more = f" (and {len(found) - 1} more column(s) with such values)" if len(found) > 1 else ""
            raise DataError(
                f"column '{col.name}' should hold {_WHAT[col.kind]} but {len(bad)} of {n} values are "
                f"not (e.g. {_examples(bad)}), more than {MAX_UNREADABLE:.0%}{more}; fix those values "
                "or leave them empty to mark them missing.")
    for col, bad, n in found:
        log.warning("column '%s': %d of %d values are not %s (e.g. %s); read as missing",
                    col.name, len(bad), n, _WHAT[col.kind], _examples(bad))


_WHAT = {"numeric": "numbers", "boolean": "true/false values", "datetime": "dates"}


# ---------------------------------------------------------------- Image columns
# A column of paths to existing image files is the kind "image" (read by the image
# learners; tabular learners skip it). Tables read by ``automl.images.read_input`` hold
# absolute paths; relative ones here are relative to the working directory.

def _image_paths(s: pd.Series) -> bool:
    from pathlib import Path

    from automl.images import looks_like_image_column

    return looks_like_image_column(s, Path.cwd())
