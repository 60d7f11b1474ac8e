"""CatBoost: oblivious trees with ordered target statistics for categoricals.

Boosting rounds are found by early stopping on the validation part, as for LightGBM.
Strong on small tables with categorical columns, where its ordered boosting overfits less.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import fit_to_space


def space(info: DataInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "learning_rate": FloatDistribution(0.01, 0.3, log=True),
        "depth": IntDistribution(3, 10),
        "l2_leaf_reg": FloatDistribution(0.5, 30.0, log=True),
        "random_strength": FloatDistribution(0.1, 10.0, log=True),
        "bagging_temperature": FloatDistribution(0.0, 1.0),
    }
    if info.task.is_classification:
        out["class_weight"] = CategoricalDistribution([None, "balanced"])
    return out


def default(info: DataInfo) -> dict[str, Any]:
    """CatBoost's own defaults (depth 6, L2 3), with a learning rate for a few hundred rounds."""
    return {
        "learning_rate": 0.08, "depth": 6, "l2_leaf_reg": 3.0, "random_strength": 1.0,
        "bagging_temperature": 1.0,
        **({"class_weight": None} if info.task.is_classification else {}),
    }


def portfolio(info: DataInfo) -> list[dict[str, Any]]:
    """A slower, shallower one (small data) and a deeper, more regularised one."""
    cw = {"class_weight": None} if info.task.is_classification else {}
    configs = [
        {"learning_rate": 0.03, "depth": 4, "l2_leaf_reg": 5.0, "random_strength": 1.0,
         "bagging_temperature": 0.5, **cw},
        {"learning_rate": 0.05, "depth": 8, "l2_leaf_reg": 10.0, "random_strength": 2.0,
         "bagging_temperature": 1.0, **cw},
    ]
    return [fit_to_space(c, space(info)) for c in configs]
