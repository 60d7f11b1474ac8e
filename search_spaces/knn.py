"""k-nearest neighbours on standardised features; ``k`` bounded by the training rows."""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import clip


def space(info: DataInfo) -> dict[str, Any]:
    return {
        "n_neighbors": IntDistribution(1, clip(info.n_train_rows // 4, 2, 100), log=True),
        "weights": CategoricalDistribution(["uniform", "distance"]),
        "p": CategoricalDistribution([1, 2]),
    }


def default(info: DataInfo) -> dict[str, Any]:
    return {"n_neighbors": clip(10, 1, clip(info.n_train_rows // 4, 2, 100)), "weights": "distance", "p": 2}
