"""CatBoost with native categoricals, early stopping on the validation part and pruning.

Low-cardinality categoricals reach CatBoost as categories (its ordered target statistics
replace our ordinal codes); high-cardinality ones arrive target-encoded like for every tree
learner. Early stopping and the pruner use CatBoost's own metric where it equals ours.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from automl.contracts import DataInfo, FitData, Fitted, Reporter, Task, Trainer
from automl.exceptions import require
from automl.preprocessing import categorical_indices
from search_spaces import catboost as cb_space
from search_spaces._common import with_text, with_text_default
from trainers._base import preprocess

REPORT_EVERY = 10
MAX_ROUNDS = 2000
EARLY_STOP = 50
MIN_DELTA = 1e-4  # an improvement smaller than this over EARLY_STOP rounds counts as none

# our metric -> CatBoost's evaluation metric of the same value and direction
_NATIVE = {
    ("roc_auc", Task.BINARY): "AUC",
    ("log_loss", Task.BINARY): "Logloss",
    ("log_loss", Task.MULTICLASS): "MultiClass",
    ("accuracy", Task.BINARY): "Accuracy",
    ("accuracy", Task.MULTICLASS): "Accuracy",
    ("rmse", Task.REGRESSION): "RMSE",
    ("mae", Task.REGRESSION): "MAE",
}


class CatBoostModel(BaseEstimator):
    """A fitted CatBoost model behind the ``tree`` preprocessing.

    That preprocessing emits ordinal codes as floats (NaN for missing or unseen levels);
    CatBoost wants categories as integers, so the coded columns are converted here, the
    same way when fitting and predicting.
    """

    def __init__(self, model: Any = None, cat_columns: list[int] | None = None) -> None:
        self.model = model
        self.cat_columns = cat_columns

    def _frame(self, X: Any) -> Any:
        import pandas as pd

        frame = pd.DataFrame(np.asarray(X, dtype=np.float64))
        for j in self.cat_columns or []:
            frame[j] = np.nan_to_num(frame[j].to_numpy(), nan=-1.0).astype(np.int64)
        return frame

    def fit(self, X: Any, y: Any, **kwargs: Any) -> CatBoostModel:
        self.model.fit(self._frame(X), y, **kwargs)
        if hasattr(self.model, "classes_"):
            self.classes_ = np.asarray(self.model.classes_)
        return self

    def predict(self, X: Any) -> np.ndarray:
        pred = np.asarray(self.model.predict(self._frame(X)))
        return pred.ravel() if pred.ndim > 1 and pred.shape[1] == 1 else pred

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self._frame(X)))


class CatBoostTrainer(Trainer):
    name = "catboost"
    tasks = frozenset({Task.BINARY, Task.MULTICLASS, Task.REGRESSION})
    style = "tree"
    saved_types = frozenset({"trainers.catboost_trainer.CatBoostModel", "catboost.core.CatBoostClassifier",
                             "catboost.core.CatBoostRegressor"})

    def __init__(self) -> None:
        if importlib.util.find_spec("catboost") is None:
            require("catboost", "catboost")  # a one-line error naming the extra to install

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return with_text(cb_space.space(info), info)

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return with_text_default(cb_space.default(info), info)

    def portfolio(self, info: DataInfo) -> list[dict[str, Any]]:
        return cb_space.portfolio(info)

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        import catboost

        task = data.info.task
        pre, Xt, Xv = preprocess(data, self.style, params)
        cats = categorical_indices(pre)
        native = _NATIVE.get((data.metric.name, task))
        common: dict[str, Any] = dict(
            learning_rate=params["learning_rate"], depth=params["depth"],
            l2_leaf_reg=params["l2_leaf_reg"], random_strength=params["random_strength"],
            bagging_temperature=params["bagging_temperature"], random_seed=data.seed,
            thread_count=max(1, data.n_threads), cat_features=cats or None,
            allow_writing_files=False, verbose=0,
        )
        if native:
            common["eval_metric"] = native
        if task.is_classification:
            if task is Task.MULTICLASS:
                common["loss_function"] = "MultiClass"
            if params.get("class_weight") == "balanced":
                common["auto_class_weights"] = "Balanced"
            model: Any = catboost.CatBoostClassifier(**common)
        else:
            model = catboost.CatBoostRegressor(loss_function="RMSE", **common)
        kwargs: dict[str, Any] = {}
        if data.sample_weight is not None:
            kwargs["sample_weight"] = data.sample_weight
        if data.X_valid is None:
            model.set_params(iterations=max(1, int(data.n_iterations or 300)))
            wrapped = CatBoostModel(model, cats).fit(Xt, data.y_train, **kwargs)
            return Fitted(Pipeline([("preprocess", pre), ("model", wrapped)]))

        wrapped = CatBoostModel(model, cats)
        model.set_params(iterations=MAX_ROUNDS, od_type="Iter", od_wait=EARLY_STOP,
                         use_best_model=True)
        callback = _Report(reporter, native, data.deadline, data.metric.greater_is_better)
        wrapped.fit(Xt, data.y_train, eval_set=(wrapped._frame(Xv), data.y_valid),
                    callbacks=[callback], **kwargs)
        callback.reraise()
        kept = int(model.get_best_iteration() or model.tree_count_ - 1) + 1
        return Fitted(Pipeline([("preprocess", pre), ("model", wrapped)]), kept)


class _Report:
    """CatBoost's per-iteration callback: report the validation metric, stop at the deadline.

    CatBoost turns an exception raised in a callback into a ``CatBoostError``, so a prune
    (or a failure the reporter raises) is kept here, training is stopped, and
    :meth:`reraise` raises it again once ``fit`` has returned.
    """

    def __init__(self, reporter: Reporter, native: str | None, deadline: float,
                 higher_is_better: bool) -> None:
        self.reporter = reporter
        self.native = native
        self.deadline = deadline
        self.sign = 1.0 if higher_is_better else -1.0
        self.best_before = -np.inf  # best signed value up to EARLY_STOP rounds ago
        self.stopped_by: BaseException | None = None

    def after_iteration(self, info: Any) -> bool:
        it = info.iteration + 1
        history = info.metrics.get("validation", {}).get(self.native) if self.native else None
        if history and it % REPORT_EVERY == 0:
            try:
                self.reporter.report(it, float(history[-1]))
            except Exception as exc:  # noqa: BLE001 - TrialPruned or TrialFailed, raised after fit
                self.stopped_by = exc
                return False
        if history and len(history) > EARLY_STOP:
            # CatBoost's detector stops on no improvement at all; a loss creeping towards 0
            # on separable data would run every round, so tiny gains count as none
            self.best_before = max(self.best_before, self.sign * history[-EARLY_STOP - 1])
            recent = max(self.sign * v for v in history[-EARLY_STOP:])
            if recent - self.best_before < MIN_DELTA:
                return False
        return time.monotonic() <= self.deadline  # False stops training, keeping the model

    def reraise(self) -> None:
        if self.stopped_by is not None:
            raise self.stopped_by
