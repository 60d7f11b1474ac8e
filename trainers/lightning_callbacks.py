"""Lightning callbacks shared by the MLP, image and text learners.

:class:`PruningCallback` computes the trial's own metric on the validation part each
epoch and reports it to the pruner (Optuna's intermediate values are the learning curve);
:class:`BestWeights` keeps the best epoch's weights for early stopping. This module
imports lightning: import it lazily, from a fit (see ``lightning_common.import_lightning``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import EarlyStopping

from automl.contracts import FitData, Reporter
from automl.exceptions import TrialFailed
from trainers.distributed import gather_rows, outcome, report_from_rank_zero


class PruningCallback(L.Callback):
    """Each epoch: the trial's metric on the validation part, reported to the pruner.

    The module must have ``check_loss(epoch)`` and ``validation_logits()`` (the logits of
    the epoch's validation pass, in row order); ``to_scores`` turns those into what the
    metric takes. A non-finite loss or metric fails the trial; ``optuna.TrialPruned``
    raised by the reporter propagates (the trial is pruned).
    """

    def __init__(self, reporter: Reporter, data: FitData, to_scores: Callable[[np.ndarray], np.ndarray]) -> None:
        self.reporter, self.data, self.to_scores = reporter, data, to_scores

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        pl_module.check_loss(epoch)
        # under DDP each rank validated a share of the rows: every rank's, in row order
        pred = self.to_scores(gather_rows(trainer, pl_module, pl_module.validation_logits(),
                                          len(self.data.y_valid)))
        value = self.data.metric(self.data.y_valid, pred, self.data.info.n_classes)
        if not np.isfinite(value):
            raise TrialFailed(f"the validation {self.data.metric.name} became {value} in epoch {epoch}")
        pl_module.log("val_metric", value)
        # optuna.TrialPruned propagates (under DDP: rank 0 reports, all ranks stop)
        report_from_rank_zero(trainer, self.reporter, epoch, value)


class BestWeights(L.Callback):
    """Keeps the weights (of ``pl_module.net``, on the CPU) and number of the best epoch
    on the validation metric."""

    def __init__(self, greater_is_better: bool) -> None:
        self.sign = 1.0 if greater_is_better else -1.0
        self.best: float | None = None
        self.epoch = 0
        self.state: dict[str, Any] | None = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        value = trainer.callback_metrics.get("val_metric")
        if trainer.sanity_checking or value is None:
            return
        value = self.sign * float(value)
        if self.best is None or value > self.best:
            self.best, self.epoch = value, trainer.current_epoch + 1
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.net.state_dict().items()}


def validation_callbacks(reporter: Reporter, data: FitData, to_scores: Callable[[np.ndarray], np.ndarray],
                         patience: int) -> tuple[list[Any], BestWeights]:
    """A trial's callbacks: pruning reports, best weights, and early stopping on the
    validation metric after ``patience`` epochs without improvement."""
    best = BestWeights(data.metric.greater_is_better)
    stop = EarlyStopping(monitor="val_metric", mode="max" if data.metric.greater_is_better else "min",
                         patience=patience, check_finite=False)
    return [PruningCallback(reporter, data, to_scores), best, stop], best


def keep_best(best: BestWeights | None, net: Any, trainer: Any, data: FitData) -> int | None:
    """After training: load the best epoch's weights into ``net`` and return the epoch
    count a refit trains (None for a refit). Under DDP the best weights are already in
    ``net`` (rank 0 loaded them) and the numbers come from the metrics; raises
    ``optuna.TrialPruned`` when rank 0's pruner stopped the fit (``distributed.outcome``)."""
    best_epoch, epochs_run = outcome(trainer, best)
    if best_epoch is not None:
        if best is not None and best.state is not None and trainer.world_size == 1:
            net.load_state_dict(best.state)
        return best_epoch
    return max(1, epochs_run) if data.X_valid is not None else None
