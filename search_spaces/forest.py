"""Random forest and extra trees (shared space; trees are added in stages for pruning)."""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import class_weight, clip, fit_to_space


def space(info: DataInfo) -> dict[str, Any]:
    n = info.n_train_rows
    return {
        "n_estimators": IntDistribution(50, clip(n, 100, 500), log=True),
        "max_features": FloatDistribution(0.1, 1.0),
        "min_samples_leaf": IntDistribution(1, clip(n // 50, 2, 50), log=True),
        "criterion": CategoricalDistribution(
            ["gini", "entropy"] if info.task.is_classification else ["squared_error"]),
        **class_weight(info),
    }


def default(info: DataInfo) -> dict[str, Any]:
    return {
        "n_estimators": clip(100, 50, clip(info.n_train_rows, 100, 500)),
        "max_features": 0.5 if not info.task.is_classification else 0.3,
        "min_samples_leaf": 1,
        "criterion": "gini" if info.task.is_classification else "squared_error",
        **({"class_weight": None} if info.task.is_classification else {}),
    }


def portfolio(info: DataInfo) -> list[dict[str, Any]]:
    """More trees with all features (the classic extra-trees setting), and a smoother forest."""
    crit = "gini" if info.task.is_classification else "squared_error"
    cw = {"class_weight": None} if info.task.is_classification else {}
    configs = [
        {"n_estimators": 300, "max_features": 1.0 if not info.task.is_classification else 0.5,
         "min_samples_leaf": 1, "criterion": crit, **cw},
        {"n_estimators": 300, "max_features": 0.3, "min_samples_leaf": 3,
         "criterion": "entropy" if info.task.is_classification else crit, **cw},
    ]
    return [fit_to_space(c, space(info)) for c in configs]
