"""The MLP's input: the cleaned table as a standardised numeric block, then one
ordinal code per embedded (low-cardinality) categorical column."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler

from automl.contracts import Task
from automl.preprocessing import (
    TextFeatures,
    _categoricals,
    _target_encoder,
    datetime_feature_names,
    datetime_features,
    numeric_steps,
)
from automl.schema import FeatureSchema


def make_net_preprocessor(schema: FeatureSchema, *, seed: int = 0, n_rows: int = 1000,
                          task: Task | None = None) -> ColumnTransformer:
    """Dense standardised numeric block first, then one ordinal code per embedded categorical.

    Codes are ``-1`` for a missing or unseen level (the network adds one, so 0 is "unknown").
    """
    numeric = schema.columns_of("numeric", "boolean")
    dates = schema.columns_of("datetime")
    texts = schema.columns_of("text")
    low, high = _categoricals(schema)  # the linear style's split: high ones target-encoded
    steps: list[tuple[str, Any, Any]] = []
    steps += numeric_steps(numeric)
    if dates:
        steps.append(("date", make_pipeline(
            FunctionTransformer(datetime_features, feature_names_out=datetime_feature_names),
            SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), dates))
    if high:
        steps.append(("hicat", make_pipeline(
            SimpleImputer(strategy="constant", fill_value="__missing__"),
            _target_encoder(task, seed),  # the task, not "auto", decides the target type
            StandardScaler()), high))
    for i, col in enumerate(texts):
        steps.append((f"text{i}", make_pipeline(TextFeatures(n_components=20), StandardScaler()), [col]))
    if low:  # last: the network reads the final len(low) columns as codes
        steps.append(("cat", OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
            min_frequency=5 if n_rows >= 500 else None, dtype=np.float64), low))
    if not steps:
        steps.append(("none", "drop", []))
    return ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)


def cardinalities(pre: ColumnTransformer) -> list[int]:
    """Embedding rows per coded column of a fitted preprocessor: its levels plus "unknown"."""
    if "cat" not in pre.named_transformers_:
        return []
    return [len(c) + 1 for c in pre.named_transformers_["cat"].categories_]


def split_inputs(X: Any, n_num: int, cardinalities: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed matrix -> (float32 numeric block, int64 codes with 0 for unknown)."""
    X = np.asarray(X, dtype=np.float64)
    x_num = np.nan_to_num(X[:, :n_num], nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    codes = np.nan_to_num(X[:, n_num:], nan=-1.0) + 1
    codes = np.clip(codes, 0, np.asarray(cardinalities, dtype=np.float64) - 1) if cardinalities else codes
    return x_num, codes.astype(np.int64).reshape(len(X), len(cardinalities))
