"""Validation splits: k-fold for small data, a holdout for large, the same for every trial.

Thresholds (``n`` = rows after dropping missing targets):
    ``n <= 10,000``: 5-fold cross-validation (stratified for classification; fewer folds
    when the smallest class has fewer rows, never fewer than 2);
    ``n > 10,000``: one stratified holdout of 20% (at most 50,000 validation rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from automl.contracts import Task
from automl.exceptions import DataError

log = logging.getLogger("automl")
CV_MAX_ROWS = 10_000
HOLDOUT_FRACTION = 0.2
HOLDOUT_MAX_ROWS = 50_000


@dataclass(frozen=True)
class Splits:
    kind: str  # "cv" or "holdout"
    folds: list[tuple[np.ndarray, np.ndarray]]

    @property
    def n_train_rows(self) -> int:
        return int(len(self.folds[0][0]))

    def describe(self) -> str:
        if self.kind == "cv":
            return f"{len(self.folds)}-fold cross-validation"
        return f"holdout of {len(self.folds[0][1])} rows"


def make_splits(y: np.ndarray, task: Task, seed: int = 0, cv: int | str = "auto") -> Splits:
    """Build the validation splits used by every trial of a search.

    Example:
        >>> make_splits(np.array([0, 1] * 50), Task.BINARY).describe()
        '5-fold cross-validation'
    """
    n = len(y)
    if n < 2:
        raise DataError(f"only {n} row with a target value; at least 2 rows are needed (more for a useful model).")
    strat = task.is_classification
    if cv == "auto":
        k = 5 if n <= CV_MAX_ROWS else 0
    elif cv in ("holdout", 0, "0"):
        k = 0
    else:
        k = int(cv)
    if k:
        asked = k
        k = min(k, n)
        if strat:
            counts = np.bincount(y)
            smallest = int(counts[counts > 0].min())
            if smallest < k:
                if smallest >= 2:
                    log.info("smallest class has %d rows: using %d folds", smallest, max(2, smallest))
                    k = max(2, smallest)
                else:
                    k = max(2, min(k, 5))
        if n < k or k < 2:
            raise DataError(f"{n} rows are fewer than the {k} folds needed; add rows.")
        if k < asked and n < asked:
            log.warning("only %d rows: %d-fold cross-validation instead of %d; add rows for a more "
                        "reliable estimate", n, k, asked)
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if strat and _can_stratify(y, k) \
            else KFold(k, shuffle=True, random_state=seed)
        folds = [(tr.astype(np.int64), va.astype(np.int64)) for tr, va in splitter.split(np.zeros(n), y)]
        return Splits("cv", folds)
    n_valid = min(int(round(n * HOLDOUT_FRACTION)), HOLDOUT_MAX_ROWS)
    idx = np.arange(n)
    stratify = y if strat and _can_stratify(y, 2) else None
    tr, va = train_test_split(idx, test_size=n_valid, random_state=seed, stratify=stratify)
    return Splits("holdout", [(np.sort(tr), np.sort(va))])


def _can_stratify(y: np.ndarray, k: int) -> bool:
    counts = np.bincount(y)
    return bool(counts[counts > 0].min() >= 2)
