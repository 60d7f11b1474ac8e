"""scikit-learn's HistGradientBoosting; iterations found by early stopping on validation."""

from __future__ import annotations

from typing import Any

from optuna.distributions import FloatDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import class_weight, clip, fit_to_space


def space(info: DataInfo) -> dict[str, Any]:
    n = info.n_train_rows
    return {
        "learning_rate": FloatDistribution(0.01, 0.3, log=True),
        "max_leaf_nodes": IntDistribution(4, clip(n // 8, 8, 256), log=True),
        "min_samples_leaf": IntDistribution(2, clip(n // 20, 4, 200), log=True),
        "l2_regularization": FloatDistribution(1e-8, 10.0, log=True),
        "max_features": FloatDistribution(0.3, 1.0),
        **class_weight(info),
    }


def default(info: DataInfo) -> dict[str, Any]:
    n = info.n_train_rows
    return {
        "learning_rate": 0.1, "max_leaf_nodes": clip(31, 4, clip(n // 8, 8, 256)),
        "min_samples_leaf": clip(20, 2, clip(n // 20, 4, 200)), "l2_regularization": 1e-8,
        "max_features": 1.0,
        **({"class_weight": None} if info.task.is_classification else {}),
    }


def portfolio(info: DataInfo) -> list[dict[str, Any]]:
    cw = {"class_weight": None} if info.task.is_classification else {}
    configs = [{"learning_rate": 0.05, "max_leaf_nodes": 31, "min_samples_leaf": 20,
                "l2_regularization": 1.0, "max_features": 0.8, **cw}]
    return [fit_to_space(c, space(info)) for c in configs]
