"""Preprocessing pipelines, one style per learner family, built from the schema.

Styles are open: :func:`register_style` adds one, which a trainer names in its ``style``.

Every transformer here is fitted inside a trial on the training part only, so
validation rows never leak into imputation, encoding or scaling.

Styles:
    ``tree``: numbers as they are (missing values stay missing), low-cardinality
    categoricals as ordinal codes, high-cardinality ones target-encoded, datetimes
    expanded, texts as TF-IDF reduced by SVD. Dense output.
    ``linear``: numbers imputed and standardised, with 0/1 flags where values are often
    missing,
    categoricals one-hot encoded (rare levels grouped), high-cardinality target-encoded,
    texts as sparse TF-IDF.

Text columns may also (or instead) be represented by a pretrained sentence encoder's
embeddings (``text="embed"`` or ``"tfidf+embed"``, see :mod:`automl.text_embeddings`),
standardised for the ``linear`` style.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
    TargetEncoder,
)

from automl.exceptions import ConfigError
from automl.schema import FeatureSchema

MAX_ORDINAL_LEVELS = 250  # HistGradientBoosting takes at most 255 bins per categorical
# The tree style keeps a categorical of more than HIGH_CARDINALITY levels as codes for the
# trees' own categorical splits (LightGBM, CatBoost) when it has at most this many levels and
# this many training rows a level on average; otherwise it is target-encoded. storm_wind's
# storm names (260 levels, 15,630 rows): LightGBM's default scored test RMSE 3.53 with
# native splits against 3.96 target-encoded (session 12's note).
MAX_NATIVE_LEVELS = 1024
NATIVE_ROWS_PER_LEVEL = 20
DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour", "days")


def datetime_features(X: Any) -> np.ndarray:
    """Expand datetime columns into numeric parts (missing stays missing)."""
    frame = pd.DataFrame(X)
    parts = []
    for col in frame.columns:
        s = pd.to_datetime(frame[col], errors="coerce")
        days = (s - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86400.0
        parts += [s.dt.year, s.dt.month, s.dt.day, s.dt.day_of_week, s.dt.hour, days]
    if not parts:
        return np.empty((len(frame), 0))
    return np.column_stack([p.to_numpy(dtype=float, na_value=np.nan) for p in parts])


def datetime_feature_names(transformer: Any, input_features: Any) -> np.ndarray:
    return np.asarray([f"{c}_{p}" for c in input_features for p in DATETIME_PARTS], dtype=object)


class TextFeatures(TransformerMixin, BaseEstimator):
    """TF-IDF on one text column, optionally reduced to dense SVD components.

    Example:
        >>> TextFeatures(n_components=2).fit_transform(pd.Series(["a b", "b c", "c d"])).shape
        (3, 2)
    """

    def __init__(self, n_components: int | None = 20, max_features: int = 20000) -> None:
        self.n_components = n_components
        self.max_features = max_features

    def _docs(self, X: Any) -> list[str]:
        s = X.iloc[:, 0] if isinstance(X, pd.DataFrame) else pd.Series(np.asarray(X).ravel())
        return s.fillna("").astype(str).tolist()

    def fit(self, X: Any, y: Any = None) -> TextFeatures:
        docs = self._docs(X)
        self.vectorizer_ = TfidfVectorizer(
            max_features=self.max_features, ngram_range=(1, 2), sublinear_tf=True,
            token_pattern=r"(?u)\b\w+\b",
        )
        try:
            tfidf = self.vectorizer_.fit_transform(docs)
        except ValueError:  # empty vocabulary: only empty strings
            self.vectorizer_ = TfidfVectorizer(analyzer="char", ngram_range=(1, 1))
            tfidf = self.vectorizer_.fit_transform([d or " " for d in docs])
        self.svd_ = None
        if self.n_components:
            k = min(self.n_components, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
            if k >= 1:
                self.svd_ = TruncatedSVD(n_components=k, random_state=0).fit(tfidf)
        self.n_out_ = self.svd_.n_components if self.svd_ is not None else (
            tfidf.shape[1] if not self.n_components else 0)
        return self

    def transform(self, X: Any) -> Any:
        tfidf = self.vectorizer_.transform(self._docs(X))
        if self.svd_ is not None:
            return self.svd_.transform(tfidf)
        if self.n_components:
            return np.zeros((tfidf.shape[0], 0))
        return tfidf

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([f"text{i}" for i in range(self.n_out_)], dtype=object)


class MissingFlags(TransformerMixin, BaseEstimator):
    """0/1 columns saying where a value is missing, for columns missing often enough.

    Unlike ``SimpleImputer(add_indicator=True)`` followed by scaling, a flag stays 0/1 (a
    flag set in 1 of 275 rows would be scaled to 16 standard deviations and let a weakly
    regularised model stake a near-certain prediction on one row), and a column gets a flag
    only when at least ``min_count`` training rows miss it, as one-hot levels need a
    minimum frequency. A row missing everything then falls back on the medians.

    Example:
        >>> MissingFlags(min_count=2).fit_transform(np.array([[1, np.nan], [np.nan, np.nan], [3, 4.]]))
        array([[1.],
               [1.],
               [0.]])
    """

    def __init__(self, min_count: int = 5) -> None:
        self.min_count = min_count

    def fit(self, X: Any, y: Any = None) -> MissingFlags:
        frame = pd.DataFrame(X)
        self.n_features_in_ = frame.shape[1]
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.columns_ = np.flatnonzero(frame.isna().sum(axis=0).to_numpy() >= self.min_count)
        return self

    def transform(self, X: Any) -> np.ndarray:
        return pd.DataFrame(X).iloc[:, self.columns_].isna().to_numpy(dtype=np.float64)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = input_features if input_features is not None else getattr(
            self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)])
        return np.asarray([f"{names[i]}_missing" for i in self.columns_], dtype=object)


def numeric_steps(numeric: list[str]) -> list[tuple[str, Any, Any]]:
    """Numbers for models that need them complete: median-imputed and standardised, plus
    0/1 flags where values are often missing (:class:`MissingFlags`)."""
    if not numeric:
        return []
    return [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("miss", MissingFlags(), numeric)]


def _ordinal() -> OrdinalEncoder:
    return OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan,
        min_frequency=None, dtype=np.float64,
    )


def _target_encoder(task: Any, seed: int) -> TargetEncoder:
    # The task decides the encoding: "auto" would read an integer-valued regression target
    # as hundreds of classes and emit one column per class.
    value = getattr(task, "value", task)
    target_type = {"regression": "continuous", "binary": "binary",
                   "multiclass": "multiclass"}.get(str(value), "auto")
    return TargetEncoder(target_type=target_type, cv=KFold(5, shuffle=True, random_state=seed))


def preprocess_key(style: str, text: str = "tfidf") -> str:
    """The shared-preprocessing cache key of a style and text representation."""
    return style if text == "tfidf" else f"{style}|{text}"


def text_variants(info: Any) -> tuple[str, ...]:
    """The text representations a run's trials may ask for (see ``search_spaces._common``)."""
    if getattr(info, "text_backbone", None) and info.schema.columns_of("text"):
        return ("tfidf", "embed", "tfidf+embed")
    return ("tfidf",)


def _text_steps(texts: list[str], style: str, text: str,
                backbone: str | None) -> list[tuple[str, Any, Any]]:
    parts = set(text.split("+"))
    unknown = parts - {"tfidf", "embed"}
    if unknown or ("embed" in parts and not backbone):
        raise ValueError(f"text representation {text!r} needs tfidf and/or embed with a backbone "
                         f"(backbone={backbone!r})")
    steps: list[tuple[str, Any, Any]] = []
    for i, col in enumerate(texts):
        if "tfidf" in parts:
            steps.append((f"text{i}", TextFeatures(n_components=20 if style == "tree" else None),
                          [col]))
        if "embed" in parts:
            from automl.text_embeddings import TextEmbedding

            emb: Any = TextEmbedding(backbone=str(backbone))
            if style != "tree":
                emb = make_pipeline(emb, StandardScaler())
            steps.append((f"emb{i}", emb, [col]))
    return steps


class StyleBuilder(Protocol):
    """Builds the (unfitted) preprocessing of one style for a schema."""

    def __call__(self, schema: FeatureSchema, *, seed: int, n_rows: int, task: Any, text: str,
                 backbone: str | None) -> Any: ...


_STYLES: dict[str, StyleBuilder] = {}


def register_style(name: str, builder: StyleBuilder) -> StyleBuilder:
    """Make ``name`` a preprocessing style a trainer can declare (``style = name``).

    ``builder(schema, *, seed, n_rows, task, text, backbone)`` returns an unfitted
    scikit-learn transformer of the raw frame; the search fits it once per split, on the
    training part only, and shares it among the trials of every trainer of that style. A
    saved model holds it, so its classes must be core types or the trainer's
    ``saved_types``.

    Example:
        >>> register_style("numbers_only", lambda schema, **kw: ColumnTransformer(
        ...     [("num", "passthrough", schema.columns_of("numeric"))]))  # doctest: +ELLIPSIS
        <function <lambda> at ...>
        >>> "numbers_only" in styles()
        True
        >>> _STYLES.pop("numbers_only")  # doctest: +ELLIPSIS
        <function <lambda> at ...>
    """
    _STYLES[name] = builder
    return builder


def styles() -> list[str]:
    """The registered preprocessing styles."""
    return list(_STYLES)


def make_preprocessor(schema: FeatureSchema, style: str, *, seed: int = 0,
                      n_rows: int = 1000, task: Any = None, text: str = "tfidf",
                      backbone: str | None = None) -> Any:
    """Build the preprocessing of ``style`` for the inferred schema.

    Text columns get ``text``: ``tfidf``, ``embed`` (the ``backbone``'s sentence embeddings)
    or ``tfidf+embed``.
    """
    if style not in _STYLES:
        raise ConfigError(f"unknown preprocessing style {style!r}; choose from "
                          f"{', '.join(_STYLES)} or add one with "
                          "automl.preprocessing.register_style.")
    return _STYLES[style](schema, seed=seed, n_rows=n_rows, task=task, text=text,
                          backbone=backbone)


def _categoricals(schema: FeatureSchema) -> tuple[list[str], list[str]]:
    """Low- and high-cardinality categoricals: high ones (or more levels than a tree's
    categorical bins) are target-encoded with scikit-learn's cross-fitted
    :class:`TargetEncoder`."""
    categorical = [c.name for c in schema.columns if c.kind == "categorical"]
    high = [c.name for c in schema.columns
            if c.kind == "categorical" and (c.high_cardinality or c.n_unique > MAX_ORDINAL_LEVELS)]
    return [c for c in categorical if c not in high], high


def _tree_categoricals(schema: FeatureSchema, n_rows: int) -> tuple[list[str], list[str]]:
    """The tree style's (coded, target-encoded) categoricals: see :data:`MAX_NATIVE_LEVELS`."""
    coded, encoded = [], []
    for c in schema.columns:
        if c.kind != "categorical":
            continue
        native = not c.high_cardinality or (
            c.n_unique <= MAX_NATIVE_LEVELS and c.n_unique * NATIVE_ROWS_PER_LEVEL <= n_rows)
        (coded if native else encoded).append(c.name)
    return coded, encoded


def _fill() -> SimpleImputer:
    return SimpleImputer(strategy="constant", fill_value="__missing__")


def _column_transformer(steps: list[tuple[str, Any, Any]], sparse_threshold: float
                        ) -> ColumnTransformer:
    if not steps:
        steps.append(("none", "drop", []))
    return ColumnTransformer(steps, remainder="drop", sparse_threshold=sparse_threshold,
                             verbose_feature_names_out=True)


def tree_preprocessor(schema: FeatureSchema, *, seed: int = 0, n_rows: int = 1000,
                      task: Any = None, text: str = "tfidf",
                      backbone: str | None = None) -> ColumnTransformer:
    """The ``tree`` style: numbers as they are, ordinal categoricals last (dense)."""
    numeric = schema.columns_of("numeric", "boolean")
    low, high = _tree_categoricals(schema, n_rows)
    dates = schema.columns_of("datetime")
    steps: list[tuple[str, Any, Any]] = []
    if numeric:
        steps.append(("num", "passthrough", numeric))
    if dates:
        steps.append(("date", FunctionTransformer(
            datetime_features, feature_names_out=datetime_feature_names), dates))
    if high:
        steps.append(("hicat", make_pipeline(_fill(), _target_encoder(task, seed)), high))
    steps += _text_steps(schema.columns_of("text"), "tree", text, backbone)
    if low:  # last, so that categorical codes are the final columns
        steps.append(("cat", _ordinal(), low))
    return _column_transformer(steps, 0.0)


def linear_preprocessor(schema: FeatureSchema, *, seed: int = 0, n_rows: int = 1000,
                        task: Any = None, text: str = "tfidf",
                        backbone: str | None = None) -> ColumnTransformer:
    """The ``linear`` style: imputed, standardised numbers, one-hot categoricals."""
    low, high = _categoricals(schema)
    dates = schema.columns_of("datetime")
    texts = schema.columns_of("text")
    steps = numeric_steps(schema.columns_of("numeric", "boolean"))
    if dates:
        steps.append(("date", make_pipeline(
            FunctionTransformer(datetime_features, feature_names_out=datetime_feature_names),
            SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), dates))
    if low:
        min_freq = 5 if n_rows >= 500 else 1
        steps.append(("cat", make_pipeline(_fill(), OneHotEncoder(
            handle_unknown="infrequent_if_exist", min_frequency=min_freq, max_categories=30,
            sparse_output=False)), low))
    if high:
        steps.append(("hicat", make_pipeline(_fill(), _target_encoder(task, seed), StandardScaler()),
                      high))
    steps += _text_steps(texts, "linear", text, backbone)
    return _column_transformer(steps, 0.3 if texts else 0.0)


register_style("tree", tree_preprocessor)
register_style("linear", linear_preprocessor)


def categorical_indices(pre: ColumnTransformer, max_levels: int | None = None) -> list[int]:
    """Positions of the ordinal-coded categorical outputs of a fitted ``tree`` preprocessor;
    with ``max_levels``, only those of at most that many levels (HistGradientBoosting's
    limit: the others stay codes it splits on as numbers)."""
    names = pre.get_feature_names_out()
    positions = [i for i, n in enumerate(names) if str(n).startswith("cat__")]
    if max_levels is None or not positions:
        return positions
    levels = [len(c) for c in pre.named_transformers_["cat"].categories_]
    return [i for i, n in zip(positions, levels) if n <= max_levels]
