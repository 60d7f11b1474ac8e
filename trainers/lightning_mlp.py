"""A tabular MLP trained with PyTorch Lightning, searched in the same study as the rest.

The network: numeric inputs standardised (missing values imputed with indicators,
datetimes expanded, texts as TF-IDF + SVD, high-cardinality categoricals target-encoded),
low-cardinality categoricals through learned embeddings (code 0 is reserved for a
missing or unseen level), then ``depth`` blocks of Linear -> BatchNorm/LayerNorm -> ReLU
-> Dropout and a linear head.

Training: AdamW (no decay on biases and norms), linear warmup then cosine decay per
step, gradient clipping, early stopping on the trial's own validation metric (the best
epoch's weights are kept and its number becomes the refit's epoch count), bf16 mixed
precision on a GPU and 32-bit on the CPU, seeded and deterministic on the CPU. A
non-finite loss fails the trial with that reason; the deadline stops training.
Class imbalance: class-weighted cross-entropy (none, balanced, or the effective number
of samples of Cui et al. 2019) and, on imbalanced data, a searched balanced sampler.

The fitted estimator holds no torch object when saved: the weights are a safetensors
byte string and the architecture a plain dict, so skops saves and loads it without
pickled code; the network is rebuilt on the first prediction. Only predicting needs
torch; training needs lightning too. Nothing here imports either at module import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler

from automl.contracts import DataInfo, FitData, Fitted, Reporter, Task, Trainer
from automl.exceptions import ConfigError, TrialFailed, require
from automl.preprocessing import (
    MAX_ORDINAL_LEVELS,
    TextFeatures,
    _target_encoder,
    datetime_feature_names,
    datetime_features,
    numeric_steps,
)
from automl.schema import FeatureSchema
from search_spaces import mlp as mlp_space

# Make torch.cuda.is_available() use NVML in the parent process, so it does not
# initialise CUDA there and forked trial processes can still use the GPU.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

DEPENDENCIES = ("torch", "lightning", "safetensors")
EFFECTIVE_BETA = 0.999  # Cui et al. 2019
WARMUP_FRACTION = 0.05
GRAD_CLIP_NORM = 1.0
EVAL_BATCH = 8192
MAX_EMBEDDING_DIM = 32
CLASS_WEIGHTS = (None, "balanced", "effective")


def _check_dependencies() -> None:
    """Raise :class:`MissingDependencyError` naming the ``deep`` extra, without importing."""
    for module in DEPENDENCIES:
        if importlib.util.find_spec(module) is None:
            require(module, "deep")


def _torch() -> Any:
    return require("torch", "deep")


# ---------------------------------------------------------------- preprocessing

def make_net_preprocessor(schema: FeatureSchema, *, seed: int = 0, n_rows: int = 1000,
                          task: Task | None = None) -> ColumnTransformer:
    """Dense standardised numeric block first, then one ordinal code per embedded categorical.

    Codes are ``-1`` for a missing or unseen level (the network adds one, so 0 is "unknown").
    """
    numeric = schema.columns_of("numeric", "boolean")
    dates = schema.columns_of("datetime")
    texts = schema.columns_of("text")
    cats = [c for c in schema.columns if c.kind == "categorical"]
    high = [c.name for c in cats if c.high_cardinality or c.n_unique > MAX_ORDINAL_LEVELS]
    low = [c.name for c in cats if c.name not in high]
    steps: list[tuple[str, Any, Any]] = []
    steps += numeric_steps(numeric)
    if dates:
        steps.append(("date", make_pipeline(
            FunctionTransformer(datetime_features, feature_names_out=datetime_feature_names),
            SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), dates))
    if high:
        steps.append(("hicat", make_pipeline(
            SimpleImputer(strategy="constant", fill_value="__missing__"),
            _target_encoder(task, seed),  # the task, not "auto", decides the target type
            StandardScaler()), high))
    for i, col in enumerate(texts):
        steps.append((f"text{i}", make_pipeline(TextFeatures(n_components=20), StandardScaler()), [col]))
    if low:  # last: the network reads the final len(low) columns as codes
        steps.append(("cat", OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
            min_frequency=5 if n_rows >= 500 else None, dtype=np.float64), low))
    if not steps:
        steps.append(("none", "drop", []))
    return ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)


def _cardinalities(pre: ColumnTransformer) -> list[int]:
    if "cat" not in pre.named_transformers_:
        return []
    return [len(c) + 1 for c in pre.named_transformers_["cat"].categories_]


def embedding_dim(cardinality: int) -> int:
    """fast.ai's rule of thumb, capped."""
    return int(max(2, min(MAX_EMBEDDING_DIM, round(1.6 * cardinality ** 0.56))))


def split_inputs(X: Any, n_num: int, cardinalities: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed matrix -> (float32 numeric block, int64 codes with 0 for unknown)."""
    X = np.asarray(X, dtype=np.float64)
    x_num = np.nan_to_num(X[:, :n_num], nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    codes = np.nan_to_num(X[:, n_num:], nan=-1.0) + 1
    codes = np.clip(codes, 0, np.asarray(cardinalities, dtype=np.float64) - 1) if cardinalities else codes
    return x_num, codes.astype(np.int64).reshape(len(X), len(cardinalities))


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
    F = _torch().nn.functional
    if classification:
        per_row = F.cross_entropy(out.float(), y, reduction="none")
    else:
        per_row = F.mse_loss(out[:, 0].float(), y, reduction="none")
    return (per_row * w).sum() / w.sum().clamp_min(1e-12)


# ---------------------------------------------------------------- the network

def build_network(arch: Mapping[str, Any]) -> Any:
    """The torch module for a plain-dict architecture (used to train and to reload)."""
    nn = _torch().nn
    embeddings = nn.ModuleList(nn.Embedding(int(c), int(d))
                               for c, d in zip(arch["cardinalities"], arch["embedding_dims"]))
    d_in = int(arch["n_num"]) + int(sum(arch["embedding_dims"]))
    width = int(arch["width"])
    layers: list[Any] = []
    for _ in range(int(arch["depth"])):
        norm = nn.BatchNorm1d(width) if arch["norm"] == "batch" else nn.LayerNorm(width)
        layers += [nn.Linear(d_in, width), norm, nn.ReLU(), nn.Dropout(float(arch["dropout"]))]
        d_in = width
    return nn.ModuleDict({"embeddings": embeddings, "body": nn.Sequential(*layers),
                          "head": nn.Linear(d_in, int(arch["n_out"]))})


def forward(net: Any, x_num: Any, x_cat: Any) -> Any:
    torch = _torch()
    parts = [x_num] if x_num.shape[1] else []
    parts += [emb(x_cat[:, i]) for i, emb in enumerate(net["embeddings"])]
    h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return net["head"](net["body"](h))


def logits_to_scores(logits: np.ndarray, task: str, y_mean: float, y_scale: float) -> np.ndarray:
    """Probabilities (classification, softmax) or values in the target's units (regression)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == Task.REGRESSION.value:
        return logits[:, 0] * y_scale + y_mean
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads, then restore the previous number.

    A process whose OpenMP pool has run with several threads cannot fork a child that
    uses torch with several threads (the child hangs), and trials run in forks. So the
    search process must only ever run torch single-threaded: predicting uses one thread,
    and a fit uses the trial's ``n_threads`` (one for small data; several only in the
    forked trial and refit children, or with ``isolate=False`` where nothing forks a
    torch trial afterwards).
    """
    torch = _torch()
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MLPEstimator(BaseEstimator):
    """The fitted network behind a scikit-learn interface, saved without torch objects.

    It takes the preprocessed matrix (numeric block, then categorical codes); the trainer
    returns it inside a ``Pipeline`` after its preprocessor, so the pipeline takes the
    raw cleaned frame. Its state is plain: ``arch_`` (dict), ``weights_`` (safetensors
    bytes), ``task_``, ``classes_`` and the regression target's scale.
    """

    predict_threads = 1

    @classmethod
    def from_network(cls, net: Any, arch: dict[str, Any], task: Task, n_classes: int,
                     y_mean: float = 0.0, y_scale: float = 1.0) -> MLPEstimator:
        from safetensors.torch import save

        est = cls()
        net = net.to("cpu").eval()
        est.arch_ = arch
        est.weights_ = save({k: v.detach().contiguous() for k, v in net.state_dict().items()})
        est.task_ = task.value
        if task.is_classification:
            est.classes_ = np.arange(n_classes)
        est.y_mean_, est.y_scale_ = float(y_mean), float(y_scale)
        est._net = net
        return est

    def fit(self, X: Any, y: Any = None) -> MLPEstimator:
        raise NotImplementedError("MLPEstimator is trained by trainers.lightning_mlp.MLPTrainer.fit "
                                  "(or `automl fit ... --include mlp`), not refitted on its own.")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "weights_")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._net = None

    def _network(self) -> Any:
        if getattr(self, "_net", None) is None:
            from safetensors.torch import load

            net = build_network(self.arch_)
            net.load_state_dict(load(bytes(self.weights_)))
            self._net = net.eval()
        return self._net

    def _scores(self, X: Any) -> np.ndarray:
        torch = _torch()
        x_num, x_cat = split_inputs(X, int(self.arch_["n_num"]), list(self.arch_["cardinalities"]))
        chunks = []
        with torch_threads(self.predict_threads), torch.inference_mode():
            net = self._network()
            for s in range(0, len(x_num), EVAL_BATCH):
                out = forward(net, torch.from_numpy(x_num[s:s + EVAL_BATCH]),
                              torch.from_numpy(x_cat[s:s + EVAL_BATCH]))
                chunks.append(out.float().numpy())
        logits = np.concatenate(chunks) if chunks else np.zeros((0, int(self.arch_["n_out"])))
        return logits_to_scores(logits, self.task_, self.y_mean_, self.y_scale_)

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task_ == Task.REGRESSION.value:
            raise AttributeError("predict_proba is for classifiers; this MLP is a regressor.")
        return self._scores(X)

    def predict(self, X: Any) -> np.ndarray:
        scores = self._scores(X)
        if self.task_ == Task.REGRESSION.value:
            return scores
        return self.classes_[np.argmax(scores, axis=1)]


# ---------------------------------------------------------------- Lightning parts

class _Rows:
    """Tensors indexed together; ``__getitems__`` fetches a whole batch in one indexing."""

    def __init__(self, *tensors: Any) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, idx: list[int]) -> tuple[Any, ...]:
        index = _torch().as_tensor(idx)
        return tuple(t[index] for t in self.tensors)


def _batch(items: Any) -> Any:
    return items


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@functools.cache
def _lightning_parts() -> tuple[type, type, type]:
    """The LightningModule and callbacks (built on first use: lightning is slow to import)."""
    torch = _torch()
    L = require("lightning", "deep")

    class TabularModule(L.LightningModule):
        def __init__(self, net: Any, classification: bool, lr: float, weight_decay: float,
                     warmup: int, total: int, deadline: float) -> None:
            super().__init__()
            self.net = net
            self.classification = classification
            self.lr, self.weight_decay, self.warmup, self.total = lr, weight_decay, warmup, total
            self.deadline = deadline
            self._loss_sum: Any = None
            self._valid: list[Any] = []

        def forward(self, x_num: Any, x_cat: Any) -> Any:
            return forward(self.net, x_num, x_cat)

        def on_train_epoch_start(self) -> None:
            self._loss_sum = None

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x_num, x_cat, y, w = batch
            loss = weighted_loss(self(x_num, x_cat), y, w, self.classification)
            # summed on the device, checked once per epoch (no sync per step on a GPU)
            self._loss_sum = loss.detach() if self._loss_sum is None else self._loss_sum + loss.detach()
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
            return loss

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            if time.monotonic() > self.deadline:
                self.trainer.should_stop = True

        def on_train_epoch_end(self) -> None:
            self.check_loss(self.current_epoch + 1)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True)

        def check_loss(self, epoch: int) -> None:
            if self._loss_sum is not None and not bool(torch.isfinite(self._loss_sum)):
                raise TrialFailed(f"the training loss became {float(self._loss_sum)} in epoch {epoch} "
                                  "(diverged: lower the learning rate)")

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
            schedule = functools.partial(warmup_cosine, warmup=self.warmup, total=self.total)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    class PruningCallback(L.Callback):
        """Each epoch: the trial's metric on the validation part, reported to the pruner."""

        def __init__(self, reporter: Reporter, data: FitData, to_scores: Any) -> None:
            self.reporter, self.data, self.to_scores = reporter, data, to_scores

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking:
                return
            epoch = trainer.current_epoch + 1
            pl_module.check_loss(epoch)
            from trainers.distributed import gather_rows, report_from_rank_zero

            pred = self.to_scores(gather_rows(trainer, pl_module, pl_module.validation_logits(),
                                              len(self.data.y_valid)))  # every rank's rows
            value = self.data.metric(self.data.y_valid, pred, self.data.info.n_classes)
            if not np.isfinite(value):
                raise TrialFailed(f"the validation {self.data.metric.name} became {value} in epoch {epoch}")
            pl_module.log("val_metric", value)
            # optuna.TrialPruned propagates (under DDP: rank 0 reports, all ranks stop)
            report_from_rank_zero(trainer, self.reporter, epoch, value)

    class BestWeights(L.Callback):
        """Keeps the weights and number of the best epoch on the validation metric."""

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
                self.state = {k: v.detach().to("cpu", copy=True)
                              for k, v in pl_module.net.state_dict().items()}

    return TabularModule, PruningCallback, BestWeights


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
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


def _precision(accelerator: str) -> str:
    if accelerator != "gpu":
        return "32-true"
    torch = _torch()
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


# ---------------------------------------------------------------- the trainer

class MLPTrainer(Trainer):
    """Tabular MLP with categorical embeddings; reports every epoch to the pruner."""

    name = "mlp"
    tasks = frozenset({Task.BINARY, Task.MULTICLASS, Task.REGRESSION})
    needs_accelerator = True
    saved_types = frozenset({"trainers.lightning_mlp.MLPEstimator"})  # weights as safetensors bytes

    def __init__(self) -> None:
        _check_dependencies()
        # Import torch and lightning once here, in the process that forks the trials, so
        # each trial does not pay seconds of imports (importing starts no thread: fork-safe).
        _lightning_parts()

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return mlp_space.space(info)

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return mlp_space.default(info)

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        # every torch operation of the fit runs with the trial's threads (see torch_threads)
        with torch_threads(data.n_threads):
            return self._fit(params, data, reporter)

    def _fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        torch = _torch()
        L = require("lightning", "deep")
        from lightning.pytorch.callbacks import EarlyStopping
        from lightning.pytorch.loggers import CSVLogger

        TabularModule, PruningCallback, BestWeights = _lightning_parts()
        info, task = data.info, data.info.task
        clf, gpu, y = task.is_classification, data.accelerator == "gpu", np.asarray(data.y_train)
        pre = make_net_preprocessor(info.schema, seed=data.seed, n_rows=len(y), task=task)
        Xt = pre.fit_transform(data.X_train, y)
        cards = _cardinalities(pre)
        arch = {"n_num": int(Xt.shape[1] - len(cards)), "cardinalities": cards,
                "embedding_dims": [embedding_dim(c) for c in cards], "depth": int(params["depth"]),
                "width": int(params["width"]), "dropout": float(params["dropout"]),
                "norm": str(params["norm"]), "n_out": int(info.n_classes) if clf else 1}
        if arch["n_num"] + sum(arch["embedding_dims"]) == 0:
            raise TrialFailed("the mlp has no input: every feature was empty after preprocessing")
        y_mean, y_scale = (0.0, 1.0) if clf else (float(np.mean(y)), float(np.std(y)) or 1.0)
        target = (torch.as_tensor(y.astype(np.int64)) if clf
                  else torch.as_tensor(((y - y_mean) / y_scale).astype(np.float32)))
        weights = row_weights(y, info, params.get("class_weight") if clf else None, data.sample_weight)
        train_loader, steps_per_epoch = _train_loader(Xt, arch, target, weights, params, data)

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
                _Rows(torch.from_numpy(xv_num), torch.from_numpy(xv_cat)), batch_size=EVAL_BATCH,
                shuffle=False, collate_fn=_batch, pin_memory=gpu)
            to_scores = functools.partial(logits_to_scores, task=task.value, y_mean=y_mean, y_scale=y_scale)
            best = BestWeights(data.metric.greater_is_better)
            callbacks = [PruningCallback(reporter, data, to_scores), best, EarlyStopping(
                monitor="val_metric", mode="max" if data.metric.greater_is_better else "min",
                patience=max(5, min(20, epochs // 5)), check_finite=False)]

        log_dir = data.extra.get("log_dir")
        with contextlib.ExitStack() as stack:
            stack.enter_context(_quiet_lightning())
            root = str(log_dir) if log_dir else stack.enter_context(tempfile.TemporaryDirectory(prefix="automl-mlp-"))
            L.seed_everything(int(data.seed), workers=True, verbose=False)
            if gpu:
                torch.set_float32_matmul_precision("high")
            module = TabularModule(build_network(arch), clf, float(params["learning_rate"]),
                                   float(params["weight_decay"]), max(1, int(WARMUP_FRACTION * total)),
                                   total, data.deadline)
            trainer = L.Trainer(
                accelerator="gpu" if gpu else "cpu", devices=1, precision=_precision(data.accelerator),
                max_epochs=train_epochs, gradient_clip_val=GRAD_CLIP_NORM, gradient_clip_algorithm="norm",
                deterministic=not gpu,  # cheap on the CPU; on a GPU it would need cuBLAS settings
                callbacks=callbacks, logger=CSVLogger(root, name="mlp", version=f"{os.getpid()}-{time.time_ns()}"),
                log_every_n_steps=max(1, steps_per_epoch), enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                limit_val_batches=1.0 if val_loader is not None else 0, default_root_dir=root,
            )
            trainer.fit(module, train_loader, val_loader)
            module.check_loss(trainer.current_epoch)
        net, kept = module.net, None
        if best is not None and best.state is not None:
            net.load_state_dict(best.state)
            kept = int(best.epoch)
        elif not refit:
            kept = max(1, int(trainer.current_epoch))
        est = MLPEstimator.from_network(net, arch, task, info.n_classes, y_mean, y_scale)
        return Fitted(Pipeline([("preprocess", pre), ("model", est)]), kept)


def _train_loader(Xt: np.ndarray, arch: Mapping[str, Any], target: Any, weights: np.ndarray,
                  params: Mapping[str, Any], data: FitData) -> tuple[Any, int]:
    """Shuffled (or class-balanced) seeded batches of the training rows, and steps per epoch."""
    torch = _torch()
    x_num, x_cat = split_inputs(Xt, int(arch["n_num"]), list(arch["cardinalities"]))
    rows = _Rows(torch.from_numpy(x_num), torch.from_numpy(x_cat), target, torch.from_numpy(weights))
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
                                         collate_fn=_batch, pin_memory=data.accelerator == "gpu")
    return loader, (n // batch_size if drop_last else 1)
