"""Linear models: logistic regression (classification), ridge and elastic net (regression)."""

from __future__ import annotations

from typing import Any

from optuna.distributions import FloatDistribution

from automl.contracts import DataInfo
from search_spaces._common import class_weight


def logistic_space(info: DataInfo) -> dict[str, Any]:
    return {"C": FloatDistribution(1e-4, 1e3, log=True), **class_weight(info)}


def logistic_default(info: DataInfo) -> dict[str, Any]:
    return {"C": 1.0, "class_weight": None}


def ridge_space(info: DataInfo) -> dict[str, Any]:
    return {"alpha": FloatDistribution(1e-4, 1e4, log=True)}


def ridge_default(info: DataInfo) -> dict[str, Any]:
    return {"alpha": 1.0}


def elasticnet_space(info: DataInfo) -> dict[str, Any]:
    return {"alpha": FloatDistribution(1e-5, 10.0, log=True), "l1_ratio": FloatDistribution(0.01, 1.0)}


def elasticnet_default(info: DataInfo) -> dict[str, Any]:
    return {"alpha": 1e-3, "l1_ratio": 0.5}


def logistic_portfolio(info: DataInfo) -> list[dict[str, Any]]:
    return [{"C": 0.1, "class_weight": None}, {"C": 10.0, "class_weight": None}]


def ridge_portfolio(info: DataInfo) -> list[dict[str, Any]]:
    return [{"alpha": 10.0}, {"alpha": 0.1}]
