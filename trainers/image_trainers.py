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
bf16 mixed precision on a GPU, data-parallel over the GPUs a trial is given (see
:mod:`trainers.distributed`), and seeds. A non-finite loss fails the trial with that reason.
Class imbalance: class-weighted loss (probe: ``class_weight`` of scikit-learn).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge

from automl.contracts import DataInfo, FitData, Fitted, Reporter, Task, Trainer
from automl.exceptions import TrialFailed, require
from automl.isolation import torch_threads
from search_spaces import image as image_space
from trainers.image_backbone import (
    ImageEstimator,
    build_network,
    check_dependencies,
    forward,
    torch,
)
from trainers.distributed import fit as dist_fit
from trainers.distributed import rank_hooks, trial_devices
from trainers.distributed import strategy as dist_strategy
from trainers.lightning_common import (
    import_lightning,
    lightning_trainer,
    row_weights,
    training_root,
    whole_batch,
)
from trainers.torch_estimator import logits_to_scores

ESTIMATOR = "trainers.image_backbone.ImageEstimator"
WARMUP_FRACTION = 0.1
MAX_MICRO_BATCH = {"cpu": 16, "gpu": 128}  # images per forward pass; more are accumulated
EVAL_BATCH = 64
ABSENT_LOGIT = -30.0  # a class missing from a fold's training part


def _image_columns(data: FitData) -> list[str]:
    cols = data.info.schema.columns_of("image")
    if not cols:
        raise TrialFailed("the image learners need a column of image paths; the data has none")
    return cols


class _ImageLearner(Trainer):
    tasks: ClassVar[frozenset[Task]] = frozenset({Task.BINARY, Task.MULTICLASS, Task.REGRESSION})
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image"})
    auto_kinds: ClassVar[frozenset[str]] = frozenset({"image"})  # searched by default on images
    time_share: ClassVar[bool] = False  # one fine-tuning or probe fit is the whole trial
    saved_types: ClassVar[frozenset[str]] = frozenset({ESTIMATOR})
    needs_accelerator: ClassVar[bool] = True

    def __init__(self) -> None:
        check_dependencies()

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        with torch_threads(data.n_threads):
            return self._fit(params, data, reporter)

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
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

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        from trainers.image_features import frozen_features

        cols, info = _image_columns(data), data.info
        backbone, res = str(params["backbone"]), int(params["resolution"])
        parts = [data.X_train] + ([data.X_valid] if data.X_valid is not None else [])
        with torch_threads(data.n_threads):  # one thread in the search process (see torch_threads)
            feats = frozen_features(pd.concat(parts), cols, backbone, res, data.extra, data.accelerator)
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
        return Fitted(est)


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

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        from trainers.image_augment import ImageRows, decode_rows
        from trainers.image_module import ImageModule
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
            train_epochs = max(1, int(data.n_iterations or epochs))
        total = steps_per_epoch * max(epochs, train_epochs)
        callbacks: list[Any] = []
        val_loader = best = None
        if not refit:
            val_rows = ImageRows(decode_rows(data.X_valid, cols, res), res)
            val_loader = t.utils.data.DataLoader(val_rows, batch_size=EVAL_BATCH, shuffle=False,
                                                 collate_fn=whole_batch, pin_memory=gpu)
            to_scores = functools.partial(logits_to_scores, task=task.value, y_mean=y_mean, y_scale=y_scale)
            callbacks, best = validation_callbacks(reporter, data, to_scores, patience=max(2, epochs // 4))
        devices = trial_devices(data)  # several: data-parallel (trainers.distributed)
        checkpointing = bool(params.get("checkpointing", data.extra.get("checkpointing", False)))
        with training_root("automl-image-") as root:
            L.seed_everything(int(data.seed), workers=True, verbose=False)
            if gpu:
                t.set_float32_matmul_precision("high")
            net = build_network(arch, pretrained=True)
            module = ImageModule(net, int(params["unfreeze"]), clf, float(params["lr_head"]),
                                 float(params["lr_body"]), float(params.get("weight_decay", 0.0)),
                                 max(1, int(WARMUP_FRACTION * total)), total, data.deadline, checkpointing)
            module.fail_if_slow = not refit
            trainer = lightning_trainer(
                root, data.accelerator, max_epochs=train_epochs, callbacks=[*callbacks, rank_hooks(best)],
                validate=val_loader is not None, extra="image", devices=devices,
                strategy=dist_strategy(devices), precision=data.extra.get("precision"),
                accumulate_grad_batches=accumulate, deterministic=False)
            dist_fit(trainer, module, train_loader, val_loader)
            module.check_loss(trainer.current_epoch)
        kept = keep_best(best, module.net, trainer, data)
        est = ImageEstimator().store(module.net, arch, task, info.n_classes, y_mean, y_scale)
        if val_loader is not None:
            with t.inference_mode():
                logits = [forward(est.network(), b[0]).float().numpy() for b in val_loader]
            est.remember(data.X_valid, np.concatenate(logits))
        return Fitted(est, kept)
