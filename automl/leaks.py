"""The leak check: warn about a column that alone gives away the target.

Such a column is often known only after the outcome (a refund flag for fraud, a
discharge code for a diagnosis); the warning names it so the user can drop it. A column
that is an exact copy of the target is an error earlier, in :mod:`automl.data`.

The check looks at a sample of rows and works on blocks of columns with numpy, so it
stays well under a second on 50 rows x 5,000 columns and on 300,000 rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from automl.data import Target

log = logging.getLogger("automl")

LEAK_SAMPLE_ROWS = 20_000  # rows the check looks at
BLOCK = 256  # numeric columns handled at once
PURITY = 0.999  # share of rows a column's values sort into one class each
CORRELATION = 0.999  # regression: |correlation| with the target


def warn_leaks(X: pd.DataFrame, target: Target,
               clean: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
               n_unique: Mapping[str, int] | None = None) -> None:
    """Warn about each column of the cleaned frame ``X`` that alone determines the target;
    or of the raw frame ``X``, whose rows the check looks at are cleaned with ``clean``.
    ``n_unique``: the schema's count of each column's distinct values over all rows; for a
    classification target, a number column with more values than the check reports is
    not counted again (sorting every column of 5,000 x 5,000 took 0.4 s). On a table
    larger than the sample, a column with more values over all rows than in the sample is
    so left out.

    Example:
        >>> warn_leaks(X, target)  # doctest: +SKIP
        automl: column 'refund' alone predicts the target almost perfectly: ...
    """
    y = np.asarray(target.y)
    if len(X) > LEAK_SAMPLE_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(len(X), LEAK_SAMPLE_ROWS, replace=False))
        X, y = X.iloc[rows], y[rows]
    if clean is not None:
        X = clean(X)
    numeric = [c for c, dtype in X.dtypes.items() if pd.api.types.is_numeric_dtype(dtype)]
    if target.task.is_classification:
        n_classes = max(len(target.classes or []), int(y.max()) + 1)
        for col in _pure_columns(X, y.astype(np.int64), n_classes, numeric, n_unique or {}):
            log.warning("column '%s' alone predicts the target almost perfectly: it may leak the "
                        "answer; drop it (--ignore-columns) if it is only known afterwards", col)
    else:
        for col, corr in _correlated_columns(X, y.astype(float), numeric):
            log.warning("column '%s' is almost identical to the target (correlation %.4f): it may "
                        "leak the answer; drop it if it is only known afterwards", col, corr)


def _pure_columns(X: pd.DataFrame, y: np.ndarray, n_classes: int, numeric: list[str],
                  n_unique: Mapping[str, int]) -> list[str]:
    """Columns with few distinct values, each value (missing counts as one) of nearly one class."""
    limit = min(max(50, len(X) // 2), 2 * n_classes)  # more distinct values: not reported
    numeric_set = set(numeric)
    numeric = [c for c in numeric if n_unique.get(c, 0) <= limit]
    few = [c for c in X.columns if c not in numeric_set]
    for start in range(0, len(numeric), BLOCK):  # count distinct numbers per column, vectorised
        names = numeric[start:start + BLOCK]
        block = X[names].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):  # NaN sorts last; steps into or between NaN are NaN
            steps = np.diff(np.sort(block, axis=0), axis=0)
        n_unique = 1 + ((steps != 0) & ~np.isnan(steps)).sum(axis=0)
        few += [c for c, k in zip(names, n_unique) if 1 < k <= limit]
    pure = []
    for col in few:
        present = X[col].notna().to_numpy()
        codes, uniques = pd.factorize(X[col], use_na_sentinel=False)
        n_unique = len(uniques) - int(not present.all())
        if present.mean() < 0.5 or n_unique <= 1 or n_unique > limit:
            continue
        table = np.bincount(codes * n_classes + y, minlength=len(uniques) * n_classes)
        if table.reshape(len(uniques), n_classes).max(axis=1).sum() >= PURITY * len(X):
            pure.append(col)
    return pure


def _correlated_columns(X: pd.DataFrame, y: np.ndarray, numeric: list[str]) -> list[tuple[str, float]]:
    """Numeric columns (at most half missing, more than 2 values) nearly collinear with ``y``."""
    found = []
    for start in range(0, len(numeric), BLOCK):
        corr, mostly_present = _correlations(X[numeric[start:start + BLOCK]].to_numpy(dtype=float), y)
        for k in np.flatnonzero(mostly_present & np.isfinite(corr) & (np.abs(corr) > CORRELATION)):
            col = numeric[start + k]
            if X[col].nunique() > 2:
                found.append((col, float(corr[k])))
    return found


def _correlations(block: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of each column with ``y`` over the rows where the column is present,
    and whether at most half the column is missing."""
    present = ~np.isnan(block)
    n = present.sum(axis=0)
    x = np.where(present, block, 0.0)
    yy = np.where(present, y[:, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(present, x - x.sum(axis=0) / n, 0.0)
        dy = np.where(present, yy - yy.sum(axis=0) / n, 0.0)
        corr = (dx * dy).sum(axis=0) / np.sqrt((dx**2).sum(axis=0) * (dy**2).sum(axis=0))
    return corr, present.mean(axis=0) >= 0.5
