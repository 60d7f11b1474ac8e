"""The MLP's LightningModule: weighted loss, AdamW groups and the warmup/cosine schedule.

Imports lightning: import it from a fit, not at the trainer's import.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from trainers.lightning_common import LossWatch, warmup_cosine_scheduler, weighted_loss
from trainers.mlp import network


class TabularModule(LossWatch, L.LightningModule):
    """Trains ``net`` (see :mod:`trainers.mlp.network`) on batches ``(x_num, x_cat, y, w)``;
    validation batches are ``(x_num, x_cat)`` and their logits are kept for the metric."""

    def __init__(self, net: Any, classification: bool, lr: float, weight_decay: float,
                 warmup: int, total: int, deadline: float) -> None:
        super().__init__()
        self.net = net
        self.classification = classification
        self.lr, self.weight_decay, self.warmup, self.total = lr, weight_decay, warmup, total
        self.deadline = deadline
        self._valid: list[Any] = []

    def forward(self, x_num: Any, x_cat: Any) -> Any:
        return network.forward(self.net, x_num, x_cat)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x_num, x_cat, y, w = batch
        loss = weighted_loss(self(x_num, x_cat), y, w, self.classification)
        self.track_loss(loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._valid.append(self(batch[0], batch[1]).float())

    def validation_logits(self) -> np.ndarray:
        out = torch.cat(self._valid).cpu().numpy()
        self._valid.clear()
        return out

    def configure_optimizers(self) -> Any:
        params = list(self.net.parameters())
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=self.lr)
        return {"optimizer": opt, "lr_scheduler": warmup_cosine_scheduler(opt, self.warmup, self.total)}
