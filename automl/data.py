"""Reading tables and preparing the target: file sniffing, task inference, checks.

Hopeless input fails here, before any search, with a one-line :class:`DataError`.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from automl.contracts import Task
from automl.exceptions import ConfigError, DataError

log = logging.getLogger("automl")

NA_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "#N/A"]
PARQUET_SUFFIXES = {".parquet", ".pq"}
MAX_CLASSES = 200


def _sniff_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start > len(head) - 4:  # a multi-byte character cut by the sample's end
            return "utf-8"
        return "cp1252" if _decodes(head, "cp1252") else "latin-1"


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
        return True
    except UnicodeDecodeError:
        return False


def _sniff_delimiter(sample: str) -> str:
    lines = [ln for ln in sample.splitlines()[:50] if ln.strip()]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        counts = {d: lines[0].count(d) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (delimiter and encoding sniffed) or Parquet file into a frame.

    Raises:
        DataError: the file is missing, a directory, empty, header-only or unreadable.

    Example:
        >>> df = read_table("examples/penguins.csv")  # doctest: +SKIP
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"file not found: '{p}'; check the path (relative paths start at {Path.cwd()}).")
    if p.is_dir():
        raise DataError(f"'{p}' is a directory, not a file; give the path of a CSV or Parquet file.")
    if p.stat().st_size == 0:
        raise DataError(f"'{p}' is empty (0 bytes); give a CSV file with a header row and data rows.")
    if p.suffix.lower() in PARQUET_SUFFIXES:
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises many types
            raise DataError(f"cannot read Parquet file '{p}': {exc}") from None
    else:
        df = _read_csv(p)
    if df.shape[1] == 0:
        raise DataError(f"'{p}' has no columns; give a CSV file with a header row.")
    if len(df) == 0:
        raise DataError(f"'{p}' has a header but no data rows; add rows below the header.")
    df.columns = [str(c) for c in df.columns]
    return df


def _read_csv(p: Path) -> pd.DataFrame:
    with p.open("rb") as fh:
        head = fh.read(1 << 16)
    encoding = _sniff_encoding(head)
    if b"\x00" in head and encoding != "utf-16":
        hint = " (a spreadsheet? save it as CSV)" if p.suffix.lower() in (".xlsx", ".xls", ".ods") else ""
        raise DataError(f"'{p}' is not a text file{hint}; give a CSV or Parquet file.")
    sample = head.decode(encoding, errors="replace")
    sep = _sniff_delimiter(sample)
    try:
        header = next(csv.reader(io.StringIO(sample), delimiter=sep), [])
    except csv.Error as exc:
        raise DataError(f"cannot parse '{p}' as CSV (delimiter {sep!r}, {encoding}): {exc}") from None
    header = [h.strip() for h in header]
    try:
        df = pd.read_csv(
            p, sep=sep, encoding=encoding, na_values=NA_VALUES, keep_default_na=False,
            low_memory=False, skipinitialspace=True,
        )
    except UnicodeDecodeError:
        df = pd.read_csv(p, sep=sep, encoding="latin-1", na_values=NA_VALUES,
                         keep_default_na=False, low_memory=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot parse '{p}' as CSV (delimiter {sep!r}, {encoding}): {msg}") from None
    dupes = sorted({h for h in header if header.count(h) > 1 and h})
    if dupes:
        log.warning("duplicate column names %s: later copies were renamed (e.g. '%s.1')",
                    dupes, dupes[0])
    df.columns = [str(c).strip() for c in df.columns]
    return df


def suggest_names(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    lowered = [c for c in choices if c.lower() == name.lower() and c not in close]
    close = lowered + close
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    shown = ", ".join(choices[:10]) + (" ..." if len(choices) > 10 else "")
    return f"the columns are: {shown}"


def _show(value: object) -> str:
    """A value for a message: ``3.5``, not ``np.float64(3.5)``."""
    return repr(value.item() if hasattr(value, "item") else value)


@dataclass
class Target:
    """The prepared target: encoded values, task and class labels."""

    y: np.ndarray
    task: Task
    classes: list | None  # original labels, index = encoded value
    dropped_rows: int


def infer_task(y: pd.Series) -> Task:
    """Guess the task from the target's values.

    Non-numeric or boolean targets are classification; integer targets with at most 10
    distinct values too; everything else is regression.
    """
    values = y.dropna()
    n_unique = values.nunique()
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        numeric = pd.to_numeric(values.astype(str), errors="coerce")
        if numeric.notna().all() and numeric.nunique() > 10 and (numeric % 1 != 0).any():
            return Task.REGRESSION
        return Task.BINARY if n_unique <= 2 else Task.MULTICLASS
    integer = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    if n_unique <= 2:
        return Task.BINARY
    if integer and n_unique <= 10:
        return Task.MULTICLASS
    return Task.REGRESSION


def prepare_target(df: pd.DataFrame, target: str, task: str | Task = "auto") -> tuple[pd.DataFrame, Target]:
    """Split ``df`` into features and an encoded target; drop rows whose target is missing."""
    if target not in df.columns:
        raise DataError(f"target column '{target}' not found; {suggest_names(target, list(df.columns))}")
    y_raw = df[target]
    if y_raw.dtype == object:
        y_raw = y_raw.astype("string").str.strip().astype(object).where(y_raw.notna(), np.nan)
    if pd.api.types.is_float_dtype(y_raw):
        y_raw = y_raw.where(np.isfinite(y_raw.to_numpy(dtype=float)))
    missing = y_raw.isna().to_numpy()
    if missing.all():
        raise DataError(f"target column '{target}' has no values (all {len(df)} rows are missing); "
                        "pick another --target or fill it in.")
    X = df.drop(columns=[target])
    if missing.any():
        log.warning("dropped %d rows whose target '%s' is missing (%d rows left)",
                    int(missing.sum()), target, int((~missing).sum()))
        X = X.loc[~missing]
        y_raw = y_raw[~missing]
    X = X.reset_index(drop=True)
    y_raw = y_raw.reset_index(drop=True)
    if X.shape[1] == 0:
        raise DataError(f"there are no feature columns besides the target '{target}'; add feature columns.")
    if len(y_raw) < 2:
        raise DataError(f"only {len(y_raw)} row has a value of the target '{target}'; at least 2 rows "
                        "are needed (many more for a useful model); add rows.")
    resolved = infer_task(y_raw) if str(task) in ("auto", "None") else Task(str(task))
    n_unique = y_raw.nunique()
    if resolved.is_classification:
        if n_unique < 2:
            raise DataError(f"target '{target}' has a single class ({_show(y_raw.iloc[0])}); "
                            "classification needs at least two classes.")
        if resolved is Task.BINARY and n_unique > 2:
            raise ConfigError(f"--task binary but target '{target}' has {n_unique} classes; "
                              "use --task multiclass or auto.")
        if n_unique > MAX_CLASSES:
            raise DataError(f"target '{target}' has {n_unique} classes (more than {MAX_CLASSES}); "
                            "use --task regression if it is a number.")
        if resolved is Task.MULTICLASS and n_unique == 2:
            resolved = Task.BINARY
        classes = sorted(y_raw.unique(), key=lambda v: (str(type(v)), v))
        index = {c: i for i, c in enumerate(classes)}
        y = y_raw.map(index).to_numpy(dtype=np.int64)
        counts = np.bincount(y, minlength=len(classes))
        singles = [str(classes[i]) for i in np.flatnonzero(counts < 2)]
        if singles and resolved is Task.BINARY:
            raise DataError(f"target '{target}' has a class with a single row ({_show(singles[0])}, 1 of "
                            f"{len(y)} rows); a binary model needs at least 2 rows of each class to "
                            "train and validate; add rows of that class or check the target.")
        if singles:
            log.warning("classes with a single row: %s; they cannot be validated and are rarely "
                        "predicted — add rows or merge them", ", ".join(singles[:10]))
        classes = [c.item() if hasattr(c, "item") else c for c in classes]
        return X, Target(y, resolved, classes, int(missing.sum()))
    y_num = pd.to_numeric(y_raw, errors="coerce")
    bad = y_num.isna().to_numpy()
    if bad.all():
        raise DataError(f"--task regression but target '{target}' is not numeric "
                        f"(e.g. {_show(y_raw.iloc[0])}); use --task auto or a numeric target.")
    if bad.any():
        log.warning("dropped %d rows whose target '%s' is not a number", int(bad.sum()), target)
        X = X.loc[~bad].reset_index(drop=True)
        y_num = y_num[~bad]
    return X, Target(y_num.to_numpy(dtype=float), resolved, None, int(missing.sum() + bad.sum()))
