"""The cache folder on disk that runs share, and the lock its writers take.

Frozen image features (:mod:`trainers.image_features`) and sentence embeddings
(:mod:`automl.text_cache`) are computed once and kept under ``$AUTOML_CACHE_DIR``
(default ``~/.cache/automl``), each in a folder of its own; entries can be deleted at any
time. Writers of one file serialise on an ``flock`` of a lock file beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "AUTOML_CACHE_DIR"


def cache_root(given: str | None = None) -> Path:
    """The cache folder: ``given``, else ``$AUTOML_CACHE_DIR``, else ``~/.cache/automl``."""
    given = given or os.environ.get(CACHE_ENV)
    return Path(given) if given else Path.home() / ".cache" / "automl"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
