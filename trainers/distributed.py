"""One trial trained data-parallel over several devices (Lightning DDP), and the rank
gating its callbacks need there.

A trial given several GPUs (``--gpus-per-trial 2``: the executor makes them visible and
says how many in ``AUTOML_TRIAL_DEVICES``; or ``FitData.extra['devices']``) trains with
``strategy="ddp_fork"``: Lightning forks one process per device from the trial's process
(which must not have initialised CUDA; see ``PYTORCH_NVML_BASED_CUDA_CHECK``) and splits
every batch between them. On the CPU the same runs over gloo with
``FitData.extra['devices']`` processes (the tests do).

Under DDP each rank validates its share of the rows, so the pruning callback first
gathers every rank's outputs (:func:`gather_rows`); only rank 0 reports to the Optuna
trial, and its answer is broadcast so that all ranks stop together
(:func:`report_from_rank_zero`). The processes that trained end with the fit: the process
that called ``fit`` gets rank 0's final weights and ``callback_metrics`` only, so
:class:`RankHooks` puts the best epoch's weights into the model before they are collected,
and :func:`outcome` reads the best epoch, the epochs run and a pruning decision back
from those metrics (raising ``optuna.TrialPruned`` there); :func:`fit` raises a rank's
``TrialFailed`` again, with its reason.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from automl.contracts import FitData, Reporter
from automl.exceptions import TrialFailed

PRUNED_STEP, BEST_EPOCH, EPOCHS_RUN = "dist_pruned_step", "dist_best_epoch", "dist_epochs_run"


def trial_devices(data: FitData) -> int:
    """How many devices this trial trains on: 1 unless it was given several
    (``FitData.extra['devices']``, or on a GPU the count its executor put in
    ``AUTOML_TRIAL_DEVICES`` beside ``CUDA_VISIBLE_DEVICES``)."""
    given = data.extra.get("devices")
    if given:
        return max(1, int(given))
    if data.accelerator != "gpu":
        return 1
    from automl.executors import TRIAL_DEVICES_ENV

    try:
        return max(1, int(os.environ.get(TRIAL_DEVICES_ENV) or 1))
    except ValueError:
        return 1


def strategy(devices: int) -> str:
    """Lightning's strategy for ``devices`` (forked ranks: no re-run of the main script)."""
    return "ddp_fork" if devices > 1 else "auto"


def gather_rows(trainer: Any, pl_module: Any, rows: np.ndarray, n: int) -> np.ndarray:
    """Every rank's validation outputs, in the loader's row order (one rank: ``rows``).

    Lightning's distributed sampler gives rank ``r`` of ``W`` the rows ``r, r + W, ...``,
    the last ones padded by repeating the first rows: interleave, then cut to ``n``.
    """
    if trainer.world_size == 1:
        return rows
    import torch

    local = torch.from_numpy(np.ascontiguousarray(rows)).to(pl_module.device)
    every = trainer.strategy.all_gather(local)  # (W, rows per rank, ...)
    return every.transpose(0, 1).reshape(-1, *rows.shape[1:])[:n].cpu().numpy()


def any_rank(trainer: Any, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on one (e.g. a deadline passed)."""
    if trainer.world_size == 1:
        return flag
    return bool(trainer.strategy.reduce_boolean_decision(bool(flag), all=False))


def report_from_rank_zero(trainer: Any, reporter: Reporter, step: int, value: float) -> None:
    """Report ``value`` to the trial once per step: from rank 0 only under DDP, with the
    pruner's answer broadcast so that every rank stops after this epoch when it says so.

    With one process it is ``reporter.report`` (``optuna.TrialPruned`` propagates)."""
    if trainer.world_size == 1:
        reporter.report(step, value)
        return
    import optuna
    import torch

    pruned = False
    if trainer.global_rank == 0:
        try:
            reporter.report(step, value)
        except optuna.TrialPruned:
            pruned = True
    if trainer.strategy.broadcast(pruned, src=0):
        trainer.should_stop = True
        trainer.callback_metrics[PRUNED_STEP] = torch.tensor(float(step))


def _rank_hooks_class() -> type:
    import lightning as L

    class RankHooks(L.Callback):
        """Under DDP, in every rank: die with the trial's process (the executor kills that
        one at the hard deadline); at the end of training, rank 0's model takes the best
        epoch's weights (kept by ``best``, a ``BestWeights`` callback) and the metrics
        carry its number and the epochs run, for :func:`outcome`."""

        def __init__(self, best: Any) -> None:
            self.best = best

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if trainer.world_size > 1:  # a rank forked by Lightning from the trial's process
                from automl.isolation import die_with_parent

                die_with_parent()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            import torch

            if trainer.world_size == 1:
                return
            trainer.callback_metrics[EPOCHS_RUN] = torch.tensor(float(trainer.current_epoch))
            if self.best is not None and self.best.state is not None:
                pl_module.net.load_state_dict(self.best.state)
                trainer.callback_metrics[BEST_EPOCH] = torch.tensor(float(self.best.epoch))

    return RankHooks


def rank_hooks(best: Any) -> Any:
    """The :class:`RankHooks` callback for a ``BestWeights`` callback (or None: a refit)."""
    return _rank_hooks_class()(best)


def fit(trainer: Any, module: Any, train_loader: Any, val_loader: Any) -> None:
    """``trainer.fit``, with a failed rank's ``TrialFailed`` raised again here by its reason."""
    try:
        trainer.fit(module, train_loader, val_loader)
    except Exception as exc:  # torch.multiprocessing's ProcessRaisedException: only its text
        if trainer.world_size == 1 or "TrialFailed" not in str(exc):
            raise
        reason = re.findall(r"TrialFailed: (.+)", str(exc))
        raise TrialFailed(reason[-1].strip() if reason else str(exc).strip().splitlines()[-1]) from None


def outcome(trainer: Any, best: Any) -> tuple[int | None, int]:
    """After ``fit``: (the best epoch or None, the epochs run), read where they are.

    Raises ``optuna.TrialPruned`` when rank 0's pruner stopped a data-parallel fit."""
    if trainer.world_size == 1:
        epoch = int(best.epoch) if best is not None and best.state is not None else None
        return epoch, int(trainer.current_epoch)
    metrics = trainer.callback_metrics
    if PRUNED_STEP in metrics:
        import optuna

        raise optuna.TrialPruned(f"pruned at step {int(metrics[PRUNED_STEP])}")
    epoch = int(metrics[BEST_EPOCH]) if BEST_EPOCH in metrics else None
    return epoch, int(metrics[EPOCHS_RUN]) if EPOCHS_RUN in metrics else 0
