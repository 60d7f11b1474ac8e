"""scikit-learn learners: linear models, forests, HistGradientBoosting, k-NN.

Iterative learners report to the pruner: forests after each quarter of their trees,
HistGradientBoosting after each doubling of its iterations (steps are the same for
every trial, so the pruner compares like with like).
"""

from __future__ import annotations

import time

from collections.abc import Mapping
from typing import Any

from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from automl.contracts import FitData, Fitted, Task
from automl.preprocessing import MAX_ORDINAL_LEVELS, categorical_indices
from search_spaces import forest, hist_gb, knn, linear
from trainers._base import (
    PreprocessedTrainer,
    fits_before_deadline,
    n_threads,
    past_deadline,
    score_model,
)

CLF = frozenset({Task.BINARY, Task.MULTICLASS})
REG = frozenset({Task.REGRESSION})
ALL = CLF | REG
HGB_STAGES = (8, 16, 32, 64, 128, 256, 512, 1024)  # small first stages: wide data is slow
FOREST_STEPS = 4
FOREST_FIRST = 8
# One forest's trees in memory. Trees grown to small leaves on many rows are large (about
# 1.8 MB each on 16,000 regression rows): a 300-tree forest took 540 MB, copied again when
# pickled for the driver, while trees past the first few dozen add little. A forest stops
# adding trees at this size; its pace and its size are both known after the first stage.
# The trial's process holds about 1.5 times this (the allocator's slack) on top of its
# base of about 30 MB: at 64 MB a forest trial was the run's peak on most small tables
# (cps_wage: 140 MB for the trial, 2.0 times FLAML's whole run); at 16 MB, 80 to 150 trees
# on a few thousand rows, some 25 on 22,000 regression rows (issue 12: memory).
FOREST_MAX_MB = 16
_HGB = "sklearn.ensemble._hist_gradient_boosting."


def _clf(data: FitData) -> bool:
    return data.info.task.is_classification


class LogisticTrainer(PreprocessedTrainer):
    name = "logistic"
    tasks = CLF
    style = "linear"
    space_fn = staticmethod(linear.logistic_space)
    default_fn = staticmethod(linear.logistic_default)
    portfolio_fn = staticmethod(linear.logistic_portfolio)
    saved_types = frozenset({"sklearn.linear_model._logistic.LogisticRegression"})

    def build(self, params: Mapping[str, Any], data: FitData) -> Any:
        return LogisticRegression(C=params["C"], class_weight=params.get("class_weight"),
                                  max_iter=500, random_state=data.seed)


class RidgeTrainer(PreprocessedTrainer):
    name = "ridge"
    tasks = REG
    style = "linear"
    space_fn = staticmethod(linear.ridge_space)
    default_fn = staticmethod(linear.ridge_default)
    portfolio_fn = staticmethod(linear.ridge_portfolio)
    saved_types = frozenset({"sklearn.linear_model._ridge.Ridge"})

    def build(self, params: Mapping[str, Any], data: FitData) -> Any:
        return Ridge(alpha=params["alpha"])


class ElasticNetTrainer(PreprocessedTrainer):
    name = "elasticnet"
    tasks = REG
    style = "linear"
    space_fn = staticmethod(linear.elasticnet_space)
    default_fn = staticmethod(linear.elasticnet_default)
    saved_types = frozenset({"sklearn.linear_model._coordinate_descent.ElasticNet"})

    def build(self, params: Mapping[str, Any], data: FitData) -> Any:
        return ElasticNet(alpha=params["alpha"], l1_ratio=params["l1_ratio"], max_iter=2000,
                          selection="random", random_state=data.seed)


class KNNTrainer(PreprocessedTrainer):
    name = "knn"
    tasks = ALL
    style = "linear"
    space_fn = staticmethod(knn.space)
    default_fn = staticmethod(knn.default)
    saved_types = frozenset({
        "sklearn.neighbors._classification.KNeighborsClassifier",
        "sklearn.neighbors._regression.KNeighborsRegressor",
        # the neighbour search structure auto picks, its metric (p = 1 or 2), sparse inputs
        "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "scipy.sparse._csr.csr_matrix",
    })

    def build(self, params: Mapping[str, Any], data: FitData) -> Any:
        k = max(1, min(int(params["n_neighbors"]), len(data.y_train)))
        cls = KNeighborsClassifier if _clf(data) else KNeighborsRegressor
        return cls(n_neighbors=k, weights=params["weights"], p=params["p"], n_jobs=n_threads(data))

    def fit_model(self, model, pre, Xt, Xv, data, reporter):  # noqa: D102 - no sample weights
        return model.fit(Xt, data.y_train)


class _ForestTrainer(PreprocessedTrainer):
    tasks = ALL
    space_fn = staticmethod(forest.space)
    default_fn = staticmethod(forest.default)
    portfolio_fn = staticmethod(forest.portfolio)
    classes: tuple[type, type]

    def build(self, params: Mapping[str, Any], data: FitData) -> Any:
        clf_cls, reg_cls = self.classes
        common = dict(max_features=params["max_features"], min_samples_leaf=params["min_samples_leaf"],
                      n_jobs=n_threads(data), random_state=data.seed, warm_start=True,
                      n_estimators=int(params["n_estimators"]))
        if _clf(data):
            return clf_cls(criterion=params["criterion"], class_weight=params.get("class_weight"),
                           **common)
        return reg_cls(criterion=params.get("criterion", "squared_error"), **common)

    def fit_model(self, model, pre, Xt, Xv, data, reporter):  # noqa: D102
        total = int(model.n_estimators)
        # a few trees first: their pace says whether the next quarter fits the deadline
        targets = sorted({min(FOREST_FIRST, total)} |
                         {max(1, total * s // FOREST_STEPS) for s in range(1, FOREST_STEPS + 1)})
        start = time.monotonic()
        for step, target in enumerate(targets, start=1):
            done = len(getattr(model, "estimators_", ()))
            if done and not fits_before_deadline(data, start, done, target - done):
                break
            if done and target > (room := trees_that_fit(model, FOREST_MAX_MB)):
                if room > done:
                    model.set_params(n_estimators=room)
                    model.fit(Xt, data.y_train, sample_weight=data.sample_weight)
                break
            model.set_params(n_estimators=target)
            model.fit(Xt, data.y_train, sample_weight=data.sample_weight)
            if Xv is not None and step < len(targets):
                reporter.report(step, score_model(model, Xv, data))
            if past_deadline(data):  # keep the trees grown so far
                break
        return model


def trees_that_fit(model: Any, max_mb: float) -> int:
    """How many trees like the fitted ones fit in ``max_mb`` (nodes and their values)."""
    from sklearn.tree._tree import NODE_DTYPE

    trees = [est.tree_ for est in model.estimators_]
    used = sum(t.node_count * NODE_DTYPE.itemsize + t.value.nbytes for t in trees)
    return max(len(trees), int(max_mb * 2**20 * len(trees) / max(1, used)))


class RandomForestTrainer(_ForestTrainer):
    name = "random_forest"
    classes = (RandomForestClassifier, RandomForestRegressor)
    saved_types = frozenset({
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._tree.Tree",
    })


class ExtraTreesTrainer(_ForestTrainer):
    name = "extra_trees"
    classes = (ExtraTreesClassifier, ExtraTreesRegressor)
    saved_types = frozenset({
        "sklearn.ensemble._forest.ExtraTreesClassifier", "sklearn.ensemble._forest.ExtraTreesRegressor",
        "sklearn.tree._classes.ExtraTreeClassifier", "sklearn.tree._classes.ExtraTreeRegressor",
        "sklearn.tree._tree.Tree",
    })


class HistGBTrainer(PreprocessedTrainer):
    name = "hist_gb"
    tasks = ALL
    space_fn = staticmethod(hist_gb.space)
    default_fn = staticmethod(hist_gb.default)
    portfolio_fn = staticmethod(hist_gb.portfolio)
    saved_types = frozenset({
        _HGB + "gradient_boosting.HistGradientBoostingClassifier",
        _HGB + "gradient_boosting.HistGradientBoostingRegressor",
        _HGB + "binning._BinMapper", _HGB + "predictor.TreePredictor",
        "sklearn.preprocessing._label.LabelEncoder", "numpy.random._generator.Generator",
        # the default loss of each task and its link
        "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError", "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss._loss.CyHalfMultinomialLoss", "sklearn._loss._loss.CyHalfSquaredError",
        "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.link.IdentityLink", "sklearn._loss.link.Interval",
    })
    # kept as partial(check_array, dtype=[float64], ensure_all_finite=False) when it has
    # categorical features
    saved_functions = frozenset({"sklearn.utils.validation.check_array"})

    def build(self, params: Mapping[str, Any], data: FitData) -> Any:
        common = dict(
            learning_rate=params["learning_rate"], max_leaf_nodes=params["max_leaf_nodes"],
            min_samples_leaf=params["min_samples_leaf"],
            l2_regularization=params["l2_regularization"], max_features=params["max_features"],
            random_state=data.seed, warm_start=True,
        )
        if _clf(data):
            return HistGradientBoostingClassifier(class_weight=params.get("class_weight"), **common)
        return HistGradientBoostingRegressor(**common)

    def fit_model(self, model, pre, Xt, Xv, data, reporter):  # noqa: D102
        model.set_params(categorical_features=categorical_indices(pre, MAX_ORDINAL_LEVELS) or None)
        if Xv is None:  # refit: as many iterations as the trials found useful
            iters = int(data.n_iterations or 100)
            model.set_params(max_iter=max(1, iters), early_stopping=False)
            return model.fit(Xt, data.y_train, sample_weight=data.sample_weight)
        model.set_params(early_stopping=True, n_iter_no_change=20, scoring="loss")
        start = time.monotonic()
        for stage in HGB_STAGES:
            done = int(getattr(model, "n_iter_", 0))
            if done and not fits_before_deadline(data, start, done, stage - done):
                break
            model.set_params(max_iter=stage)
            model.fit(Xt, data.y_train, sample_weight=data.sample_weight,
                      X_val=Xv, y_val=data.y_valid)
            stopped = model.n_iter_ < stage
            reporter.report(stage, score_model(model, Xv, data))
            if stopped or past_deadline(data):
                break
        return Fitted(model, int(model.n_iter_))
