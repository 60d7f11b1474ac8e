"""Greedy ensemble selection (Caruana et al., 2004) over out-of-fold predictions.

Starting from the best single trial, repeatedly add (with replacement) the trial whose
out-of-fold predictions most improve the ensemble's validation metric; the weights are
how often each trial was picked. The result is used only when it beats the best single
trial on the same pooled validation predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from automl.metrics import Metric


@dataclass
class Selection:
    trials: list[int]  # trial numbers
    weights: list[float]
    score: float
    single_score: float

    @property
    def improves(self) -> bool:
        return len(self.trials) > 1


def caruana(oof: dict[int, np.ndarray], y: np.ndarray, metric: Metric, n_classes: int,
            rounds: int = 25, max_members: int = 8, folds: np.ndarray | None = None) -> Selection:
    """Select weights over ``oof`` (trial number -> predictions, NaN where not validated).

    With ``folds`` (the validation fold of each row), a score is the mean of the per-fold
    metrics, exactly as a trial's value is, so ensemble and trial scores compare directly.

    Example:
        >>> from automl.metrics import METRICS
        >>> y = np.array([0., 1., 2., 3.])
        >>> sel = caruana({0: y + 1, 1: y - 1}, y, METRICS["rmse"], 0)
        >>> sel.score < sel.single_score
        True
    """
    numbers = list(oof)
    if not numbers:
        raise ValueError("no out-of-fold predictions to select from")
    preds = [np.asarray(oof[n], dtype=np.float64) for n in numbers]
    mask = np.ones(len(y), dtype=bool)
    for p in preds:
        mask &= ~np.isnan(p).reshape(len(y), -1).any(axis=1)
    y_m = y[mask]
    preds = [p[mask] for p in preds]
    groups = [np.ones(len(y_m), dtype=bool)]
    if folds is not None:
        f = np.asarray(folds)[mask]
        groups = [f == g for g in np.unique(f)]

    def score(p: np.ndarray) -> float:
        return float(np.mean([metric(y_m[g], p[g], n_classes) for g in groups]))

    singles = [score(p) for p in preds]
    order = sorted(range(len(numbers)), key=lambda i: singles[i], reverse=metric.greater_is_better)
    best_i = order[0]
    counts = np.zeros(len(numbers))
    counts[best_i] = 1
    total = preds[best_i].copy()
    best_score = singles[best_i]
    for _ in range(rounds - 1):
        chosen_members = int((counts > 0).sum())
        candidates = range(len(numbers)) if chosen_members < max_members else np.flatnonzero(counts)
        n = counts.sum()
        trial_scores = [(score((total + preds[i]) / (n + 1)), i) for i in candidates]
        s, i = (max if metric.greater_is_better else min)(trial_scores)
        if not metric.better(s, best_score) and not np.isclose(s, best_score):
            break
        counts[i] += 1
        total += preds[i]
        best_score = s
    chosen = np.flatnonzero(counts)
    return Selection(trials=[numbers[i] for i in chosen],
                     weights=[float(counts[i] / counts.sum()) for i in chosen],
                     score=float(best_score), single_score=float(singles[best_i]))


def blend_score(oof: dict[int, np.ndarray], weights: dict[int, float], y: np.ndarray, metric: Metric,
                n_classes: int, folds: np.ndarray | None = None) -> float:
    """The validation score of a fixed blend of ``oof`` (trial number -> out-of-fold
    predictions) with ``weights``, scored as :func:`caruana` scores: on the rows every
    member was validated on, the mean of the per-fold metrics.

    Example:
        >>> from automl.metrics import METRICS
        >>> y = np.array([0., 1., 2., 3.])
        >>> blend_score({0: y + 1, 1: y - 1}, {0: 1.0, 1: 1.0}, y, METRICS["rmse"], 0)
        0.0
    """
    numbers = list(weights)
    total = sum(float(weights[n]) for n in numbers)
    blend = sum(float(weights[n]) * np.asarray(oof[n], dtype=np.float64) for n in numbers) / total
    mask = ~np.isnan(np.asarray(blend).reshape(len(y), -1)).any(axis=1)
    if not mask.any():
        return float("nan")
    groups = [mask]
    if folds is not None:
        f = np.asarray(folds)
        groups = [mask & (f == g) for g in np.unique(f[mask])]
    return float(np.mean([metric(y[g], blend[g], n_classes) for g in groups]))


def wins_on_its_rows(own: np.ndarray, oof: dict[int, np.ndarray], weights: dict[int, float],
                     y: np.ndarray, metric: Metric, n_classes: int, *, resamples: int = 100,
                     share: float = 0.95, max_rows: int = 20_000, seed: int = 0) -> bool:
    """Whether ``own`` (a trial's out-of-fold predictions, NaN on the rows it was not
    validated on: a trial stopped after some folds) beats the blend of ``oof`` with
    ``weights`` on the rows it was validated on, in at least ``share`` of ``resamples``
    bootstrap resamples of those rows (at most ``max_rows`` of them, drawn once). Its value
    and the blend's score come from different rows, and one fold can be lucky: this
    compares them on the same rows, and only a clear win counts.

    Example:
        >>> from automl.metrics import METRICS
        >>> y = np.arange(40.0)
        >>> own = np.where(y < 20, y + 0.1, np.nan)  # validated on half the rows
        >>> wins_on_its_rows(own, {1: y + 3}, {1: 1.0}, y, METRICS["rmse"], 0)
        True
        >>> wins_on_its_rows(own, {1: y - 0.1}, {1: 1.0}, y, METRICS["rmse"], 0)
        False
    """
    n = len(y)
    covered = np.flatnonzero(~np.isnan(np.asarray(own, dtype=np.float64).reshape(n, -1)).any(axis=1))
    total = sum(float(w) for w in weights.values())
    blend = sum(float(w) * np.asarray(oof[k], dtype=np.float64) for k, w in weights.items()) / total
    covered = covered[~np.isnan(np.asarray(blend).reshape(n, -1)[covered]).any(axis=1)]
    if len(covered) < 2:
        return False
    rng = np.random.default_rng(seed)
    if len(covered) > max_rows:
        covered = rng.choice(covered, max_rows, replace=False)
    wins = 0
    for _ in range(resamples):
        rows = rng.choice(covered, len(covered))
        mine, theirs = metric(y[rows], own[rows], n_classes), metric(y[rows], blend[rows], n_classes)
        wins += bool(metric.better(mine, theirs))
    return wins >= share * resamples


class FoldBag:
    """The models a trial fitted on its cross-validation folds, averaged (bagging).

    With k-fold validation each ensemble member can be its k fold models instead of a
    refit on all rows: the ensemble weights were chosen on exactly these models'
    out-of-fold predictions, the average of k models has less variance than one refit,
    and no refit time is spent after the search.

    Example:
        >>> from sklearn.dummy import DummyRegressor
        >>> from automl.contracts import Task
        >>> X, y = np.zeros((4, 1)), np.array([1.0, 2.0, 3.0, 4.0])
        >>> bag = FoldBag([DummyRegressor().fit(X[:2], y[:2]), DummyRegressor().fit(X[2:], y[2:])],
        ...               Task.REGRESSION, 0)
        >>> bag.predict(X[:1])
        array([2.5])
    """

    def __init__(self, models: list, task: Any, n_classes: int) -> None:
        self.models = list(models)
        self.task = str(getattr(task, "value", task))  # a plain string persists anywhere
        self.n_classes = int(n_classes)
        if n_classes:
            self.classes_ = np.arange(n_classes)

    def _mean(self, X: Any) -> np.ndarray:
        from automl.contracts import Task
        from automl.metrics import predict_scores

        total = None
        for model in self.models:
            pred = predict_scores(model, X, Task(self.task), self.n_classes)
            total = pred if total is None else total + pred
        assert total is not None, "a FoldBag holds at least one model"
        return total / len(self.models)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._mean(X)

    def predict(self, X: Any) -> np.ndarray:
        scores = self._mean(X)
        return scores.argmax(axis=1) if self.n_classes else scores
