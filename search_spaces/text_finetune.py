"""The fine-tuned text learner: how much of the sentence encoder to train, and how.

``unfreeze_layers = 0`` is the cheap default: a linear head on the frozen (cached)
embeddings, trained in seconds. More unfrozen layers fine-tune the encoder's top blocks
with their own, lower learning rate; the effective batch size is reached by gradient
accumulation over smaller physical batches.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import clip

MAX_UNFROZEN = 6  # MiniLM-L6 has 6 blocks; a deeper encoder unfreezes at most its top 6


def space(info: DataInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "unfreeze_layers": IntDistribution(0, MAX_UNFROZEN),
        "head_lr": FloatDistribution(1e-4, 1e-1, log=True),
        "body_lr": FloatDistribution(5e-6, 2e-4, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "epochs": IntDistribution(2, clip(200_000 // max(1, info.n_train_rows), 4, 40)),
        "batch_size": CategoricalDistribution([8, 16, 32]),
        "effective_batch_size": CategoricalDistribution([16, 32, 64, 128]),
        "max_length": CategoricalDistribution([64, 128, 256]),
    }
    if info.task.is_classification:
        out["class_weight"] = CategoricalDistribution([None, "balanced"])
    return out


def default(info: DataInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "unfreeze_layers": 0, "head_lr": 1e-2, "body_lr": 3e-5, "weight_decay": 1e-4,
        "epochs": clip(30, 2, clip(200_000 // max(1, info.n_train_rows), 4, 40)),
        "batch_size": 32, "effective_batch_size": 32, "max_length": 128,
    }
    if info.task.is_classification:
        out["class_weight"] = "balanced"
    return out


def portfolio(info: DataInfo) -> list[dict[str, Any]]:
    """Fine-tuning the top two blocks: the next configuration, where the budget allows."""
    return [{**default(info), "unfreeze_layers": 2, "epochs": clip(3, 2, space(info)["epochs"].high),
             "head_lr": 1e-3, "body_lr": 5e-5, "batch_size": 16}]
