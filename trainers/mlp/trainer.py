"""The MLP learner the search calls: preprocess, train with Lightning, return the pipeline."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn.pipeline import Pipeline

from automl.contracts import DataInfo, FitData, Fitted, Reporter, Task, Trainer
from automl.exceptions import TrialFailed, require
from automl.isolation import torch_threads
from search_spaces import mlp as mlp_space
from trainers.lightning_common import (
    Rows,
    import_lightning,
    lightning_trainer,
    row_weights,
    training_root,
    whole_batch,
)
from trainers.mlp.estimator import EVAL_BATCH, MLPEstimator
from trainers.mlp.network import architecture, build_network
from trainers.mlp.preprocessing import cardinalities, make_net_preprocessor, split_inputs
from trainers.torch_estimator import logits_to_scores

DEPENDENCIES = ("torch", "lightning", "safetensors")
WARMUP_FRACTION = 0.05


def check_dependencies() -> None:
    """Raise :class:`MissingDependencyError` naming the ``deep`` extra, without importing."""
    for module in DEPENDENCIES:
        if importlib.util.find_spec(module) is None:
            require(module, "deep")


class MLPTrainer(Trainer):
    """Tabular MLP with categorical embeddings; reports every epoch to the pruner."""

    name = "mlp"
    tasks = frozenset({Task.BINARY, Task.MULTICLASS, Task.REGRESSION})
    needs_accelerator = True
    saved_types: ClassVar[frozenset[str]] = frozenset({"trainers.mlp.estimator.MLPEstimator"})

    def __init__(self) -> None:
        check_dependencies()
        import_lightning()  # once here, in the process that forks the trials

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return mlp_space.space(info)

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return mlp_space.default(info)

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        # every torch operation of the fit runs with the trial's threads (see torch_threads)
        with torch_threads(data.n_threads):
            return self._fit(params, data, reporter)

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        torch = require("torch", "deep")
        L = require("lightning", "deep")
        from trainers.lightning_callbacks import keep_best, validation_callbacks
        from trainers.mlp.module import TabularModule

        info, task = data.info, data.info.task
        clf, gpu, y = task.is_classification, data.accelerator == "gpu", np.asarray(data.y_train)
        pre = make_net_preprocessor(info.schema, seed=data.seed, n_rows=len(y), task=task)
        Xt = pre.fit_transform(data.X_train, y)
        cards = cardinalities(pre)
        arch = architecture(params, Xt.shape[1] - len(cards), cards, info.n_classes if clf else 1)
        if arch["n_num"] + sum(arch["embedding_dims"]) == 0:
            raise TrialFailed("the mlp has no input: every feature was empty after preprocessing")
        y_mean, y_scale = (0.0, 1.0) if clf else (float(np.mean(y)), float(np.std(y)) or 1.0)
        target = (torch.as_tensor(y.astype(np.int64)) if clf
                  else torch.as_tensor(((y - y_mean) / y_scale).astype(np.float32)))
        weights = row_weights(y, info, params.get("class_weight") if clf else None, data.sample_weight)
        train_loader, steps_per_epoch = train_batches(Xt, arch, target, weights, params, data)

        refit = data.X_valid is None
        epochs = train_epochs = int(params["epochs"])
        if refit:  # the trial's schedule, stopped at the trial's best epoch
            train_epochs = max(1, int(data.n_iterations or epochs))
        total = steps_per_epoch * max(epochs, train_epochs)
        callbacks: list[Any] = []
        val_loader = best = None
        if not refit:
            xv_num, xv_cat = split_inputs(pre.transform(data.X_valid), arch["n_num"], cards)
            val_loader = torch.utils.data.DataLoader(
                Rows(torch.from_numpy(xv_num), torch.from_numpy(xv_cat)), batch_size=EVAL_BATCH,
                shuffle=False, collate_fn=whole_batch, pin_memory=gpu)
            to_scores = functools.partial(logits_to_scores, task=task.value, y_mean=y_mean, y_scale=y_scale)
            callbacks, best = validation_callbacks(reporter, data, to_scores,
                                                   patience=max(5, min(20, epochs // 5)))

        with training_root("automl-mlp-") as root:
            L.seed_everything(int(data.seed), workers=True, verbose=False)
            if gpu:
                torch.set_float32_matmul_precision("high")
            module = TabularModule(build_network(arch), clf, float(params["learning_rate"]),
                                   float(params["weight_decay"]), max(1, int(WARMUP_FRACTION * total)),
                                   total, data.deadline)
            trainer = lightning_trainer(root, data.accelerator, max_epochs=train_epochs, callbacks=callbacks,
                                        validate=val_loader is not None)
            trainer.fit(module, train_loader, val_loader)
            module.check_loss(trainer.current_epoch)
        kept = keep_best(best, module.net, trainer, data)
        est = MLPEstimator().store(module.net, arch, task, info.n_classes, y_mean, y_scale)
        return Fitted(Pipeline([("preprocess", pre), ("model", est)]), kept)


def train_batches(Xt: np.ndarray, arch: Mapping[str, Any], target: Any, weights: np.ndarray,
                  params: Mapping[str, Any], data: FitData) -> tuple[Any, int]:
    """Shuffled (or class-balanced) seeded batches of the training rows, and steps per epoch."""
    torch = require("torch", "deep")
    x_num, x_cat = split_inputs(Xt, int(arch["n_num"]), list(arch["cardinalities"]))
    rows = Rows(torch.from_numpy(x_num), torch.from_numpy(x_cat), target, torch.from_numpy(weights))
    n = len(rows)
    batch_size = max(1, min(int(params["batch_size"]), n))
    drop_last = n > batch_size  # never a last batch of one row (BatchNorm needs two)
    generator = torch.Generator().manual_seed(int(data.seed))
    if data.info.task.is_classification and params.get("balanced_sampler"):
        y = np.asarray(data.y_train).astype(np.int64)
        per_row = 1.0 / np.maximum(np.bincount(y, minlength=data.info.n_classes), 1)[y]
        sampler: Any = torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(per_row, dtype=torch.double), n, replacement=True, generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(rows, generator=generator)
    loader = torch.utils.data.DataLoader(rows, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                         collate_fn=whole_batch, pin_memory=data.accelerator == "gpu")
    return loader, (n // batch_size if drop_last else 1)
