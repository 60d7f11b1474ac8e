"""Metrics: one table of names, directions and functions on encoded targets, and
:func:`predict_scores`, which turns an estimator's output into what they take.

Classification predictions are probability matrices ``(n, n_classes)``; the label
metrics take their arg-max. Regression predictions are 1-d arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from automl.contracts import Task
from automl.exceptions import ConfigError

EPS = 1e-15


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    tasks: frozenset[Task]
    fn: Callable[[np.ndarray, np.ndarray, int, np.ndarray | None], float]

    @property
    def direction(self) -> str:
        return "maximize" if self.greater_is_better else "minimize"

    def __call__(self, y_true: np.ndarray, pred: np.ndarray, n_classes: int = 0,
                 sample_weight: np.ndarray | None = None) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(pred), n_classes, sample_weight))

    def worst(self) -> float:
        return -np.inf if self.greater_is_better else np.inf

    def better(self, a: float, b: float) -> bool:
        return a > b if self.greater_is_better else a < b


def _labels(proba: np.ndarray) -> np.ndarray:
    return np.argmax(proba, axis=1)


def _roc_auc(y, p, k, w):
    if k == 2:
        if len(np.unique(y)) < 2:
            return 0.5
        return skm.roc_auc_score(y, p[:, 1], sample_weight=w)
    present = np.unique(y)
    if len(present) < 2:
        return 0.5
    p = np.clip(p[:, present], EPS, None)
    p = p / p.sum(axis=1, keepdims=True)
    if len(present) == 2:
        return skm.roc_auc_score(y == present[1], p[:, 1], sample_weight=w)
    return skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=present, sample_weight=w)


def _log_loss(y, p, k, w):
    p = np.clip(p, EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
    return skm.log_loss(y, p, labels=list(range(k)), sample_weight=w)


def _f1(y, p, k, w):
    avg = "binary" if k == 2 else "macro"
    return skm.f1_score(y, _labels(p), average=avg, sample_weight=w, zero_division=0)


def _avg_precision(y, p, k, w):
    if k == 2:
        return skm.average_precision_score(y, p[:, 1], sample_weight=w)
    onehot = np.eye(k)[y]
    cols = onehot.sum(axis=0) > 0
    return skm.average_precision_score(onehot[:, cols], p[:, cols], average="macro", sample_weight=w)


_CLF = frozenset({Task.BINARY, Task.MULTICLASS})
_REG = frozenset({Task.REGRESSION})

METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("roc_auc", True, _CLF, _roc_auc),
        Metric("log_loss", False, _CLF, _log_loss),
        Metric("accuracy", True, _CLF, lambda y, p, k, w: skm.accuracy_score(y, _labels(p), sample_weight=w)),
        Metric("balanced_accuracy", True, _CLF,
               lambda y, p, k, w: skm.balanced_accuracy_score(y, _labels(p), sample_weight=w)),
        Metric("f1", True, _CLF, _f1),
        Metric("average_precision", True, _CLF, _avg_precision),
        Metric("rmse", False, _REG, lambda y, p, k, w: skm.root_mean_squared_error(y, p, sample_weight=w)),
        Metric("mae", False, _REG, lambda y, p, k, w: skm.mean_absolute_error(y, p, sample_weight=w)),
        Metric("r2", True, _REG, lambda y, p, k, w: skm.r2_score(y, p, sample_weight=w)),
    ]
}

DEFAULT_METRIC = {Task.BINARY: "roc_auc", Task.MULTICLASS: "log_loss", Task.REGRESSION: "rmse"}


def get_metric(name: str, task: Task) -> Metric:
    """Look up a metric by name (``auto`` picks the task's default).

    Example:
        >>> get_metric("auto", Task.BINARY).name
        'roc_auc'
    """
    if name in ("auto", None):
        name = DEFAULT_METRIC[task]
    if name not in METRICS:
        raise ConfigError(f"unknown metric '{name}'; choose one of: {', '.join(METRICS)}.")
    metric = METRICS[name]
    if task not in metric.tasks:
        ok = [m for m, v in METRICS.items() if task in v.tasks]
        raise ConfigError(f"metric '{name}' does not apply to a {task.value} task; "
                          f"choose one of: {', '.join(ok)}.")
    return metric


def balance_report(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """Balance-aware metrics shown beside the objective on the leaderboard."""
    labels = _labels(proba)
    out = {
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, labels)),
        "macro_f1": float(skm.f1_score(y, labels, average="macro", zero_division=0)),
    }
    recalls = skm.recall_score(y, labels, average=None, labels=list(range(n_classes)), zero_division=0)
    out["min_class_recall"] = float(np.min(recalls))
    return out


def predict_scores(estimator: Any, X: Any, task: Task, n_classes: int) -> np.ndarray:
    """Probabilities ``(n, n_classes)`` for classification, values ``(n,)`` for regression.

    A model trained on a part of the data that lacked some classes gets zero
    probability columns for them, so every prediction has all ``n_classes`` columns.
    """
    if not task.is_classification:
        return np.asarray(estimator.predict(X), dtype=float).ravel()
    proba = np.asarray(estimator.predict_proba(X), dtype=float)
    return all_class_columns(proba, getattr(estimator, "classes_", None), n_classes)


def all_class_columns(proba: np.ndarray, classes: Any, n_classes: int) -> np.ndarray:
    """``proba``'s columns (for ``classes``, default ``0..k-1``) placed among all
    ``n_classes`` columns; classes the model never saw get zero."""
    proba = np.asarray(proba, dtype=float)
    classes = np.asarray(np.arange(proba.shape[1]) if classes is None else classes)
    if proba.shape[1] == n_classes and np.array_equal(classes, np.arange(n_classes)):
        return proba
    full = np.zeros((proba.shape[0], n_classes))
    full[:, classes.astype(int)] = proba
    return full
