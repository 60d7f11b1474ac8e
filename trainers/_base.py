"""Shared pieces of the scikit-learn style trainers."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from automl.contracts import DataInfo, FitData, Fitted, Reporter, Task, Trainer, as_fitted
from automl.metrics import predict_scores
from automl.preprocessing import make_preprocessor, preprocess_key
from search_spaces._common import TEXT_PARAM, with_text, with_text_default


def preprocess(data: FitData, style: str, params: Mapping[str, Any] | None = None
               ) -> tuple[Any, Any, Any]:
    """The fold's fitted preprocessing of ``style`` (and of the configuration's text
    representation): shared from the search's cache when the search prepared it, else
    fitted here on the training part only."""
    text = str((params or {}).get(TEXT_PARAM, "tfidf"))
    cached = data.preprocessed.get(preprocess_key(style, text))
    if cached is not None and data.X_valid is not None:
        return cached
    pre = make_preprocessor(data.info.schema, style, seed=data.seed,
                            n_rows=len(data.y_train), task=data.info.task, text=text,
                            backbone=data.info.text_backbone)
    Xt = pre.fit_transform(data.X_train, data.y_train)
    Xv = pre.transform(data.X_valid) if data.X_valid is not None else None
    return pre, Xt, Xv


class PreprocessedTrainer(Trainer):
    """A trainer whose model follows a preprocessing step of a given style.

    Subclasses set ``name``, ``tasks``, ``style``, ``space_fn``, ``default_fn`` (and
    ``portfolio_fn``, ``saved_types``: see :class:`automl.contracts.Trainer`) and implement
    :meth:`build` (and optionally :meth:`fit_model` for staged fitting).
    """

    name: ClassVar[str]
    tasks: ClassVar[frozenset[Task]]
    style: ClassVar[str | None] = "tree"

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return with_text(type(self).space_fn(info), info)  # type: ignore[attr-defined]

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return with_text_default(type(self).default_fn(info), info)  # type: ignore[attr-defined]

    portfolio_fn: ClassVar[Any] = None

    def portfolio(self, info: DataInfo) -> list[dict[str, Any]]:
        """Extra strong configurations tried after every learner's default (optional)."""
        fn = type(self).portfolio_fn
        return list(fn(info)) if fn is not None else []

    def build(self, params: Mapping[str, Any], data: FitData) -> Any:
        raise NotImplementedError

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        pre, Xt, Xv = preprocess(data, str(self.style), params)
        model = self.build(params, data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message=".*n_iter_no_change.*")
            fitted = as_fitted(self.fit_model(model, pre, Xt, Xv, data, reporter))
        return Fitted(Pipeline([("preprocess", pre), ("model", fitted.estimator)]),
                      fitted.n_iterations)

    def fit_model(self, model: Any, pre: Any, Xt: Any, Xv: Any, data: FitData,
                  reporter: Reporter) -> Any:
        """Fit the bare model on the preprocessed parts; returns it, or a :class:`Fitted`
        of it with the rounds early stopping kept."""
        kwargs = {}
        if data.sample_weight is not None:
            kwargs["sample_weight"] = data.sample_weight
        return model.fit(Xt, data.y_train, **kwargs)


def score_model(model: Any, Xv: Any, data: FitData) -> float:
    """The trial's metric of a bare (already preprocessed) model on the validation part."""
    pred = predict_scores(model, Xv, data.info.task, data.info.n_classes)
    return data.metric(data.y_valid, pred, data.info.n_classes)


def fits_before_deadline(data: FitData, start: float, done: int, more: int) -> bool:
    """Whether ``more`` stages (trees, iterations) fit before the trial's soft deadline, at
    the pace of the ``done`` stages fitted since ``start``: a staged trainer stops before a
    step it cannot finish rather than run past its time (and be killed)."""
    per_stage = (time.monotonic() - start) / max(1, done)
    return time.monotonic() + 0.5 * per_stage * more <= data.deadline


def past_deadline(data: FitData) -> bool:
    """True once the trial's soft deadline has passed (stop adding stages, keep the model)."""
    return time.monotonic() > data.deadline


def n_threads(data: FitData) -> int:
    return max(1, int(data.n_threads))

