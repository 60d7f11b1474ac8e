"""Preparing the target: task inference, label cleaning, checks.

Hopeless input fails here, before any search, with a one-line :class:`DataError`.
Reading files lives in :mod:`automl.reading` (``read_table`` is re-exported here).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from automl import numbers
from automl.contracts import Task
from automl.exceptions import ConfigError, DataError
from automl.reading import NA_VALUES, read_table

__all__ = ["NA_VALUES", "MAX_CLASSES", "Target", "infer_task", "prepare_target", "read_table",
           "suggest_names"]

log = logging.getLogger("automl")

MAX_CLASSES = 200


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
    """Split ``df`` into features and an encoded target.

    Rows whose target is missing are dropped; text labels are trimmed; in multiclass
    problems, rows of classes with a single row are dropped (with a warning); a column
    that is a copy of the target is an error.
    """
    target = target_name(df, target)
    y_raw = _clean_labels(df[target])
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
    _refuse_copies(X, y_raw, target)
    resolved = infer_task(y_raw) if str(task) in ("auto", "None") else Task(str(task))
    if resolved.is_classification:
        return _classification(X, y_raw, target, resolved, int(missing.sum()))
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


def target_name(df: pd.DataFrame, target: str) -> str:
    """The target's column: exactly as given, or equal after trimming spaces."""
    if target in df.columns:
        return target
    trimmed = [c for c in df.columns if str(c).strip() == str(target).strip()]
    if len(trimmed) == 1:
        return str(trimmed[0])
    names = [str(c) for c in df.columns]
    numeric_names = pd.to_numeric(pd.Series(names).str.replace(r"\.\d+$", "", regex=True), errors="coerce")
    no_header = " (the first row looks like data: add a header row)" if numeric_names.notna().mean() > 0.5 else ""
    raise DataError(f"target column '{target}' not found{no_header}; {suggest_names(target, names)}")


def _clean_labels(y: pd.Series) -> pd.Series:
    """Trim text labels (any string dtype: object, ``str``, ``string``); blank ones are missing;
    infinite numbers are missing."""
    if pd.api.types.is_float_dtype(y):
        return y.where(np.isfinite(y.to_numpy(dtype=float)))
    if pd.api.types.is_string_dtype(y) or y.dtype == object:  # numbers written with commas?
        text = y.dropna().astype(str).str.strip()
        fmt, share, _ = numbers.detect(text)
        if fmt != numbers.PLAIN and share == 1.0:
            log.warning("read the target's values as numbers written as %s", numbers.describe(fmt))
            values = numbers.parse(y.astype("string"), fmt)
            return values.where(np.isfinite(values.to_numpy(dtype=float)))
    if pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y) or \
            isinstance(y.dtype, pd.CategoricalDtype) or pd.api.types.is_datetime64_any_dtype(y):
        return y
    if y.dtype == object and pd.api.types.infer_dtype(y, skipna=True) != "string":
        return y  # mixed objects: left as they are
    text = y.astype("string").str.strip()
    return text.astype(object).where(text.notna() & (text != ""), np.nan)


def _refuse_copies(X: pd.DataFrame, y: pd.Series, target: str) -> None:
    """A feature equal to the target in every row (under any name) is an error."""
    head = min(len(y), 20)
    numeric = [c for c, dtype in X.dtypes.items() if pd.api.types.is_numeric_dtype(dtype)]
    y_num = pd.to_numeric(y.iloc[:head], errors="coerce").to_numpy(dtype=float)
    numeric_set = set(numeric)
    candidates = [c for c in X.columns if c not in numeric_set]
    if numeric and not np.isnan(y_num).any():  # numbers: all columns at once, on the first rows
        first = X[numeric].iloc[:head].to_numpy(dtype=float)
        candidates += [c for c, same in zip(numeric, (first == y_num[:, None]).all(axis=0)) if same]
    for col in candidates:
        if _same_values(X[col].iloc[:head], y.iloc[:head]) and _same_values(X[col], y):
            raise DataError(f"column '{col}' is a copy of the target '{target}' (the same value in every "
                            f"row): a model would read the answer from it; drop it (--ignore-columns "
                            f"'{col}') or choose the right --target.")


def _same_values(a: pd.Series, b: pd.Series) -> bool:
    if a.isna().any():
        return False
    na, nb = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
    if na.notna().all() and nb.notna().all():
        return bool(np.array_equal(na.to_numpy(dtype=float), nb.to_numpy(dtype=float)))
    sa = a.astype(str).str.strip().to_numpy()
    return bool(np.array_equal(sa, b.astype(str).str.strip().to_numpy()))


def _classification(X: pd.DataFrame, y_raw: pd.Series, target: str, task: Task,
                    n_missing: int) -> tuple[pd.DataFrame, Target]:
    counts = y_raw.value_counts()
    if len(counts) < 2:
        raise DataError(f"target '{target}' has a single class ({_show(y_raw.iloc[0])}); "
                        "classification needs at least two classes.")
    if task is Task.BINARY and len(counts) > 2:
        raise ConfigError(f"--task binary but target '{target}' has {len(counts)} classes; "
                          "use --task multiclass or auto.")
    if len(counts) > MAX_CLASSES:
        raise DataError(f"target '{target}' has {len(counts)} classes (more than {MAX_CLASSES}); "
                        "use --task regression if it is a number.")
    singles = counts.index[counts.to_numpy() < 2].tolist()
    if singles and len(counts) == 2:
        raise DataError(f"target '{target}' has a class with a single row ({_show(singles[0])}, 1 of "
                        f"{len(y_raw)} rows); a binary model needs at least 2 rows of each class to "
                        "train and validate; add rows of that class or check the target.")
    if singles:
        if len(counts) - len(singles) < 2:
            raise DataError(f"target '{target}' has only one class with more than one row; every other "
                            f"class has a single row ({', '.join(map(str, singles[:5]))}); add rows.")
        keep = ~y_raw.isin(singles).to_numpy()
        log.warning("dropped %d row(s) of class(es) with a single row: %s; a class needs at least 2 "
                    "rows to be learned and validated (add rows to keep it)", len(singles),
                    ", ".join(str(s) for s in singles[:10]) + (" ..." if len(singles) > 10 else ""))
        X, y_raw = X.loc[keep].reset_index(drop=True), y_raw[keep].reset_index(drop=True)
        n_missing += len(singles)
    if task is Task.MULTICLASS and y_raw.nunique() == 2:
        task = Task.BINARY
    classes = sorted(y_raw.unique(), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    y = y_raw.map(index).to_numpy(dtype=np.int64)
    classes = [c.item() if hasattr(c, "item") else c for c in classes]
    return X, Target(y, task, classes, n_missing)
