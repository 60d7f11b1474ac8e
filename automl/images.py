"""Images as input: columns of image file paths, and folders of one sub-folder per class.

A column of paths is resolved against the folder of the table that holds it (or kept if
absolute) and checked before any search: a missing or unreadable image is a one-line
:class:`DataError` naming the file and its row. :func:`open_rgb` turns any image Pillow
reads (grayscale, palette, RGBA, 16-bit, GIF, EXIF-rotated) into 8-bit RGB. Needs
Pillow (``automl[image]``) only to open images; nothing here imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.exceptions import DataError, require

log = logging.getLogger("automl")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm", ".pbm", ".jfif"})
FOLDER_IMAGE_COLUMN = "image"  # the path column of a table read from a folder of class folders
FOLDER_TARGET = "label"  # its target column


def has_image_suffix(value: str) -> bool:
    return Path(value).suffix.lower() in IMAGE_SUFFIXES


def _pil() -> Any:
    return require("PIL.Image", "image")


def open_rgb(path: str | Path) -> Any:
    """The image at ``path`` as an 8-bit RGB ``PIL.Image`` (alpha composited on white).

    Example:
        >>> open_rgb("photo.png").mode  # doctest: +SKIP
        'RGB'
    """
    Image = _pil()
    from PIL import ImageOps

    with Image.open(path) as img:
        img.seek(0)  # the first frame of an animation
        img = ImageOps.exif_transpose(img) or img
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grayscale
            a = np.asarray(img, dtype=np.float64)
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
            img = Image.fromarray(np.nan_to_num(a).astype(np.uint8), mode="L")
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def _row_error(path: str, row: int, source: str, problem: str) -> DataError:
    where = f" of {source}" if source else ""
    return DataError(f"image '{path}' in row {row}{where} {problem}; fix the path or remove the row.")


def check_image(path: str, row: int, source: str = "") -> None:
    """Raise a one-line :class:`DataError` if ``path`` is missing or not a readable image."""
    if not Path(path).is_file():
        raise _row_error(path, row, source, "does not exist")
    Image = _pil()
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - reading the header is the check
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise _row_error(path, row, source, f"cannot be read as an image ({type(exc).__name__})") from None


def resolve_paths(values: pd.Series, base: Path) -> pd.Series:
    """Relative paths joined to ``base``; absolute ones and missing values kept."""
    def one(v: Any) -> Any:
        if not isinstance(v, str) or not v.strip():
            return v
        p = Path(v.strip()).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())
    return values.map(one)


def looks_like_image_column(values: pd.Series, base: Path, sample: int = 50) -> bool:
    """True when (nearly) every sampled value names an existing file with an image suffix."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    # the first values only (checking every row's type took 2.6 s on 500,000 rows)
    head = values.dropna().iloc[:4 * sample]
    head = head[head.map(lambda v: isinstance(v, str))].iloc[:sample]
    if len(head) == 0:
        return False
    head = head.astype(str)
    if not head.map(has_image_suffix).mean() >= 0.9:
        return False
    return bool(resolve_paths(head, base).map(lambda p: Path(p).is_file()).mean() >= 0.9)


def prepare_image_columns(df: pd.DataFrame, base: Path, columns: Sequence[str] = (),
                          source: str = "") -> tuple[pd.DataFrame, list[str]]:
    """Resolve and check the image columns of ``df``: ``columns`` (given), plus any column
    whose values name image files when none is given. Returns the frame and their names."""
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise DataError(f"image column(s) {unknown} not found in {source or 'the table'}; "
                        f"the columns are: {', '.join(map(str, df.columns[:10]))}.")
    names = list(columns) or [str(c) for c in df.columns if looks_like_image_column(df[c], base)]
    if not names:
        return df, []
    df = df.copy()
    for name in names:
        df[name] = resolve_paths(df[name], base)
        for row, path in enumerate(df[name].tolist(), start=1):
            if isinstance(path, str) and path.strip():
                check_image(path, row, source)
    log.info("image column(s): %s (paths relative to %s)", ", ".join(names), base)
    return df, names


def read_image_folder(folder: str | Path, column: str = FOLDER_IMAGE_COLUMN,
                      target: str = FOLDER_TARGET) -> pd.DataFrame:
    """A table of the images under ``folder``: one sub-folder per class (the ``target``), or
    loose images (no target, for predicting). Paths are absolute, sorted.

    Example:
        >>> read_image_folder("pets/").head(2)  # doctest: +SKIP
                        image label
        0  /data/pets/cat/1.jpg   cat
    """
    root = Path(folder).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and has_image_suffix(p.name)
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"folder '{folder}' holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                        "give a folder with one sub-folder of images per class.")
    nested = [p for p in files if p.parent != root]
    df = pd.DataFrame({column: [str(p) for p in files]})
    if nested and len(nested) == len(files):
        df[target] = [p.relative_to(root).parts[0] for p in files]
    elif nested:
        raise DataError(f"folder '{folder}' mixes images at its top level with class sub-folders; "
                        "move every image into the sub-folder of its class.")
    return df


def read_input(path: str | Path, image_columns: Sequence[str] = (), *,
               target: str = FOLDER_TARGET) -> tuple[pd.DataFrame, list[str]]:
    """Read a table (CSV/Parquet, image paths resolved against its folder) or a folder of
    images. ``image_columns`` are checked as images; without them any column of image
    paths is found. Returns the frame and the names of its image columns."""
    from automl.data import read_table

    p = Path(path)
    if p.is_dir():
        column = image_columns[0] if len(image_columns) == 1 else FOLDER_IMAGE_COLUMN
        df = read_image_folder(p, column=column, target=target)
        return prepare_image_columns(df, p.resolve(), [column], source=str(p))
    df = read_table(p)
    return prepare_image_columns(df, p.resolve().parent, image_columns, source=str(p))


def read_fit_input(path: str | Path, target: str | None, image_columns: Sequence[str] | None,
                   config_extra: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """``automl fit``'s data and target name; given image columns are recorded as such in
    ``config_extra['column_kinds']`` (a schema override)."""
    from automl.exceptions import ConfigError

    folder = Path(path).is_dir()
    if target is None and not folder:
        raise ConfigError("--target is required for a table; name the column to predict "
                          "(only a folder of class folders has a default target).")
    df, names = read_input(path, image_columns or (), target=target or FOLDER_TARGET)
    if folder and (target or FOLDER_TARGET) not in df.columns:
        raise DataError(f"folder '{path}' has no class sub-folders; put each class's images in a "
                        "sub-folder named after the class.")
    if image_columns:
        config_extra.setdefault("column_kinds", {}).update({c: "image" for c in names})
    return df, target or FOLDER_TARGET


def read_predict_input(path: str | Path, image_columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """``automl predict``'s data (the model's image columns resolved against the table's
    folder), and the columns to show beside the predictions (the paths of a folder's images)."""
    if not image_columns and not Path(path).is_dir():
        from automl.data import read_table

        return read_table(path), []
    df, names = read_input(path, image_columns)
    return df, (names if Path(path).is_dir() else [])
