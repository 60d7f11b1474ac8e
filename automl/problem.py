"""The problem of one search: the cleaned features, the encoded target, the metric, the
splits and the learners to try, plus the preprocessing every trial shares.

Built once by :func:`automl.engine.prepare_problem`; executors hand it to every trial
(forked children share it copy-on-write; a Ray cluster holds one copy in its object store).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from automl import isolation
from automl.config import SMALL_DATA_ROWS
from automl.contracts import DataInfo, FitData
from automl.metrics import Metric
from automl.splits import Splits


@dataclass
class Problem:
    """The prepared data of one search: cleaned features, encoded target, splits."""

    X: pd.DataFrame
    y: np.ndarray
    info: DataInfo
    metric: Metric
    splits: Splits
    learners: list[str]
    classes: list | None = None
    # fold index -> style -> (fitted preprocessor, transformed training part, validation part);
    # shared by every trial, since preprocessing depends only on the fold and the style
    pre_cache: dict[int, dict[str, tuple[Any, Any, Any]]] = field(default_factory=dict)

    def fit_data(self, fold: int | None, *, seed: int, n_threads: int, deadline: float,
                 accelerator: str = "cpu", n_iterations: int | None = None,
                 max_rows: int | None = None) -> FitData:
        """The training job of split ``fold`` (its training and validation parts and the
        shared preprocessing fitted on it), or with ``fold=None`` of all rows (a refit, no
        validation part); the one place a :class:`FitData` is built from a problem.
        ``max_rows``: train on a seeded sample of the training part (the validation part
        stays whole; see :mod:`automl.fidelity`)."""
        common = dict(info=self.info, metric=self.metric, seed=seed,
                      n_threads=isolation.openmp_threads(n_threads),
                      deadline=deadline, accelerator=accelerator, n_iterations=n_iterations)
        if fold is None:
            return FitData(X_train=self.X, y_train=self.y, X_valid=None, y_valid=None, **common)
        tr, va = self.splits.folds[fold]
        shared = self.pre_cache.get(fold, {})
        if max_rows is not None and max_rows < len(tr):
            pos = sample_positions(self.y[tr], max_rows, seed + fold, self.info.task.is_classification)
            tr = tr[pos]
            shared = {key: (pre, take_rows(Xt, pos), Xv) for key, (pre, Xt, Xv) in shared.items()}
        return FitData(X_train=self.X.iloc[tr], y_train=self.y[tr], X_valid=self.X.iloc[va],
                       y_valid=self.y[va], preprocessed=shared, **common)


def sample_positions(y: np.ndarray, n: int, seed: int, classification: bool) -> np.ndarray:
    """Sorted positions of a seeded sample of about ``n`` of ``y``'s rows; for
    classification, every class keeps its share and at least two rows (or all it has).

    Example:
        >>> y = np.array([0] * 90 + [1] * 10)
        >>> pos = sample_positions(y, 20, seed=0, classification=True)
        >>> len(pos), int(y[pos].sum())
        (20, 2)
    """
    rng = np.random.default_rng(seed)
    if not classification:
        return np.sort(rng.choice(len(y), size=n, replace=False))
    picks = []
    for cls in np.unique(y):
        where = np.flatnonzero(y == cls)
        k = min(len(where), max(2, int(round(n * len(where) / len(y)))))
        picks.append(rng.choice(where, size=k, replace=False))
    return np.sort(np.concatenate(picks))


def take_rows(X: Any, pos: np.ndarray) -> Any:
    """Rows ``pos`` of a frame, an array or a sparse matrix."""
    return X.iloc[pos] if hasattr(X, "iloc") else X[pos]


def preprocess_folds(problem: Problem, styles: Sequence[str], seed: int) -> dict[int, dict[str, Any]]:
    """Fit each preprocessing style once per fold, for every trial to share."""
    from threadpoolctl import threadpool_limits

    from automl.preprocessing import make_preprocessor, preprocess_key, text_variants

    cache: dict[int, dict[str, Any]] = {}
    limits = threadpool_limits(limits=1 if len(problem.y) < SMALL_DATA_ROWS else None)
    for i, (tr, va) in enumerate(problem.splits.folds):
        cache[i] = {}
        for style in styles:
            for text in text_variants(problem.info):
                pre = make_preprocessor(problem.info.schema, style, seed=seed,
                                        n_rows=len(tr), task=problem.info.task, text=text,
                                        backbone=problem.info.text_backbone)
                Xt = pre.fit_transform(problem.X.iloc[tr], problem.y[tr])
                Xv = pre.transform(problem.X.iloc[va])
                cache[i][preprocess_key(style, text)] = (pre, Xt, Xv)
    limits.restore_original_limits()
    return cache
