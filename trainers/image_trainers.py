"""Image learners on pretrained EfficientNet-Lite: a linear probe and Lightning fine-tuning.

``image_probe`` (the cheap default, queued first): pooled features of the frozen backbone,
computed once per run and cached (see :mod:`trainers.image_features`), standardised,
then logistic regression (ridge for regression); the fitted linear model becomes the
network's head, so the saved model is one network that reads image files.

``image``: fine-tuning with Lightning. The last ``unfreeze`` stages of the backbone and a
new head are trained (frozen stages keep their batch-norm statistics) with AdamW, one
learning rate for the head and one for the body, linear warmup then cosine decay,
gradient clipping, gradient accumulation up to the searched effective batch size,
optional gradient checkpointing (``params['checkpointing']`` or
``FitData.extra['checkpointing']``), augmentation (:mod:`trainers.image_augment`), early
stopping on the trial's metric (the best epoch's weights are kept), per-epoch pruning,
bf16 mixed precision on a GPU, data-parallel over ``FitData.extra['devices']`` GPUs, and
seeds. A non-finite loss fails the trial with that reason.
Class imbalance: class-weighted loss (probe: ``class_weight`` of scikit-learn).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge

from automl.contracts import DataInfo, FitData, Reporter, Task
from automl.exceptions import TrialFailed, require
from search_spaces import image as image_space
from trainers.image_backbone import (
    ImageEstimator,
    body_modules,
    build_network,
    check_dependencies,
    forward,
    torch,
)
from trainers.lightning_common import (
    LossWatch,
    import_lightning,
    lightning_trainer,
    row_weights,
    training_root,
    warmup_cosine_scheduler,
    weighted_loss,
    whole_batch,
)
from trainers.torch_estimator import logits_to_scores, torch_threads

ESTIMATOR = "trainers.image_backbone.ImageEstimator"
WARMUP_FRACTION = 0.1
MAX_MICRO_BATCH = {"cpu": 16, "gpu": 128}  # images per forward pass; more are accumulated
EVAL_BATCH = 64
ABSENT_LOGIT = -30.0  # a class missing from a fold's training part
SPEED_CHECK_BATCHES = 3  # micro-batches timed before the first estimate of a fit's duration


def _image_columns(data: FitData) -> list[str]:
    cols = data.info.schema.columns_of("image")
    if not cols:
        raise TrialFailed("the image learners need a column of image paths; the data has none")
    return cols


class _ImageLearner:
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.BINARY, Task.MULTICLASS, Task.REGRESSION})
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image"})
    auto_kinds: ClassVar[frozenset[str]] = frozenset({"image"})  # searched by default on images
    saved_types: ClassVar[frozenset[str]] = frozenset({ESTIMATOR})
    needs_accelerator: ClassVar[bool] = True

    def __init__(self) -> None:
        check_dependencies()

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> ImageEstimator:
        with torch_threads(data.n_threads):
            return self._fit(params, data, reporter)

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> ImageEstimator:
        raise NotImplementedError


# ---------------------------------------------------------------- linear probe

class ImageProbeTrainer(_ImageLearner):
    """Frozen pretrained features (cached once per run) and a linear model."""

    name = "image_probe"

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return image_space.probe_space(info)

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return image_space.probe_default(info)

    def portfolio(self, info: DataInfo) -> list[dict[str, Any]]:
        return image_space.probe_portfolio(info)

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> ImageEstimator:
        from trainers.image_features import frozen_features

        cols, info = _image_columns(data), data.info
        backbone, res = str(params["backbone"]), int(params["resolution"])
        parts = [data.X_train] + ([data.X_valid] if data.X_valid is not None else [])
        with torch_threads(data.n_threads):  # one thread in the search process (see torch_threads)
            feats = frozen_features(pd.concat(parts), cols, backbone, res, data.extra)
        n = len(data.X_train)
        mean, scale = feats[:n].mean(axis=0), feats[:n].std(axis=0) + 1e-6
        z = (feats - mean) / scale
        y = np.asarray(data.y_train)
        y_mean, y_scale = 0.0, 1.0
        if info.task.is_classification:
            model = LogisticRegression(C=float(params["C"]), class_weight=params.get("class_weight"),
                                       max_iter=1000)
            model.fit(z[:n], y, sample_weight=data.sample_weight)
            W, b = _class_head(model, info.n_classes)
        else:
            y_mean, y_scale = float(np.mean(y)), float(np.std(y)) or 1.0
            model = Ridge(alpha=1.0 / float(params["C"]))
            model.fit(z[:n], (y - y_mean) / y_scale, sample_weight=data.sample_weight)
            W, b = np.asarray(model.coef_, dtype=np.float64).reshape(1, -1), np.atleast_1d(model.intercept_)
        arch = {"backbone": backbone, "resolution": res, "columns": cols, "n_out": len(b), "dropout": 0.0}
        net = build_network(arch, pretrained=True)
        t = torch()
        with t.no_grad():  # the linear model on standardised features, folded into the head
            net["head"][1].weight.copy_(t.as_tensor(W / scale, dtype=t.float32))
            net["head"][1].bias.copy_(t.as_tensor(b - (W / scale) @ mean, dtype=t.float32))
        est = ImageEstimator().store(net, arch, info.task, info.n_classes, y_mean, y_scale)
        if data.X_valid is not None:
            est.remember(data.X_valid, z[n:] @ W.T + b)  # the engine scores these rows next
        return est


def _class_head(model: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression as one logit per class (absent classes get a very low one)."""
    coef, intercept = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    present = np.asarray(model.classes_, dtype=np.int64)
    if len(present) == 2:  # one logit z: softmax([0, z]) is the sigmoid
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
    W = np.zeros((n_classes, coef.shape[1]))
    b = np.full(n_classes, ABSENT_LOGIT)
    W[present], b[present] = coef, intercept
    return W, b


# ---------------------------------------------------------------- fine-tuning

class ImageTrainer(_ImageLearner):
    """Fine-tunes a pretrained EfficientNet-Lite with Lightning; reports every epoch."""

    name = "image"

    def __init__(self) -> None:
        super().__init__()
        import_lightning()  # once, before trials fork

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return image_space.space(info)

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return image_space.default(info)

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> ImageEstimator:
        from trainers.image_augment import ImageRows, decode_rows
        from trainers.lightning_callbacks import keep_best, validation_callbacks

        t, L = torch(), require("lightning", "image")
        cols, info, task = _image_columns(data), data.info, data.info.task
        clf, gpu, y = task.is_classification, data.accelerator == "gpu", np.asarray(data.y_train)
        res = int(params["resolution"])
        arch = {"backbone": str(params["backbone"]), "resolution": res, "columns": cols,
                "n_out": int(info.n_classes) if clf else 1, "dropout": float(params.get("dropout", 0.0))}
        y_mean, y_scale = (0.0, 1.0) if clf else (float(np.mean(y)), float(np.std(y)) or 1.0)
        target = (t.as_tensor(y.astype(np.int64)) if clf
                  else t.as_tensor(((y - y_mean) / y_scale).astype(np.float32)))
        weights = t.from_numpy(row_weights(y, info, params.get("class_weight") if clf else None,
                                           data.sample_weight))
        train_rows = ImageRows(decode_rows(data.X_train, cols, res), res, target=target, weights=weights,
                               strength=float(params.get("augment", 0.0)), train=True, seed=data.seed)
        n, batch = len(train_rows), max(1, min(int(params["batch_size"]), len(train_rows)))
        accumulate = math.ceil(batch / MAX_MICRO_BATCH["gpu" if gpu else "cpu"])
        micro = math.ceil(batch / accumulate)
        sampler = t.utils.data.RandomSampler(train_rows, generator=t.Generator().manual_seed(int(data.seed)))
        train_loader = t.utils.data.DataLoader(train_rows, batch_size=micro, sampler=sampler,
                                               collate_fn=whole_batch, pin_memory=gpu)
        steps_per_epoch = max(1, math.ceil(math.ceil(n / micro) / accumulate))

        refit = data.X_valid is None
        epochs = train_epochs = int(params["epochs"])
        if refit:
            train_epochs = max(1, int(data.extra.get("n_iterations") or epochs))
        total = steps_per_epoch * max(epochs, train_epochs)
        callbacks: list[Any] = []
        val_loader = best = None
        if not refit:
            val_rows = ImageRows(decode_rows(data.X_valid, cols, res), res)
            val_loader = t.utils.data.DataLoader(val_rows, batch_size=EVAL_BATCH, shuffle=False,
                                                 collate_fn=whole_batch, pin_memory=gpu)
            to_scores = functools.partial(logits_to_scores, task=task.value, y_mean=y_mean, y_scale=y_scale)
            callbacks, best = validation_callbacks(reporter, data, to_scores, patience=max(2, epochs // 4))
        devices = max(1, int(data.extra.get("devices") or 1)) if gpu else 1
        checkpointing = bool(params.get("checkpointing", data.extra.get("checkpointing", False)))
        with training_root("automl-image-") as root:
            L.seed_everything(int(data.seed), workers=True, verbose=False)
            if gpu:
                t.set_float32_matmul_precision("high")
            net = build_network(arch, pretrained=True)
            module = _image_module()(net, int(params["unfreeze"]), clf, float(params["lr_head"]),
                                     float(params["lr_body"]), float(params.get("weight_decay", 0.0)),
                                     max(1, int(WARMUP_FRACTION * total)), total, data.deadline, checkpointing)
            module.fail_if_slow = not refit
            trainer = lightning_trainer(
                root, data.accelerator, max_epochs=train_epochs, callbacks=callbacks,
                validate=val_loader is not None, extra="image", devices=devices,
                strategy="ddp_fork" if devices > 1 else "auto", accumulate_grad_batches=accumulate,
                deterministic=False)
            trainer.fit(module, train_loader, val_loader)
            module.check_loss(trainer.current_epoch)
        keep_best(best, module.net, trainer, data)
        est = ImageEstimator().store(module.net, arch, task, info.n_classes, y_mean, y_scale)
        if val_loader is not None:
            with t.inference_mode():
                logits = [forward(est.network(), b[0]).float().numpy() for b in val_loader]
            est.remember(data.X_valid, np.concatenate(logits))
        return est


@functools.cache
def _image_module() -> type:
    """The LightningModule (built on first use: lightning is slow to import)."""
    t = torch()
    L = require("lightning", "image")

    class ImageModule(LossWatch, L.LightningModule):
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
            out = t.cat(self._valid)
            self._valid.clear()
            world = self.trainer.world_size
            if world > 1:  # rank r held rows r, r + world, ... (padded): interleave, then trim
                n = len(self.trainer.val_dataloaders.dataset)
                out = self.all_gather(out).transpose(0, 1).reshape(-1, out.shape[-1])[:n]
            return out.cpu().numpy()

        def configure_optimizers(self) -> Any:
            body = [p for stage in self.trained for p in stage.parameters()]
            head = list(self.net["head"].parameters())
            groups = [{"params": [p for p in ps if p.ndim >= wd_dim], "lr": lr, "weight_decay": wd}
                      for ps, lr in ((head, self.lr_head), (body, self.lr_body))
                      for wd_dim, wd in ((2, self.weight_decay), (0, 0.0))]
            for g in groups[1::2]:  # biases and norms: no decay
                g["params"] = [p for p in g["params"] if p.ndim < 2]
            opt = t.optim.AdamW([g for g in groups if g["params"]])
            return {"optimizer": opt, "lr_scheduler": warmup_cosine_scheduler(opt, self.warmup, self.total)}

    return ImageModule
