"""Frozen-backbone features, computed once per run and shared by every trial and fold.

Trials run in forked processes (or on Ray workers of the same machine), so the cache is
on disk: the sorted distinct image paths of a trial's rows (training and validation
parts together: the same set for every fold and trial of a run, and for the refit) are
cut into chunks, and each chunk's pooled features are saved under a key made of the
backbone, the resolution and every file's path, size and modification time. A changed
image changes its chunk's key; a trial killed mid-way keeps the chunks it finished; a
file lock makes parallel trials wait for the one computing a chunk instead of repeating it.

The cache folder is ``FitData.extra['cache_dir']`` when the engine gives one, else
``$AUTOML_CACHE_DIR``, else ``~/.cache/automl``; entries can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl import disk_cache
from automl.disk_cache import locked

from trainers.image_backbone import FEATURE_DIM, build_network, hash_files, pooled_rows

CHUNK = 64  # images per cache file: a trial killed mid-way keeps what it finished
FORMAT = "pooled-v1"  # bump when the pixels or the pooling change


def cache_root(extra: dict[str, Any] | None = None) -> Path:
    return disk_cache.cache_root((extra or {}).get("cache_dir")) / "image-features"


def chunk_key(backbone: str, resolution: int, paths: Sequence[Any]) -> str:
    return hash_files(hashlib.sha256(f"{FORMAT}\0{backbone}\0{resolution}".encode()), paths).hexdigest()[:32]


def frozen_features(frame: pd.DataFrame, columns: Sequence[str], backbone: str, resolution: int,
                    extra: dict[str, Any] | None = None, accelerator: str = "cpu") -> np.ndarray:
    """Pooled pretrained features of every row: ``(len(frame), 1280 * len(columns))`` float32.
    Chunks not in the cache are computed on the GPU when ``accelerator`` is ``gpu``.

    Example:
        >>> frozen_features(X, ["image"], "lite0", 224).shape  # doctest: +SKIP
        (400, 1280)
    """
    values = [frame[c].tolist() for c in columns]
    distinct = sorted({v if isinstance(v, str) else "" for col in values for v in col})
    root = cache_root(extra)
    device = "cuda" if accelerator == "gpu" else "cpu"
    net = None
    table: dict[str, np.ndarray] = {}
    for s in range(0, len(distinct), CHUNK):
        chunk = distinct[s:s + CHUNK]
        key = chunk_key(backbone, resolution, chunk)
        path = root / f"{backbone}-{resolution}" / f"{key}.npy"
        feats = _load(path, len(chunk))
        if feats is None:
            with locked(path.with_suffix(".lock")):
                feats = _load(path, len(chunk))  # another process may have written it meanwhile
                if feats is None:
                    if net is None:
                        net = build_network({"backbone": backbone, "resolution": resolution,
                                             "columns": ["p"], "n_out": 1}, pretrained=True).eval()
                        net.to(device)
                    # (on a GPU: the same numbers up to float rounding, so the cache
                    # does not depend on where a chunk was computed)
                    feats = pooled_rows(net["backbone"], pd.DataFrame({"p": chunk}), ["p"],
                                        resolution, device)
                    _save(path, feats)
        table.update(zip(chunk, feats))
    blocks = [np.stack([table[v if isinstance(v, str) else ""] for v in col]) if col else
              np.zeros((0, FEATURE_DIM), dtype=np.float32) for col in values]
    return np.concatenate(blocks, axis=1).astype(np.float32)


def _load(path: Path, n: int) -> np.ndarray | None:
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return feats if feats.shape == (n, FEATURE_DIM) else None


def _save(path: Path, feats: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, feats.astype(np.float32))
    os.replace(tmp, path)
