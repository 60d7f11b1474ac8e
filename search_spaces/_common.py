"""Helpers shared by the search spaces."""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution

from automl.contracts import DataInfo


def class_weight(info: DataInfo) -> dict[str, CategoricalDistribution]:
    """Class weighting searched for classifiers: none or balanced."""
    if not info.task.is_classification:
        return {}
    return {"class_weight": CategoricalDistribution([None, "balanced"])}


def clip(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
