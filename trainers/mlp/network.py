"""The MLP's torch module, built from a plain-dict architecture (to train and to reload)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from automl.exceptions import require

MAX_EMBEDDING_DIM = 32


def embedding_dim(cardinality: int) -> int:
    """fast.ai's rule of thumb, capped."""
    return int(max(2, min(MAX_EMBEDDING_DIM, round(1.6 * cardinality ** 0.56))))


def architecture(params: Mapping[str, Any], n_num: int, cardinalities: list[int], n_out: int) -> dict[str, Any]:
    """The plain-dict architecture for searched ``params`` and the preprocessed inputs."""
    return {"n_num": int(n_num), "cardinalities": list(cardinalities),
            "embedding_dims": [embedding_dim(c) for c in cardinalities], "depth": int(params["depth"]),
            "width": int(params["width"]), "dropout": float(params["dropout"]),
            "norm": str(params["norm"]), "n_out": int(n_out)}


def build_network(arch: Mapping[str, Any]) -> Any:
    """A ``ModuleDict``: ``embeddings`` (one per coded column), ``body`` (``depth`` blocks of
    Linear -> BatchNorm/LayerNorm -> ReLU -> Dropout) and a linear ``head``."""
    nn = require("torch", "deep").nn
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
    """Logits ``(batch, n_out)`` for the numeric block and the codes (0 = unknown level)."""
    torch = require("torch", "deep")
    parts = [x_num] if x_num.shape[1] else []
    parts += [emb(x_cat[:, i]) for i, emb in enumerate(net["embeddings"])]
    h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return net["head"](net["body"](h))
