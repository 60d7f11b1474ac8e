"""Image learners: a linear probe on frozen pretrained features, and fine-tuning.

The probe's default (EfficientNet-Lite0 at 224 px, logistic regression) is the cheap
first configuration: its features are computed once per run and shared by every trial.
Fine-tuning searches the backbone, input resolution, how many of the last stages to
unfreeze, learning rates of the head and of the body, augmentation strength, epochs and
the effective batch size (reached by gradient accumulation). Epochs shrink as rows grow.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl.contracts import DataInfo
from search_spaces._common import class_weight, clip

BACKBONES = ["lite0", "lite1", "lite2"]
RESOLUTIONS = [128, 160, 192, 224, 260]
PROBE_RESOLUTIONS = [192, 224, 260]  # each (backbone, resolution) costs one feature pass
ROW_EPOCH_BUDGET = 20_000  # images seen per trial (epochs x rows) at most


def max_epochs(info: DataInfo) -> int:
    return clip(ROW_EPOCH_BUDGET // max(1, info.n_train_rows), 3, 30)


def batch_sizes(info: DataInfo) -> list[int]:
    return [b for b in (8, 16, 32, 64, 128) if b <= max(8, info.n_train_rows // 2)]


def probe_space(info: DataInfo) -> dict[str, Any]:
    return {
        "backbone": CategoricalDistribution(BACKBONES),
        "resolution": CategoricalDistribution(PROBE_RESOLUTIONS),
        "C": FloatDistribution(1e-3, 10.0, log=True),
        **class_weight(info),
    }


def probe_default(info: DataInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"backbone": "lite0", "resolution": 224, "C": 0.1}
    if info.task.is_classification:
        out["class_weight"] = None
    return out


def probe_portfolio(info: DataInfo) -> list[dict[str, Any]]:
    """Tried after every learner's default: the largest backbone at its own resolution
    (its probe scored 0.967 against Lite0's 0.948 on hymenoptera: benchmarks/results/images.md)."""
    return [{**probe_default(info), "backbone": "lite2", "resolution": 260}]


def space(info: DataInfo) -> dict[str, Any]:
    return {
        "backbone": CategoricalDistribution(BACKBONES),
        "resolution": CategoricalDistribution(RESOLUTIONS),
        "unfreeze": IntDistribution(0, 12),  # trailing stages trained (0: the head only)
        "lr_head": FloatDistribution(1e-4, 3e-2, log=True),
        "lr_body": FloatDistribution(1e-5, 3e-3, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "augment": FloatDistribution(0.0, 1.0),
        "epochs": IntDistribution(1, max_epochs(info)),
        "batch_size": CategoricalDistribution(batch_sizes(info)),
        **class_weight(info),
    }


def default(info: DataInfo) -> dict[str, Any]:
    sizes = batch_sizes(info)
    out: dict[str, Any] = {
        "backbone": "lite0", "resolution": 224, "unfreeze": 3, "lr_head": 3e-3, "lr_body": 3e-4,
        "weight_decay": 1e-4, "dropout": 0.2, "augment": 0.5,
        "epochs": clip(10, 1, max_epochs(info)), "batch_size": 32 if 32 in sizes else sizes[-1],
    }
    if info.task.is_classification:
        out["class_weight"] = None
    return out
