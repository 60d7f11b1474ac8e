"""The scikit-learn API: :class:`AutoMLClassifier` and :class:`AutoMLRegressor`.

They follow the estimator contract (``__init__`` stores keyword arguments, ``fit``
returns ``self``, learned attributes end in ``_``) and pass scikit-learn's
``check_estimator`` (see ``tests/test_api.py`` for the few checks that are skipped and why).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from automl.config import SearchConfig
from automl.contracts import Task
from automl.data import Target
from automl.exceptions import DataError

log = logging.getLogger("automl")


class _AutoMLBase(BaseEstimator):
    _task_kind = "classification"

    def __init__(self, *, time_budget: float | None = 60.0, n_trials: int | None = None,
                 metric: str = "auto", sampler: str = "tpe", pruner: str = "median",
                 include: list[str] | None = None, exclude: list[str] | None = None,
                 cv: int | str = "auto", seed: int = 0, storage: str | None = None,
                 study_name: str | None = None, n_jobs: int = 1, isolate: bool = False,
                 memory_limit_mb: float | None = None, executor: str | None = None,
                 ray_address: str | None = None, cpus_per_trial: float | None = None,
                 gpus_per_trial: float = 0.0, verbose: int = 0) -> None:
        self.time_budget = time_budget
        self.n_trials = n_trials
        self.metric = metric
        self.sampler = sampler
        self.pruner = pruner
        self.include = include
        self.exclude = exclude
        self.cv = cv
        self.seed = seed
        self.storage = storage
        self.study_name = study_name
        self.n_jobs = n_jobs
        self.isolate = isolate
        self.memory_limit_mb = memory_limit_mb
        self.executor = executor
        self.ray_address = ray_address
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.non_deterministic = False
        return tags

    def _validate_xy(self, X: Any, y: Any) -> tuple[pd.DataFrame, np.ndarray]:
        """Validate ``X`` and ``y`` together; arrays must be numeric, frames may be mixed."""
        if isinstance(X, pd.DataFrame):
            if y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
            y_arr = column_or_1d(check_array(y, ensure_2d=False, dtype=None, ensure_all_finite=False),
                                 warn=True)
            check_consistent_length(X, y_arr)
            if X.shape[0] == 0 or X.shape[1] == 0:
                raise ValueError(f"Found array with shape {X.shape}; at least 1 sample and 1 feature are required.")
            self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
            self.n_features_in_ = X.shape[1]
            self._numeric_input = False
            return X.rename(columns=str).reset_index(drop=True), y_arr
        arr, y_arr = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype="numeric",
                                   y_numeric=isinstance(self, RegressorMixin))
        self._numeric_input = True
        return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])]), y_arr

    def _frame(self, X: Any) -> pd.DataFrame:
        check_is_fitted(self, "model_")
        if isinstance(X, pd.DataFrame):
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                                 f"expecting {self.n_features_in_} features as input.")
            return X.rename(columns=str).reset_index(drop=True)
        arr = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype="numeric")
        return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])

    def _config(self) -> SearchConfig:
        return SearchConfig(
            task="auto", metric=self.metric, time_budget=self.time_budget, n_trials=self.n_trials,
            sampler=self.sampler, pruner=self.pruner, seed=self.seed, storage=self.storage,
            study_name=self.study_name, n_jobs=self.n_jobs, include=self.include,
            exclude=self.exclude, cv=self.cv, memory_limit_mb=self.memory_limit_mb,
            isolate=self.isolate or self.executor in ("local", "ray"),
            executor=self.executor or ("local" if self.isolate else "inprocess"),
            ray_address=self.ray_address, cpus_per_trial=self.cpus_per_trial,
            gpus_per_trial=self.gpus_per_trial,
        )

    def _fit(self, Xf: pd.DataFrame, target: Target) -> Any:
        from automl import engine
        from automl.leaderboard import leaderboard
        from automl.schema import FeatureSchema, infer_schema

        schema: FeatureSchema = infer_schema(Xf)
        if self._numeric_input:  # an array has no identifier or text columns: keep every column
            for col in schema.columns:
                if col.kind in ("identifier", "constant", "boolean", "empty"):
                    col.kind = "numeric" if col.kind != "empty" else "empty"
        config = self._config()
        name = self.study_name or "automl"
        import optuna

        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.INFO if self.verbose else optuna.logging.ERROR)
        try:
            with warnings.catch_warnings():
                if not self.verbose:
                    warnings.simplefilter("ignore")
                config.validate()
                problem = engine.prepare_problem(Xf, target, config, schema=schema)
                result = engine.fit_problem(problem, config, target_name="target",
                                            storage_url=self.storage, study_name=name,
                                            resume=self.storage is not None)
        finally:
            optuna.logging.set_verbosity(level)
        self.model_ = result.model
        self.study_ = result.study
        self.leaderboard_ = leaderboard(result.study, problem.metric.greater_is_better)
        from automl.study import best_trials, learner_params

        best = best_trials(result.study, problem.metric, 1)[0]
        self.best_learner_, self.best_params_ = learner_params(best)
        self.best_score_ = float(best.value)
        # the heaviest member (refit on all rows, or its bagged fold models; the model itself
        # when no ensemble was chosen); predictions use the whole ensemble, see `ensemble_`
        self.best_estimator_ = result.model.members[0]
        self.ensemble_ = result.model.description
        return self



class AutoMLClassifier(ClassifierMixin, _AutoMLBase):
    """Searches classifiers and their hyperparameters with Optuna; refits the best.

    Example:
        >>> from sklearn.datasets import load_breast_cancer
        >>> X, y = load_breast_cancer(return_X_y=True, as_frame=True)
        >>> clf = AutoMLClassifier(n_trials=3, time_budget=None).fit(X, y)  # doctest: +SKIP
        >>> clf.leaderboard_.head()  # doctest: +SKIP
    """

    def fit(self, X: Any, y: Any) -> AutoMLClassifier:
        Xf, y_arr = self._validate_xy(X, y)
        _check_rows(Xf)
        kind = type_of_target(y_arr, input_name="y")
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Unknown label type: {kind!r}; AutoMLClassifier needs class labels "
                             "(use AutoMLRegressor for continuous targets).")
        self.classes_, encoded = np.unique(y_arr, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_[0]!r}); classification needs two or more.")
        task = Task.BINARY if len(self.classes_) == 2 else Task.MULTICLASS
        return self._fit(Xf, Target(encoded.astype(np.int64), task, list(range(len(self.classes_))), 0))

    def predict_proba(self, X: Any) -> np.ndarray:
        Xf = self._frame(X)
        return self.model_.predict_scores(Xf)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class AutoMLRegressor(RegressorMixin, _AutoMLBase):
    """Searches regressors and their hyperparameters with Optuna; refits the best.

    Example:
        >>> from sklearn.datasets import load_diabetes
        >>> X, y = load_diabetes(return_X_y=True)
        >>> reg = AutoMLRegressor(n_trials=3, time_budget=None).fit(X, y)  # doctest: +SKIP
    """

    def fit(self, X: Any, y: Any) -> AutoMLRegressor:
        Xf, y_arr = self._validate_xy(X, y)
        _check_rows(Xf)
        try:
            y_num = y_arr.astype(float)
        except (TypeError, ValueError):
            raise ValueError("AutoMLRegressor needs a numeric y; use AutoMLClassifier for labels.") from None
        if not np.all(np.isfinite(y_num)):
            raise ValueError("Input y contains NaN or infinity; drop those rows before fitting.")
        return self._fit(Xf, Target(y_num, Task.REGRESSION, None, 0))

    def predict(self, X: Any) -> np.ndarray:
        Xf = self._frame(X)
        return np.asarray(self.model_.predict_scores(Xf), dtype=float)


def _check_rows(X: pd.DataFrame) -> None:
    if len(X) < 2:
        raise ValueError(f"got {len(X)} sample; at least 2 samples (rows) are needed to fit.")


__all__ = ["AutoMLClassifier", "AutoMLRegressor", "DataError"]
