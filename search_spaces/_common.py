"""Helpers shared by the search spaces."""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution

from automl.contracts import DataInfo


def class_weight(info: DataInfo) -> dict[str, CategoricalDistribution]:
    """Class weighting searched for classifiers: none or balanced."""
    if not info.task.is_classification:
        return {}
    return {"class_weight": CategoricalDistribution([None, "balanced"])}


TEXT_PARAM = "text_features"
TEXT_CHOICES = ("tfidf", "embed", "tfidf+embed")
TEXT_DEFAULT = "tfidf+embed"


def text_features(info: DataInfo) -> dict[str, CategoricalDistribution]:
    """How text columns are represented, searched when the run has sentence embeddings:
    TF-IDF, the backbone's embeddings, or both side by side."""
    if not info.text_backbone or not info.schema.columns_of("text"):
        return {}
    return {TEXT_PARAM: CategoricalDistribution(list(TEXT_CHOICES))}


def with_text(space: dict, info: DataInfo) -> dict:
    """A learner's space plus the text representation (when searched)."""
    return {**space, **text_features(info)}


def with_text_default(config: dict, info: DataInfo) -> dict:
    """A configuration plus the default text representation (when searched)."""
    return {**config, **({TEXT_PARAM: TEXT_DEFAULT} if text_features(info) else {})}


def clip(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def fit_to_space(params: dict, space: dict) -> dict:
    """Clip a configuration into the space's bounds (bounds depend on the data's size)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, dist in space.items():
        value = params[key]
        if isinstance(dist, IntDistribution):
            value = int(min(max(int(round(value)), dist.low), dist.high))
        elif isinstance(dist, FloatDistribution):
            value = float(min(max(float(value), dist.low), dist.high))
        elif isinstance(dist, CategoricalDistribution) and value not in dist.choices:
            value = dist.choices[0]
        out[key] = value
    return out
