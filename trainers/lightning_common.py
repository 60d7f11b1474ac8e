"""Training practice shared by the Lightning learners (MLP, image and text fine-tuning).

Class-weighted losses, the warmup/cosine schedule, row datasets, the choice of precision,
a quiet Lightning ``Trainer`` (no logger, checkpoints, progress bar or summary: the
per-epoch curve a trial reports to the pruner is its record) and :class:`LossWatch`, the
training-loss and deadline checks every Lightning module of ours runs. Nothing here
imports torch or lightning at module import; the callbacks that subclass Lightning's are
in :mod:`trainers.lightning_callbacks`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from automl.contracts import DataInfo
from automl.exceptions import ConfigError, TrialFailed, require

# Make torch.cuda.is_available() use NVML in the parent process, so it does not
# initialise CUDA there and forked trial processes can still use the GPU.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

EFFECTIVE_BETA = 0.999  # Cui et al. 2019
GRAD_CLIP_NORM = 1.0
CLASS_WEIGHTS = (None, "balanced", "effective")


def import_lightning() -> None:
    """Import torch and lightning (and our callbacks) now, in the process that forks the
    trials, so each trial does not pay seconds of imports (importing starts no thread)."""
    importlib.import_module("trainers.lightning_callbacks")


# ---------------------------------------------------------------- class imbalance

def class_weights(counts: Any, mode: str | None, beta: float = EFFECTIVE_BETA) -> np.ndarray:
    """Per-class loss weights: ``None`` (ones), ``balanced`` (n / (k n_c)) or ``effective``.

    ``effective`` weighs a class by the inverse of its effective number of samples
    ``(1 - beta^n_c) / (1 - beta)`` (Cui et al. 2019), normalised to sum to the number of
    classes present. Absent classes get weight 1 (they never appear in the loss).

    Example:
        >>> class_weights([90, 10], "balanced").tolist()
        [0.5555555555555556, 5.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    if mode is None or not present.any():
        return weights
    if mode == "balanced":
        weights[present] = counts[present].sum() / (present.sum() * counts[present])
    elif mode == "effective":
        effective = (1.0 - np.power(beta, counts[present])) / (1.0 - beta)
        inv = 1.0 / effective
        weights[present] = inv * present.sum() / inv.sum()
    else:
        raise ConfigError(f"mlp class_weight got {mode!r}; choose one of: {CLASS_WEIGHTS}.")
    return weights


def row_weights(y: np.ndarray, info: DataInfo, mode: str | None,
                sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Each training row's weight in the loss: its class weight times its sample weight."""
    w = np.ones(len(y))
    if info.task.is_classification:
        counts = np.bincount(y.astype(np.int64), minlength=info.n_classes)
        w = class_weights(counts, mode)[y.astype(np.int64)]
    if sample_weight is not None:
        w = w * np.asarray(sample_weight, dtype=np.float64)
    return w.astype(np.float32)


def weighted_loss(out: Any, y: Any, w: Any, classification: bool) -> Any:
    """Weighted mean of per-row cross-entropy (or squared error): sum(w l) / sum(w).

    With ``w`` the class weight of each row's class this equals
    ``torch.nn.functional.cross_entropy(out, y, weight=class_weight)``.
    """
    F = require("torch", "deep").nn.functional
    if classification:
        per_row = F.cross_entropy(out.float(), y, reduction="none")
    else:
        per_row = F.mse_loss(out[:, 0].float(), y, reduction="none")
    return (per_row * w).sum() / w.sum().clamp_min(1e-12)


# ---------------------------------------------------------------- schedule and data

def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer: Any, warmup: int, total: int) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry: :func:`warmup_cosine` stepped per optimizer step."""
    import functools

    torch = require("torch", "deep")
    schedule = functools.partial(warmup_cosine, warmup=warmup, total=total)
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), "interval": "step"}


class Rows:
    """Tensors indexed together; ``__getitems__`` fetches a whole batch in one indexing."""

    def __init__(self, *tensors: Any) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, idx: list[int]) -> tuple[Any, ...]:
        index = require("torch", "deep").as_tensor(idx)
        return tuple(t[index] for t in self.tensors)


def whole_batch(items: Any) -> Any:
    """The ``collate_fn`` for :class:`Rows`: the batch is already stacked."""
    return items


# ---------------------------------------------------------------- the Lightning run

class LossWatch:
    """Mixin for our LightningModules: the epoch's training loss summed on the device and
    checked once per epoch (no sync per step on a GPU), and a stop at the deadline.

    The module calls :meth:`track_loss` in ``training_step``; :meth:`check_loss` (at each
    epoch's end, and by the pruning callback) raises :class:`TrialFailed` when the sum is
    not finite. A module overriding these hooks calls ``super()``.
    """

    deadline: float
    diverged_hint = "lower the learning rate"
    _loss_sum: Any = None

    def track_loss(self, loss: Any) -> None:
        self._loss_sum = loss.detach() if self._loss_sum is None else self._loss_sum + loss.detach()

    def on_train_epoch_start(self) -> None:
        self._loss_sum = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        from trainers.distributed import any_rank

        # under DDP every rank stops together, when any one of them is past the deadline
        if any_rank(self.trainer, time.monotonic() > self.deadline):  # type: ignore[attr-defined]
            self.trainer.should_stop = True  # type: ignore[attr-defined]

    def on_train_epoch_end(self) -> None:
        self.check_loss(self.current_epoch + 1)  # type: ignore[attr-defined]

    def check_loss(self, epoch: int) -> None:
        torch = require("torch", "deep")
        if self._loss_sum is not None and not bool(torch.isfinite(self._loss_sum)):
            raise TrialFailed(f"the training loss became {float(self._loss_sum)} in epoch {epoch} "
                              f"(diverged: {self.diverged_hint})")


def precision(accelerator: str) -> str:
    """bf16 mixed precision on a GPU that has it (else 16-bit mixed), 32-bit on the CPU."""
    if accelerator != "gpu":
        return "32-true"
    torch = require("torch", "deep")
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info logs and warnings silenced for the duration."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def training_root(prefix: str) -> Iterator[str]:
    """A quiet Lightning session and a temporary folder for the Trainer's root."""
    with quiet_lightning(), tempfile.TemporaryDirectory(prefix=prefix) as root:
        yield root


def lightning_trainer(root: str, accelerator: str, *, max_epochs: int, callbacks: list[Any],
                      validate: bool, extra: str = "deep", **options: Any) -> Any:
    """A ``lightning.Trainer`` with our common settings: the accelerator's device and
    precision, gradient clipping by norm, nothing logged or checkpointed or shown, and
    validation only when ``validate``. ``options`` add to or override these (an option
    given as None keeps the default: ``precision=data.extra.get("precision")``)."""
    L = require("lightning", extra)
    gpu = accelerator == "gpu"
    settings: dict[str, Any] = dict(
        accelerator="gpu" if gpu else "cpu", devices=1, precision=precision(accelerator),
        max_epochs=max_epochs, gradient_clip_val=GRAD_CLIP_NORM, gradient_clip_algorithm="norm",
        deterministic=not gpu,  # cheap on the CPU; on a GPU it would need cuBLAS settings
        callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1.0 if validate else 0,
        default_root_dir=root,
    )
    settings.update({k: v for k, v in options.items() if v is not None})
    return L.Trainer(**settings)
