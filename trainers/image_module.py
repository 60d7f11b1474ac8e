"""The image network's LightningModule: partial unfreezing, two learning rates, the
schedule, and an early failure when a trial's fit cannot end before its deadline.

Imports lightning: import it from a fit, not at the trainer's import.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import numpy as np
import torch

from automl.exceptions import TrialFailed
from trainers.image_backbone import body_modules, forward
from trainers.lightning_common import LossWatch, warmup_cosine_scheduler, weighted_loss

SPEED_CHECK_BATCHES = 3  # micro-batches timed before the first estimate of a fit's duration


class ImageModule(LossWatch, L.LightningModule):
    """Trains the last ``unfreeze`` stages of the backbone and the head on batches
    ``(images, y, w)``; frozen stages stay in evaluation mode."""

    diverged_hint = "lower the learning rates"

    def __init__(self, net: Any, unfreeze: int, classification: bool, lr_head: float, lr_body: float,
                 weight_decay: float, warmup: int, total: int, deadline: float,
                 checkpointing: bool) -> None:
        super().__init__()
        self.net, self.classification = net, classification
        stages = body_modules(net["backbone"])
        k = max(0, min(int(unfreeze), len(stages)))
        self.frozen, self.trained = stages[:len(stages) - k], stages[len(stages) - k:]
        for p in net["backbone"].parameters():
            p.requires_grad_(False)
        for stage in self.trained:
            for p in stage.parameters():
                p.requires_grad_(True)
        self.lr_head, self.lr_body, self.weight_decay = lr_head, lr_body, weight_decay
        self.warmup, self.total, self.deadline = warmup, total, deadline
        self.checkpointing = checkpointing
        self.fail_if_slow = False  # set for a trial's fit (not a refit): see on_train_epoch_end
        self._epoch_start = time.monotonic()
        self._valid: list[Any] = []

    def train(self, mode: bool = True) -> Any:
        super().train(mode)
        for stage in self.frozen:  # frozen stages keep their pretrained batch-norm statistics
            stage.eval()
        return self

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._epoch_start = time.monotonic()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y, w = batch
        loss = weighted_loss(forward(self.net, x, self.checkpointing), y, w, self.classification)
        self.track_loss(loss)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        n_batches = int(self.trainer.num_training_batches)
        if self.current_epoch == 0 and batch_idx + 1 == min(SPEED_CHECK_BATCHES, n_batches):
            per_batch = (time.monotonic() - self._epoch_start) / (batch_idx + 1)
            self.check_time(per_batch * (n_batches * self.trainer.max_epochs - batch_idx - 1))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # the loss check
        if self.current_epoch == 0:  # now with the validation pass measured too
            self.check_time((time.monotonic() - self._epoch_start) * (self.trainer.max_epochs - 1))

    def check_time(self, need: float) -> None:
        """Fail a trial's fit early when the rest of its epochs cannot end before the
        deadline, giving the time back to cheaper trials instead of timing out."""
        left = self.deadline - time.monotonic()
        if self.fail_if_slow and need > left:
            raise TrialFailed(f"fine-tuning needs about {need:.0f} s more for this split but "
                              f"{max(0.0, left):.0f} s are left (a larger --time-budget, "
                              "fewer epochs or a GPU)")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._valid.append(forward(self.net, batch[0]).float())

    def validation_logits(self) -> np.ndarray:
        """This rank's validation logits, in its rows' order (the pruning callback gathers
        every rank's under DDP: ``trainers.distributed.gather_rows``)."""
        out = torch.cat(self._valid)
        self._valid.clear()
        return out.cpu().numpy()

    def configure_optimizers(self) -> Any:
        body = [p for stage in self.trained for p in stage.parameters()]
        head = list(self.net["head"].parameters())
        groups = [{"params": [p for p in ps if p.ndim >= wd_dim], "lr": lr, "weight_decay": wd}
                  for ps, lr in ((head, self.lr_head), (body, self.lr_body))
                  for wd_dim, wd in ((2, self.weight_decay), (0, 0.0))]
        for g in groups[1::2]:  # biases and norms: no decay
            g["params"] = [p for p in g["params"] if p.ndim < 2]
        opt = torch.optim.AdamW([g for g in groups if g["params"]])
        return {"optimizer": opt, "lr_scheduler": warmup_cosine_scheduler(opt, self.warmup, self.total)}
