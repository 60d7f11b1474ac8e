"""Column kinds: inferred once from the training data, then applied to every frame.

The same :class:`FeatureSchema` cleans the training frame and every frame given to
``predict``, so a changed dtype at predict time (numbers read as text, ...) is coerced
back to what the model was trained on.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

Kind = Literal[
    "numeric", "categorical", "boolean", "datetime", "text", "identifier", "constant", "empty",
    "image",
]
USED_KINDS = ("numeric", "categorical", "boolean", "datetime", "text", "image")
HIGH_CARDINALITY = 50
HUGE = 1e30  # numbers beyond are clipped: their squares overflow scaling and float32 learners

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}
_ID_NAME = re.compile(r"(^|[_\W])(id|idx|index|key|uuid|guid)$|[a-z]Id$|ID$", re.IGNORECASE)


@dataclass
class ColumnInfo:
    name: str
    kind: Kind
    dtype: str
    n_unique: int
    missing_fraction: float
    high_cardinality: bool = False
    note: str = ""


@dataclass
class FeatureSchema:
    """The inferred kind of every input column, in the order of the training data."""

    columns: list[ColumnInfo] = field(default_factory=list)

    def columns_of(self, *kinds: str) -> list[str]:
        return [c.name for c in self.columns if c.kind in kinds]

    @property
    def used(self) -> list[str]:
        return self.columns_of(*USED_KINDS)

    @property
    def dropped(self) -> list[ColumnInfo]:
        return [c for c in self.columns if c.kind not in USED_KINDS]

    def get(self, name: str) -> ColumnInfo:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls([ColumnInfo(**c) for c in data["columns"]])

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.columns:
            out[c.kind] = out.get(c.kind, 0) + 1
        return out


def _as_str(s: pd.Series) -> pd.Series:
    return s.dropna().astype(str).str.strip()


def _bool_like(values: Iterable[str]) -> bool:
    lowered = {v.lower() for v in values}
    return len(lowered) == 2 and lowered <= (_TRUE | _FALSE) and bool(lowered & _TRUE) and bool(
        lowered & _FALSE
    )


def _looks_datetime(text: pd.Series) -> bool:
    sample = text.sample(min(len(text), 500), random_state=0) if len(text) > 500 else text
    if not sample.str.contains(r"\d[-/:.]\d|\d{4}[-/]", regex=True).mean() > 0.9:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.9)


def infer_column(name: str, s: pd.Series) -> ColumnInfo:
    """Infer the kind of one column from its values."""
    n = len(s)
    nonnull = s.dropna()
    missing = float(1 - len(nonnull) / n) if n else 1.0
    odd = ""
    if pd.api.types.is_float_dtype(s):
        values = nonnull.to_numpy(dtype=float)
        finite = np.isfinite(values)
        n_inf, n_huge = int((~finite).sum()), int((np.abs(values[finite]) > HUGE).sum())
        nonnull = nonnull[finite]
        odd = "; ".join(([f"{n_inf} infinite value(s) read as missing"] if n_inf else [])
                        + ([f"{n_huge} value(s) beyond +/-{HUGE:g} clipped"] if n_huge else []))
    n_unique = int(nonnull.nunique())
    info = ColumnInfo(name, "numeric", str(s.dtype), n_unique, missing, note=odd)
    if len(nonnull) == 0:
        info.kind = "empty"
        return info
    if n_unique == 1 and missing == 0:
        info.kind = "constant"
        return info
    if pd.api.types.is_bool_dtype(s):
        info.kind = "boolean"
        return info
    unique_ratio = n_unique / max(1, len(nonnull))
    if pd.api.types.is_numeric_dtype(s):
        integer = pd.api.types.is_integer_dtype(s) or bool(
            np.all(np.mod(nonnull.to_numpy(dtype=float), 1) == 0)
        )
        if integer and unique_ratio > 0.98 and n >= 20:
            values = np.sort(nonnull.to_numpy(dtype=float))
            consecutive = bool(np.all(np.diff(values) == 1))
            if _ID_NAME.search(name) or consecutive:
                info.kind = "identifier"
                info.note = "unique integer per row"
        if n_unique == 2 and info.kind == "numeric":
            info.kind = "boolean" if set(nonnull.unique()) <= {0, 1} else "numeric"
        return info
    text = _as_str(s)
    if _image_paths(s):  # see "Image columns" below
        info.kind = "image"
        return info
    if pd.api.types.is_datetime64_any_dtype(s):
        info.kind = "datetime"
        return info
    if n_unique == 2 and _bool_like(text.unique()):
        info.kind = "boolean"
        return info
    numeric = pd.to_numeric(text, errors="coerce")
    parsed = float(numeric.notna().mean())
    leading_zero = bool(text.str.match(r"^0\d+$").any())
    if parsed >= 0.95 and not leading_zero:
        info.kind = "numeric"
        if parsed < 1:
            info.note = f"mixed types: {int(numeric.isna().sum())} non-numeric values read as missing"
        return info
    if _looks_datetime(text):
        info.kind = "datetime"
        return info
    tokens = text.str.split().str.len().mean()
    if tokens >= 4 and unique_ratio > 0.3:
        info.kind = "text"
        return info
    if unique_ratio > 0.98 and n >= 50 and tokens < 2:
        info.kind = "identifier"
        info.note = "a distinct value in nearly every row"
        return info
    info.kind = "categorical"
    info.high_cardinality = n_unique > HIGH_CARDINALITY
    return info


def infer_schema(X: pd.DataFrame, overrides: Mapping[str, str] | None = None) -> FeatureSchema:
    """Infer the kind of every column of ``X``; ``overrides`` sets the kind of named columns.

    Example:
        >>> import pandas as pd
        >>> infer_schema(pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": ["x", "y", "x"]})).summary()
        {'numeric': 1, 'categorical': 1}
    """
    schema = FeatureSchema([infer_column(str(c), X[c]) for c in X.columns])
    for name, kind in (overrides or {}).items():
        if name in X.columns:
            schema.get(str(name)).kind = kind  # type: ignore[assignment]
    return schema


def _to_bool(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return pd.to_numeric(s, errors="coerce").astype(float)
    lowered = s.astype("string").str.strip().str.lower()
    out = pd.Series(np.nan, index=s.index, dtype=float)
    out[lowered.isin(_TRUE).fillna(False).to_numpy(dtype=bool)] = 1.0
    out[lowered.isin(_FALSE).fillna(False).to_numpy(dtype=bool)] = 0.0
    return out


def clean_frame(X: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Return the used columns of ``X`` coerced to the kinds in ``schema``.

    Numbers become float (``inf`` becomes missing), booleans 0/1, datetimes
    ``datetime64``, categoricals and texts strings (missing stays missing).
    """
    out: dict[str, pd.Series] = {}
    for col in schema.columns:
        if col.kind not in USED_KINDS:
            continue
        s = X[col.name]
        if col.kind == "numeric":
            v = pd.to_numeric(s, errors="coerce").astype(float)
            out[col.name] = v.where(np.isfinite(v)).clip(-HUGE, HUGE)
        elif col.kind == "boolean":
            out[col.name] = _to_bool(s)
        elif col.kind == "datetime":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dt = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
            out[col.name] = dt.dt.tz_localize(None)
        else:
            str_s = s.astype("string").str.strip()
            out[col.name] = str_s.astype(object).where(str_s.notna(), np.nan)
    return pd.DataFrame(out, index=X.index)


# ---------------------------------------------------------------- Image columns
# A column of paths to existing image files is the kind "image" (read by the image
# learners; tabular learners skip it). Tables read by ``automl.images.read_input`` hold
# absolute paths; relative ones here are relative to the working directory.

def _image_paths(s: pd.Series) -> bool:
    from pathlib import Path

    from automl.images import looks_like_image_column

    return looks_like_image_column(s, Path.cwd())
