"""The on-disk store of sentence embeddings, shared by every process of every run.

Trial children, refits, Ray workers (which are not forked from the driver) and later runs
read a text's embedding here instead of loading the encoder again. The store is keyed by
the backbone's weights identity (:attr:`automl.text_backbones.Backbone.key`) and each
text's hash; it is cut into :data:`SHARDS` files by the first byte of the hash, so a
lookup reads only the shards its texts fall in.

Writes are atomic (a temporary file renamed over the shard) and serialised per shard by a
file lock, so concurrent writers merge rather than overwrite each other; readers take no
lock. The folder is ``$AUTOML_CACHE_DIR/text-embeddings`` (default
``~/.cache/automl/text-embeddings``); entries can be deleted at any time. An unwritable
folder is logged once and the run goes on with the embeddings in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from automl.disk_cache import CACHE_ENV, cache_root, locked

log = logging.getLogger("automl")
FORMAT = "v1"  # bump when the stored vectors change meaning
SHARDS = 64
_warned: set[str] = set()


def root() -> Path:
    """The store's folder (not created)."""
    return cache_root() / "text-embeddings"


def folder(backbone_key: str) -> Path:
    """The folder of one backbone's weights: a readable name plus a hash of its key."""
    short = backbone_key.split("@", 1)[0].split(":", 1)[0] or "backbone"
    digest = hashlib.sha256(f"{FORMAT}\0{backbone_key}".encode()).hexdigest()[:16]
    return root() / f"{short}-{digest}"


def shard_of(digest: bytes) -> int:
    return digest[0] * SHARDS // 256


def _shard_path(backbone_key: str, shard: int) -> Path:
    return folder(backbone_key) / f"{shard:02x}.npz"


def _read(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            digests, vectors = f["digests"], f["vectors"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if digests.ndim != 2 or vectors.ndim != 2 or len(digests) != len(vectors):
        return None
    return digests, vectors


def load(backbone_key: str, digests: Iterable[bytes]) -> dict[bytes, np.ndarray]:
    """The stored vectors of whichever ``digests`` are on disk."""
    found: dict[bytes, np.ndarray] = {}
    wanted = set(digests)
    for shard in sorted({shard_of(d) for d in wanted}):
        content = _read(_shard_path(backbone_key, shard))
        if content is None:
            continue
        for d, vec in zip(content[0], content[1]):
            key = d.tobytes()
            if key in wanted:
                found[key] = vec
    return found


def store(backbone_key: str, vectors: dict[bytes, np.ndarray]) -> bool:
    """Add ``vectors`` (text hash -> embedding) to the store; False when it cannot be written."""
    if not vectors:
        return True
    target = folder(backbone_key)
    by_shard: dict[int, dict[bytes, np.ndarray]] = {}
    for d, vec in vectors.items():
        by_shard.setdefault(shard_of(d), {})[d] = vec
    try:
        target.mkdir(parents=True, exist_ok=True)
        for shard, new in by_shard.items():
            path = _shard_path(backbone_key, shard)
            with locked(path.with_suffix(".lock")):
                merged: dict[bytes, np.ndarray] = {}
                old = _read(path) if path.exists() else None
                if old is not None and old[1].shape[1] == next(iter(new.values())).shape[0]:
                    merged = {d.tobytes(): v for d, v in zip(old[0], old[1])}
                merged.update(new)
                keys = list(merged)
                digests = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
                np.savez(tmp, digests=digests,
                         vectors=np.stack([merged[k] for k in keys]).astype(np.float32))
                os.replace(tmp, path)
    except OSError as exc:
        where = str(target)
        if where not in _warned:
            _warned.add(where)
            log.warning("text embeddings are kept in memory only: cannot write the cache folder "
                        "%s (%s); set %s to a writable folder", where, exc.strerror or exc, CACHE_ENV)
        return False
    return True
