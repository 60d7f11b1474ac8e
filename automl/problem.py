"""The problem of one search: the cleaned features, the encoded target, the metric, the
splits and the learners to try, plus the preprocessing every trial shares.

Built once by :func:`automl.engine.prepare_problem`; executors hand it to every trial
(forked children share it copy-on-write; a Ray cluster holds one copy in its object store).

**A large table is cleaned after the probe has started** (issue 12: the first result within
10% of the budget). Cleaning every row of a large table (:func:`automl.schema.clean_frame`:
1.4 s at 2,000,000 rows x 18, 1.1 s at 5,000 x 5,000) is not needed by the probe, which
fits one split on a sample. So :func:`automl.engine.prepare_problem` may leave ``X`` raw
(``raw``); the probe then runs on :meth:`Problem.first_split_part`, its own rows cleaned
alone, while this process cleans the whole table (:meth:`Problem.clean`). Cleaning is row by
row, so the part's rows are the same as those rows of the whole cleaned table, and the
probe's result is the same. Reading ``X`` while it is raw cleans it first: nothing sees the
raw frame by mistake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from automl import isolation
from automl.config import SMALL_DATA_ROWS
from automl.contracts import DataInfo, FitData
from automl.metrics import Metric
from automl.schema import clean_frame
from automl.splits import Splits

log = logging.getLogger("automl")

# a training part of more than twice this many rows is timed on a sample of this many before
# its styles are shared (affordable_styles)
SHARE_SAMPLE_ROWS = 20_000
# the sample's time scaled to all rows, times this: 20,000 rows scaled to 1,950,000 gave
# 9.6 s for the linear style's 13.5 s (sorting for medians grows faster than the rows)
SHARE_MARGIN = 1.5


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
    raw: bool = False  # X is the raw frame, cleaned by clean() (see the module's text)
    # a part of a larger problem (first_split_part): its rows there, their count and folds
    part_of: tuple[np.ndarray, int, int] | None = field(default=None, repr=False)

    def clean(self, between: Callable[[], None] | None = None) -> None:
        """Clean the raw ``X`` with the schema, once; ``between`` is called after each
        column (the controller records finished trials meanwhile)."""
        if self.raw:
            self._X = clean_frame(self._X, self.info.schema, between=between)
            self.raw = False

    def first_split_part(self, max_rows: int | None, seed: int) -> Problem:
        """The problem of a trial that fits only the first split, on the training rows
        :meth:`fit_data` would sample (``max_rows``, ``seed``): just those rows and the
        first split's validation rows, cleaned alone (quietly: the whole table's clean
        reports what it finds). :meth:`widen` makes its result one of this problem's."""
        tr, va = self.splits.folds[0]
        if max_rows is not None and max_rows < len(tr):
            tr = tr[sample_positions(self.y[tr], max_rows, seed, self.info.task.is_classification)]
        rows = np.concatenate([tr, va])
        X = self._X.iloc[rows]
        if self.raw:
            X = clean_frame(X, self.info.schema, quiet=True)
        folds = [(np.arange(len(tr)), np.arange(len(tr), len(rows)))]
        return Problem(X=X, y=self.y[rows], info=self.info, metric=self.metric,
                       splits=Splits(self.splits.kind, folds), learners=self.learners,
                       classes=self.classes, part_of=(rows, len(self.y), len(self.splits.folds)))

    def widen(self, result: dict[str, Any]) -> dict[str, Any]:
        """A result on this part as one on the whole problem: out-of-fold predictions at the
        rows' places (the others missing), the whole problem's number of folds."""
        if self.part_of is None:
            return result
        rows, n, n_folds = self.part_of
        oof = result.get("oof")
        if oof is not None:
            whole = np.full((n, *oof.shape[1:]), np.nan, dtype=oof.dtype)
            whole[rows] = oof
            result["oof"] = whole
        result["n_folds"] = n_folds
        return result

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


def _features(self: Problem) -> pd.DataFrame:
    if self.raw:
        self.clean()
    return self._X


def _set_features(self: Problem, X: pd.DataFrame) -> None:
    self._X = X  # cleaned features (the constructor sets ``raw`` after this)
    self.raw = False


# the cleaned features; a raw X is cleaned when first read (see the module's text)
Problem.X = property(_features, _set_features)  # type: ignore[assignment]


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


def preprocess_folds(problem: Problem, styles: Sequence[str], seed: int,
                     deadline: float | None = None) -> dict[int, dict[str, Any]]:
    """Fit each preprocessing style once per fold, for every trial to share. With
    ``deadline`` (``time.monotonic()``), a large table's styles are first timed on a sample
    and shared cheapest first while they are expected to end by then; the others are left
    to the trials, which fit them on their own rows (:func:`affordable_styles`)."""
    from threadpoolctl import threadpool_limits

    from automl.preprocessing import preprocess_key, text_variants

    cache: dict[int, dict[str, Any]] = {}
    limits = threadpool_limits(limits=1 if len(problem.y) < SMALL_DATA_ROWS else None)
    keys = [(style, text) for style in styles for text in text_variants(problem.info)]
    if deadline is not None:
        keys = affordable_styles(problem, keys, seed, deadline)
    for i, (tr, va) in enumerate(problem.splits.folds):
        cache[i] = {}
        for style, text in keys:
            pre = _preprocessor(problem, style, text, seed, len(tr))
            Xt = pre.fit_transform(problem.X.iloc[tr], problem.y[tr])
            Xv = pre.transform(problem.X.iloc[va])
            cache[i][preprocess_key(style, text)] = (pre, Xt, Xv)
    limits.restore_original_limits()
    return cache


def affordable_styles(problem: Problem, keys: list[tuple[str, str]], seed: int,
                      deadline: float) -> list[tuple[str, str]]:
    """The (style, text) pairs worth sharing by ``deadline``. A training part of more than
    twice :data:`SHARE_SAMPLE_ROWS` rows is fitted on a sample of that many; each pair's
    time, scaled to every fold's rows and by :data:`SHARE_MARGIN`, then decides, cheapest
    first. At 2,000,000 rows x 17 and a 60 s budget (15 s for this): ``tree`` (2 s) is
    shared and ``linear`` (13.5 s: median imputation sorts, one-hot counts strings) is not,
    where both used to run past the limit and be thrown away."""
    tr, _ = problem.splits.folds[0]
    if len(tr) <= 2 * SHARE_SAMPLE_ROWS:
        return keys
    pos = tr[sample_positions(problem.y[tr], SHARE_SAMPLE_ROWS, seed,
                              problem.info.task.is_classification)]
    X, y = problem.X.iloc[pos], problem.y[pos]
    scale = SHARE_MARGIN * sum(len(t) + len(v) for t, v in problem.splits.folds) / len(pos)
    cost = {}
    for style, text in keys:
        t0 = time.monotonic()
        _preprocessor(problem, style, text, seed, len(tr)).fit_transform(X, y)
        cost[style, text] = (time.monotonic() - t0) * scale
    chosen, at = [], time.monotonic()
    for key in sorted(keys, key=cost.__getitem__):
        if at + cost[key] <= deadline:
            chosen.append(key)
            at += cost[key]
        log.debug("shared preprocessing: %s %s (%.1fs expected, %.1fs left)", key,
                  "kept" if key in chosen else "left to the trials", cost[key],
                  deadline - time.monotonic())
    return chosen


def _preprocessor(problem: Problem, style: str, text: str, seed: int, n_rows: int) -> Any:
    from automl.preprocessing import make_preprocessor

    return make_preprocessor(problem.info.schema, style, seed=seed, n_rows=n_rows,
                             task=problem.info.task, text=text,
                             backbone=problem.info.text_backbone)
