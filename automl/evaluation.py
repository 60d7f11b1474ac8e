"""Turning a fitted estimator's output into the arrays the metrics take."""

from __future__ import annotations

from typing import Any

import numpy as np

from automl.contracts import Task


def predict_scores(estimator: Any, X: Any, task: Task, n_classes: int) -> np.ndarray:
    """Probabilities ``(n, n_classes)`` for classification, values ``(n,)`` for regression.

    A model trained on a part of the data that lacked some classes gets zero
    probability columns for them, so every prediction has all ``n_classes`` columns.
    """
    if not task.is_classification:
        return np.asarray(estimator.predict(X), dtype=float).ravel()
    proba = np.asarray(estimator.predict_proba(X), dtype=float)
    classes = np.asarray(getattr(estimator, "classes_", np.arange(proba.shape[1])))
    if proba.shape[1] == n_classes and np.array_equal(classes, np.arange(n_classes)):
        return proba
    full = np.zeros((proba.shape[0], n_classes))
    full[:, classes.astype(int)] = proba
    return full
