"""LightGBM: boosting rounds are found by early stopping on the validation part."""

from __future__ import annotations

from typing import Any

from optuna.distributions import FloatDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import class_weight, clip, fit_to_space


def space(info: DataInfo) -> dict[str, Any]:
    n = info.n_train_rows
    return {
        "learning_rate": FloatDistribution(0.01, 0.3, log=True),
        "num_leaves": IntDistribution(4, clip(n // 8, 8, 512), log=True),
        "min_child_samples": IntDistribution(2, clip(n // 20, 4, 200), log=True),
        "colsample_bytree": FloatDistribution(0.3, 1.0),
        "subsample": FloatDistribution(0.5, 1.0),
        "reg_alpha": FloatDistribution(1e-8, 10.0, log=True),
        "reg_lambda": FloatDistribution(1e-8, 10.0, log=True),
        **class_weight(info),
    }


def default(info: DataInfo) -> dict[str, Any]:
    return {
        "learning_rate": 0.1, "num_leaves": clip(31, 4, clip(info.n_train_rows // 8, 8, 512)),
        "min_child_samples": clip(20, 2, clip(info.n_train_rows // 20, 4, 200)),
        "colsample_bytree": 1.0, "subsample": 1.0, "reg_alpha": 1e-8, "reg_lambda": 1e-8,
        **({"class_weight": None} if info.task.is_classification else {}),
    }


def portfolio(info: DataInfo) -> list[dict[str, Any]]:
    """Strong configurations known from practice, tried after every learner's default:
    a slower, subsampled one; a large-leaf one for big data; a small, regularised one."""
    cw = {"class_weight": None} if info.task.is_classification else {}
    configs = [
        {"learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20, "colsample_bytree": 0.8,
         "subsample": 0.8, "reg_alpha": 1e-8, "reg_lambda": 1.0, **cw},
        {"learning_rate": 0.03, "num_leaves": 128, "min_child_samples": 5, "colsample_bytree": 0.9,
         "subsample": 1.0, "reg_alpha": 1e-8, "reg_lambda": 1e-8, **cw},
        {"learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 10, "colsample_bytree": 0.5,
         "subsample": 0.8, "reg_alpha": 0.1, "reg_lambda": 3.0, **cw},
    ]
    return [fit_to_space(c, space(info)) for c in configs]
