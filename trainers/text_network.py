"""The fine-tuned text network and its saved form, for ``trainers.text_finetune``.

The network maps a text to ``head(sqrt(d) * normalize(mean_pool(encoder(text))))``: with
the encoder frozen that is a linear head on the backbone's sentence embedding (the very
vector :mod:`automl.text_embeddings` caches), so the cheap configuration trains on cached
embeddings and the fine-tuned ones start from the same function.

:class:`TextFinetuneEstimator` holds no torch object when saved (see
:mod:`trainers.torch_estimator`): the backbone by name and weights checksum (its frozen
part is the installed package's), the trained weights (head and unfrozen blocks) as a
safetensors byte string, the architecture as a plain dict.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from automl import text_backbones, text_embeddings
from automl.contracts import Task
from automl.exceptions import TrialFailed, require
from automl.isolation import torch_threads
from trainers.torch_estimator import TorchEstimator

EVAL_BATCH = 64


def join_texts(X: pd.DataFrame, columns: list[str]) -> list[str]:
    """One string per row: the text column, or ``name: value`` of each column joined."""
    parts = [X[c].fillna("").astype(str) for c in columns]
    if len(parts) == 1:
        return parts[0].tolist()
    return [" | ".join(f"{c}: {v}" for c, v in zip(columns, row)) for row in zip(*parts)]


def encoder_layers(encoder: Any) -> Any:
    """The transformer blocks of a Hugging Face encoder (BERT, MPNet, ... layouts)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise TrialFailed(f"cannot unfreeze blocks of a {type(encoder).__name__}: no encoder.layer")
    return layers


def trained_prefixes(n_layers: int, unfrozen: int) -> tuple[str, ...]:
    """State-dict prefixes of what training changes: the head and the top blocks."""
    top = range(n_layers - min(unfrozen, n_layers), n_layers)
    return ("head.", *(f"encoder.encoder.layer.{i}." for i in top))


def activation_bytes(config: Any, batch: int, max_length: int, unfrozen: int) -> float:
    """Rough bytes of the activations that training the top ``unfrozen`` blocks keeps for
    the backward pass, in 16-bit (Korthikanti et al. 2022: ``s b h (34 + 5 a s / h)`` per
    transformer layer)."""
    s, h, a = float(max_length), float(config.hidden_size), float(config.num_attention_heads)
    return unfrozen * s * batch * h * (34.0 + 5.0 * a * s / h)


def enable_checkpointing(encoder: Any) -> None:
    """Recompute the encoder's block activations in the backward pass (see build_network)."""
    kwargs = {"use_reentrant": False}
    if hasattr(encoder, "activation_checkpointing_enable"):  # transformers >= 5
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def is_checkpointing(encoder: Any) -> bool:
    """Whether the encoder recomputes its activations in the backward pass."""
    return bool(getattr(encoder, "is_activation_checkpointing", None)
                if hasattr(encoder, "activation_checkpointing_enable")
                else encoder.is_gradient_checkpointing)


def build_network(backbone: text_backbones.Backbone, n_out: int, unfrozen: int,
                  checkpointing: bool = False) -> Any:
    """The encoder (loaded offline, top ``unfrozen`` blocks trainable) with a linear head.

    ``checkpointing`` recomputes the blocks' activations in the backward pass instead of
    keeping them (Hugging Face's gradient checkpointing, non-reentrant: it also works when
    the blocks' inputs come from frozen layers): less memory, about a third more compute.
    """
    torch = require("torch", "text")
    nn = torch.nn
    with text_backbones.offline():
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        encoder = AutoModel.from_pretrained(backbone.path, local_files_only=True)
    encoder.requires_grad_(False)
    layers = encoder_layers(encoder)
    for block in list(layers)[len(layers) - min(unfrozen, len(layers)):]:
        block.requires_grad_(True)
    if checkpointing and unfrozen > 0:
        enable_checkpointing(encoder)
    dim = int(encoder.config.hidden_size)

    class TextNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = encoder, nn.Linear(dim, n_out)
            self.n_layers = len(layers)

        def features(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            return math.sqrt(dim) * nn.functional.normalize(pooled.float(), dim=1)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.head(self.features(input_ids, attention_mask))

    return TextNet()


def head_network(dim: int, n_out: int) -> Any:
    """The head alone, for the frozen configuration (inputs: cached embeddings)."""
    nn = require("torch", "text").nn
    return nn.ModuleDict({"head": nn.Linear(dim, n_out)})


def frozen_features(texts: list[str], backbone: text_backbones.Backbone) -> np.ndarray:
    """``sqrt(d) * embedding`` from the run's cache (the embeddings are unit vectors)."""
    E = text_embeddings.embed(texts, backbone)
    return (math.sqrt(E.shape[1]) * E).astype(np.float32)


def tokenizer(backbone: text_backbones.Backbone) -> Any:
    with text_backbones.offline():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(backbone.path, local_files_only=True)


def tokenize(tok: Any, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    enc = tok(texts, padding="longest", truncation=True, max_length=int(max_length),
              return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def trim_batch(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """Cut a token batch to its longest row (ids and mask come first)."""
    ids, mask, *rest = items
    n = max(1, int(mask.sum(dim=1).max()))
    return (ids[:, :n], mask[:, :n], *rest)


class TextFinetuneEstimator(TorchEstimator):
    """The fitted text network behind a scikit-learn interface, taking the cleaned frame.

    Besides the state of :class:`~trainers.torch_estimator.TorchEstimator` (whose
    ``weights_`` hold only what training changed): ``columns_`` and the backbone's name,
    checksum and package.
    """

    trained_by = "trainers.text_finetune (`automl fit ... --include text_finetune`)"
    model_name = "text model"

    @classmethod
    def from_network(cls, net: Any, *, columns: list[str], backbone: text_backbones.Backbone,
                     arch: dict[str, Any], task: Task, n_classes: int, y_mean: float,
                     y_scale: float) -> TextFinetuneEstimator:
        est = cls()
        prefixes = ("head.",) if arch["unfreeze_layers"] == 0 else trained_prefixes(
            int(arch["n_layers"]), int(arch["unfreeze_layers"]))
        state = {k: v for k, v in net.state_dict().items() if k.startswith(prefixes)}
        est.columns_ = list(columns)
        est.backbone_, est.backbone_sha256_ = backbone.name, backbone.sha256
        est.backbone_package_ = backbone.package
        est.store(net, arch, task, n_classes, y_mean, y_scale, state=state)
        return est

    def _backbone(self) -> text_backbones.Backbone:
        return text_backbones.check_same(self.backbone_, self.backbone_sha256_,
                                         getattr(self, "backbone_package_", ""))

    def build_network(self) -> Any:
        arch = self.arch_
        if int(arch["unfreeze_layers"]) == 0:
            return head_network(int(arch["dim"]), int(arch["n_out"]))
        return build_network(self._backbone(), int(arch["n_out"]), int(arch["unfreeze_layers"]))

    def load_weights(self, net: Any, state: dict[str, Any]) -> None:
        """Only the trained part was saved: the frozen rest is the installed backbone's."""
        missing = net.load_state_dict(state, strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"saved text weights do not fit the network: {missing.unexpected_keys[:3]}")

    def logits(self, X: Any) -> np.ndarray:
        torch = require("torch", "text")
        texts = join_texts(pd.DataFrame(X), self.columns_)
        chunks = []
        with torch_threads(self.predict_threads), torch.inference_mode():
            net = self.network()
            if int(self.arch_["unfreeze_layers"]) == 0:
                chunks.append(net["head"](torch.from_numpy(frozen_features(texts, self._backbone()))))
            else:
                ids, mask = tokenize(tokenizer(self._backbone()), texts, int(self.arch_["max_length"]))
                for s in range(0, len(texts), EVAL_BATCH):
                    b = trim_batch((torch.from_numpy(ids[s:s + EVAL_BATCH]),
                                    torch.from_numpy(mask[s:s + EVAL_BATCH])))
                    chunks.append(net(*b))
        return (torch.cat(chunks).float().numpy() if chunks
                else np.zeros((0, int(self.arch_["n_out"])), dtype=np.float32))
