"""A sentence encoder fine-tuned on the text columns with Lightning, in the same study.

Opt-in (``--include default,text_finetune``; needs ``automl[text]``). It reads the text
column(s) only (several are joined as ``name: value | ...``). The cheap default trains a
linear head on the frozen embeddings the run cached (seconds); other configurations
unfreeze the encoder's top blocks (``unfreeze_layers``) with their own learning rate.

Training practice: class-weighted loss (none / balanced), AdamW, linear warmup then cosine
decay per optimizer step, gradient accumulation to the searched effective batch size,
gradient clipping, early stopping on the trial's own metric (the best epoch's weights are
kept and its number becomes the refit's epoch count), per-epoch reports to the pruner,
bf16 mixed precision on a GPU (``FitData.extra['precision']`` overrides it), gradient
checkpointing of the unfrozen blocks (``params`` or ``FitData.extra['checkpointing']``; by
default where their activations would take over half the GPU's free memory), data-parallel
training when the trial is given several devices (:mod:`trainers.distributed`), seeds; a
non-finite loss fails the trial with that reason. Lightning is imported as ``lightning`` only.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from automl import text_backbones
from automl.contracts import DataInfo, FitData, Fitted, Reporter, Task, Trainer
from automl.exceptions import TrialFailed, require
from automl.isolation import torch_threads
from search_spaces import text_finetune as ft_space
from trainers.distributed import fit as dist_fit
from trainers.distributed import rank_hooks, trial_devices
from trainers.distributed import strategy as dist_strategy
from trainers.lightning_common import (
    LossWatch,
    Rows,
    import_lightning,
    lightning_trainer,
    row_weights,
    training_root,
    warmup_cosine_scheduler,
    weighted_loss,
    whole_batch,
)
from trainers.text_network import (
    TextFinetuneEstimator,
    activation_bytes,
    build_network,
    enable_checkpointing,
    frozen_features,
    head_network,
    join_texts,
    tokenize,
    tokenizer,
    trim_batch,
)
from trainers.torch_estimator import logits_to_scores

WARMUP_FRACTION = 0.1
EVAL_BATCH = 64
CHECKPOINT_SHARE = 0.5  # automatic checkpointing above this share of the GPU's free memory


@functools.cache
def _text_module() -> type:
    torch = require("torch", "text")
    L = require("lightning", "text")

    class TextModule(LossWatch, L.LightningModule):
        """Loss, optimizer groups (head / unfrozen blocks) and the schedule; the data and
        the loop are the Trainer's."""

        def __init__(self, net: Any, frozen: bool, classification: bool, params: Mapping[str, Any],
                     total_steps: int, deadline: float) -> None:
            super().__init__()
            self.net, self.frozen, self.classification = net, frozen, classification
            self.params, self.total_steps, self.deadline = dict(params), total_steps, deadline
            self._valid: list[Any] = []

        def forward(self, batch: tuple[Any, ...]) -> Any:
            if self.frozen:
                return self.net["head"](batch[0])
            return self.net(batch[0], batch[1])

        def on_fit_start(self) -> None:
            """Gradient checkpointing: as asked (``params['checkpointing']``), else where the
            trained blocks' activations would take over a share of the GPU's free memory."""
            on = self.params.get("checkpointing")
            if self.frozen or on is False:
                return
            if on is None and self.device.type == "cuda":
                free = torch.cuda.mem_get_info(self.device)[0]
                on = activation_bytes(self.net.encoder.config, int(self.params["batch_size"]),
                                      int(self.params["max_length"]),
                                      int(self.params["unfreeze_layers"])) > CHECKPOINT_SHARE * free
            if on:
                enable_checkpointing(self.net.encoder)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            *inputs, y, w = batch
            loss = weighted_loss(self(tuple(inputs)), y, w, self.classification)
            self.track_loss(loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self._valid.append(self(batch).float())

        def validation_logits(self) -> np.ndarray:
            out = torch.cat(self._valid).cpu().numpy()
            self._valid.clear()
            if not np.isfinite(out).all():
                raise TrialFailed(f"the network's outputs became non-finite in epoch "
                                  f"{self.current_epoch + 1} (diverged: lower the learning rate)")
            return out

        def configure_optimizers(self) -> Any:
            p = self.params
            head = list(self.net["head"].parameters()) if self.frozen else list(self.net.head.parameters())
            body = [] if self.frozen else [q for q in self.net.encoder.parameters() if q.requires_grad]
            groups = [{"params": head, "lr": float(p["head_lr"])}]
            if body:
                groups.append({"params": body, "lr": float(p["body_lr"])})
            opt = torch.optim.AdamW(groups, weight_decay=float(p["weight_decay"]))
            warmup = max(1, int(WARMUP_FRACTION * self.total_steps))
            return {"optimizer": opt, "lr_scheduler": warmup_cosine_scheduler(opt, warmup, self.total_steps)}

    return TextModule


class TextFinetuneTrainer(Trainer):
    """MiniLM (or the run's backbone) with a linear head: frozen, or its top blocks tuned."""

    name = "text_finetune"
    tasks = frozenset({Task.BINARY, Task.MULTICLASS, Task.REGRESSION})
    needs_accelerator = True
    time_share = False  # one fine-tuning run is the whole trial
    saved_types: ClassVar[frozenset[str]] = frozenset({"trainers.text_network.TextFinetuneEstimator"})

    def __init__(self) -> None:
        if not text_backbones.text_extra_installed():
            raise text_backbones.missing_extra("`sentence-transformers` or the MiniLM weights")
        for module in ("torch", "lightning", "safetensors"):
            require(module, "text")
        import_lightning()  # once, in the process that forks

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return ft_space.space(info)

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return ft_space.default(info)

    def portfolio(self, info: DataInfo) -> list[dict[str, Any]]:
        return ft_space.portfolio(info)

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        with torch_threads(data.n_threads):
            return self._fit(params, data, reporter)

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        torch = require("torch", "text")
        L = require("lightning", "text")
        from trainers.lightning_callbacks import keep_best, validation_callbacks

        info, task = data.info, data.info.task
        columns = info.schema.columns_of("text")
        if not columns:
            raise TrialFailed("text_finetune needs a text column; this table has none")
        backbone = text_backbones.resolve(info.text_backbone or "minilm")
        clf, gpu, y = task.is_classification, data.accelerator == "gpu", np.asarray(data.y_train)
        n_out = int(info.n_classes) if clf else 1
        y_mean, y_scale = (0.0, 1.0) if clf else (float(np.mean(y)), float(np.std(y)) or 1.0)
        target = (torch.as_tensor(y.astype(np.int64)) if clf
                  else torch.as_tensor(((y - y_mean) / y_scale).astype(np.float32)))
        weights = torch.from_numpy(row_weights(y, info, params.get("class_weight") if clf else None,
                                               data.sample_weight))
        unfrozen, frozen = int(params["unfreeze_layers"]), int(params["unfreeze_layers"]) == 0
        L.seed_everything(int(data.seed), workers=True, verbose=False)
        train_texts = join_texts(data.X_train, columns)
        if frozen:
            feats = frozen_features(train_texts, backbone)
            net = head_network(feats.shape[1], n_out)
            inputs: tuple[Any, ...] = (torch.from_numpy(feats),)
            arch = {"dim": int(feats.shape[1]), "n_layers": 0}
            collate: Any = whole_batch
        else:
            net = build_network(backbone, n_out, unfrozen)
            tok = tokenizer(backbone)
            inputs = tuple(torch.from_numpy(a) for a in tokenize(tok, train_texts, params["max_length"]))
            arch = {"dim": int(net.encoder.config.hidden_size), "n_layers": int(net.n_layers)}
            collate = trim_batch
        arch.update({"n_out": n_out, "unfreeze_layers": unfrozen, "max_length": int(params["max_length"])})

        n = len(y)
        batch = max(1, min(int(params["batch_size"]), n))
        accumulate = max(1, int(params["effective_batch_size"]) // batch)
        generator = torch.Generator().manual_seed(int(data.seed))
        rows = Rows(*inputs, target, weights)
        train_loader = torch.utils.data.DataLoader(
            rows, batch_size=batch, sampler=torch.utils.data.RandomSampler(rows, generator=generator),
            collate_fn=collate, pin_memory=gpu)
        refit = data.X_valid is None
        epochs = int(params["epochs"])
        if refit:
            epochs = max(1, int(data.n_iterations or epochs))
        total_steps = max(1, math.ceil(math.ceil(n / batch) / accumulate) * int(params["epochs"]))

        callbacks: list[Any] = []
        val_loader = best = None
        if not refit:
            valid_texts = join_texts(data.X_valid, columns)
            v_inputs = ((torch.from_numpy(frozen_features(valid_texts, backbone)),) if frozen else
                        tuple(torch.from_numpy(a) for a in tokenize(tok, valid_texts, params["max_length"])))
            val_loader = torch.utils.data.DataLoader(Rows(*v_inputs), batch_size=EVAL_BATCH,
                                                     shuffle=False, collate_fn=collate, pin_memory=gpu)
            to_scores = functools.partial(logits_to_scores, task=task.value, y_mean=y_mean, y_scale=y_scale)
            callbacks, best = validation_callbacks(reporter, data, to_scores, patience=3 if not frozen else 8)
        with training_root("automl-text-") as root:
            module = _text_module()(net, frozen, clf, {**params, "checkpointing": params.get(
                "checkpointing", data.extra.get("checkpointing"))}, total_steps, data.deadline)
            devices = trial_devices(data)  # several: data-parallel (trainers.distributed)
            trainer = lightning_trainer(root, data.accelerator, max_epochs=epochs,
                                        callbacks=[*callbacks, rank_hooks(best)],
                                        validate=val_loader is not None, extra="text",
                                        devices=devices, strategy=dist_strategy(devices),
                                        precision=data.extra.get("precision"),
                                        accumulate_grad_batches=accumulate)
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            dist_fit(trainer, module, train_loader, val_loader)
            module.check_loss(trainer.current_epoch)
        kept = keep_best(best, net, trainer, data)
        return Fitted(TextFinetuneEstimator.from_network(
            net, columns=columns, backbone=backbone, arch=arch, task=task,
            n_classes=info.n_classes, y_mean=y_mean, y_scale=y_scale), kept)
