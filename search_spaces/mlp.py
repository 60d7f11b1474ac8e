"""Tabular MLP (PyTorch Lightning): architecture, optimiser and class-imbalance options.

Bounds scale with the rows a trial trains on: wider nets and larger batches only when
there are rows to fill them, more epochs on small data (an epoch is a handful of steps
there) and fewer on large data. The default is a small, fast, strong net.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import clip

# Rows seen per trial (epochs x rows) at most, so large data gets fewer epochs.
ROW_EPOCH_BUDGET = 2_000_000
IMBALANCED = 3.0  # majority/minority ratio from which a balanced batch sampler is searched


def max_epochs(info: DataInfo) -> int:
    return clip(ROW_EPOCH_BUDGET // max(1, info.n_train_rows), 10, 200)


def max_batch_size(info: DataInfo) -> int:
    return clip(info.n_train_rows // 4, 32, 2048)


def max_width(info: DataInfo) -> int:
    return clip(info.n_train_rows, 64, 512)


def space(info: DataInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "depth": IntDistribution(1, 4),
        "width": IntDistribution(16, max_width(info), log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "norm": CategoricalDistribution(["batch", "layer"]),
        "learning_rate": FloatDistribution(1e-4, 3e-2, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "batch_size": IntDistribution(16, max_batch_size(info), log=True),
        "epochs": IntDistribution(5, max_epochs(info), log=True),
    }
    if info.task.is_classification:
        out["class_weight"] = CategoricalDistribution([None, "balanced", "effective"])
        if info.imbalance_ratio >= IMBALANCED:
            out["balanced_sampler"] = CategoricalDistribution([False, True])
    return out


def default(info: DataInfo) -> dict[str, Any]:
    n = info.n_train_rows
    out: dict[str, Any] = {
        "depth": 2, "width": clip(128, 16, max_width(info)), "dropout": 0.1, "norm": "batch",
        "learning_rate": 3e-3, "weight_decay": 1e-4,
        "batch_size": clip(n // 16, 32, min(512, max_batch_size(info))),
        "epochs": clip(20, 5, max_epochs(info)),
    }
    if info.task.is_classification:
        out["class_weight"] = None
        if info.imbalance_ratio >= IMBALANCED:
            out["balanced_sampler"] = False
    return out
