"""Training images: decoded once per trial, augmented per batch with numpy and Pillow.

Augmentation of strength ``s`` in [0, 1]: a random resized crop keeping ``1 - 0.75 s`` to
all of the area (aspect ratio 3/4 to 4/3), a horizontal flip with probability ``s / 2 +
0.25`` (0 at ``s = 0``), and brightness, contrast and saturation jitter of ``+/- 0.4 s``.
At ``s = 0`` a training image is exactly its evaluation view (the centre crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainers.image_backbone import center_crop, read_for_eval, resized, to_unit_range

_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def decode_rows(frame: Any, columns: Sequence[str], resolution: int) -> list[list[np.ndarray]]:
    """Every row's images, resized (shorter side ``1.14 * resolution``), as uint8 arrays."""
    out = []
    for i in range(len(frame)):
        row = []
        for c in columns:
            path = frame[c].iloc[i]
            if isinstance(path, str) and path:
                try:
                    row.append(resized(path, resolution))
                    continue
                except Exception:  # noqa: BLE001 - re-read for the one-line error naming the row
                    read_for_eval(path, resolution, i + 1)
            row.append(read_for_eval(None, resolution, i + 1))
        out.append(row)
    return out


def random_resized_crop(a: np.ndarray, resolution: int, min_area: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = a.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(min_area, 1.0)
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = Image.fromarray(a[top:top + ch, left:left + cw])
            return np.asarray(crop.resize((resolution, resolution), Image.Resampling.BILINEAR))
    return center_crop(a, resolution)


def color_jitter(a: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    x = a.astype(np.float32)
    b, c, s = (float(rng.uniform(1 - amount, 1 + amount)) for _ in range(3))
    x = x * b
    gray = x @ _GRAY
    x = (x - gray.mean()) * c + gray.mean()
    gray = (x @ _GRAY)[..., None]
    x = gray + (x - gray) * s
    return np.clip(x, 0, 255).astype(np.uint8)


def augment(a: np.ndarray, resolution: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """One augmented ``resolution``-square view of a resized uint8 image."""
    if strength <= 0:
        return center_crop(a, resolution)
    out = random_resized_crop(a, resolution, 1.0 - 0.75 * strength, rng)
    if rng.random() < 0.25 + 0.5 * strength:
        out = out[:, ::-1]
    return color_jitter(out, 0.4 * strength, rng)


class ImageRows:
    """A map-style dataset of decoded rows; ``__getitems__`` builds a whole batch.

    Training rows (``train=True``) are augmented with a seeded generator; evaluation rows
    are centre crops. Items are ``(images, target, weight)`` tensors, or ``(images,)``.
    """

    def __init__(self, rows: list[list[np.ndarray]], resolution: int, *, target: Any = None,
                 weights: Any = None, strength: float = 0.0, train: bool = False, seed: int = 0) -> None:
        self.rows, self.resolution = rows, resolution
        self.target, self.weights = target, weights
        self.strength, self.train = float(strength), train
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return tuple(t[0] for t in self.__getitems__([i]))

    def __getitems__(self, idx: list[int]) -> tuple[Any, ...]:
        import torch

        res = self.resolution
        views = [[augment(a, res, self.strength, self.rng) if self.train else center_crop(a, res)
                  for a in self.rows[i]] for i in idx]
        images = torch.from_numpy(np.ascontiguousarray(to_unit_range(np.asarray(views, dtype=np.uint8))))
        if self.target is None:
            return (images,)
        index = torch.as_tensor(idx)
        return images, self.target[index], self.weights[index]
