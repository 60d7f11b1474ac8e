"""LightGBM with native categoricals, early stopping on the validation part and pruning.

Early stopping and the pruner read LightGBM's own fast metric where it equals ours
(AUC, log loss, RMSE, MAE, error rate, average precision) and a custom evaluation of
our metric otherwise, so intermediate values are always in the trial's metric.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from automl.contracts import DataInfo, FitData, Fitted, Reporter, Task, Trainer
from automl.metrics import all_class_columns
from automl.pickling import register_reducer
from automl.preprocessing import categorical_indices
from search_spaces._common import with_text, with_text_default
from trainers._base import preprocess
from search_spaces import lightgbm as lgb_space

REPORT_EVERY = 10
MAX_ROUNDS = 3000
EARLY_STOP = 50
# A model holds about 150 bytes a leaf, and twice that while train() turns it into text and
# back: 3,000 rounds of 31-leaf trees for 4 classes took a trial of 945 rows to 150 MB and
# made the run's peak (fishing_mode), 10 classes to 300 MB (digits). Rounds stop where the
# trees would hold more leaves than this (30 MB), as forests stop at FOREST_MAX_MB.
MAX_MODEL_LEAVES = 200_000
MIN_ROUNDS = 50
# After its last round a model still costs time: LightGBM's train() turns it into text and
# back (to free the training data), and the trial pickles it. About 3 us a leaf here (25,000
# 31-leaf trees of digits' 10 classes: 1.7 s and 0.7 s); the deadline keeps that much back.
FINISH_S_PER_LEAF = 4e-6

# our metric -> (LightGBM metric, transform from LightGBM's value to ours)
_NATIVE = {
    ("roc_auc", Task.BINARY): ("auc", lambda v: v),
    ("log_loss", Task.BINARY): ("binary_logloss", lambda v: v),
    ("log_loss", Task.MULTICLASS): ("multi_logloss", lambda v: v),
    ("accuracy", Task.BINARY): ("binary_error", lambda v: 1 - v),
    ("accuracy", Task.MULTICLASS): ("multi_error", lambda v: 1 - v),
    ("average_precision", Task.BINARY): ("average_precision", lambda v: v),
    ("rmse", Task.REGRESSION): ("rmse", lambda v: v),
    ("mae", Task.REGRESSION): ("l1", lambda v: v),
}


class LightGBMTrainer(Trainer):
    name = "lightgbm"
    tasks = frozenset({Task.BINARY, Task.MULTICLASS, Task.REGRESSION})
    style = "tree"
    saved_types = frozenset({"lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor",
                             "lightgbm.basic.Booster", "sklearn.preprocessing._label.LabelEncoder"})

    def space(self, info: DataInfo) -> Mapping[str, Any]:
        return with_text(lgb_space.space(info), info)

    def default(self, info: DataInfo) -> Mapping[str, Any]:
        return with_text_default(lgb_space.default(info), info)

    def portfolio(self, info: DataInfo) -> list[dict[str, Any]]:
        return lgb_space.portfolio(info)

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        import lightgbm as lgb

        register_reducer(lgb.Booster, _reduce_booster)  # the fitted model is pickled next
        task = data.info.task
        pre, Xt, Xv = preprocess(data, self.style, params)
        cats = categorical_indices(pre)
        native = _NATIVE.get((data.metric.name, task))
        common = dict(
            learning_rate=params["learning_rate"], num_leaves=params["num_leaves"],
            min_child_samples=params["min_child_samples"],
            colsample_bytree=params["colsample_bytree"], subsample=params["subsample"],
            subsample_freq=1 if params["subsample"] < 1 else 0, reg_alpha=params["reg_alpha"],
            reg_lambda=params["reg_lambda"], n_jobs=max(1, data.n_threads), random_state=data.seed,
            verbose=-1, metric=native[0] if native else "None",
        )
        if task.is_classification:
            model: Any = lgb.LGBMClassifier(class_weight=params.get("class_weight"), **common)
        else:
            model = lgb.LGBMRegressor(**common)
        fit_kwargs: dict[str, Any] = {"categorical_feature": cats or "auto",
                                      "sample_weight": data.sample_weight}
        max_rounds = max_rounds_for(params["num_leaves"], _trees_per_round(data))
        if data.X_valid is None:
            model.set_params(n_estimators=min(max_rounds, max(1, int(data.n_iterations or 100))))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(Xt, data.y_train, **fit_kwargs)
            return Fitted(Pipeline([("preprocess", pre), ("model", model)]))

        model.set_params(n_estimators=max_rounds)
        eval_metric = None if native else _custom_eval(data)
        to_ours = native[1] if native else (lambda v: v)
        last: dict[str, Any] = {}
        callbacks = [
            lgb.early_stopping(EARLY_STOP, first_metric_only=True, verbose=False),
            _report_callback(reporter, to_ours, data.deadline, last,
                             leaves_per_round=params["num_leaves"] * _trees_per_round(data)),
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xt, data.y_train, eval_set=[(Xv, data.y_valid)], eval_metric=eval_metric,
                      callbacks=callbacks, **fit_kwargs)
        best = int(model.best_iteration_ or model.n_estimators_)
        valid_scores = None
        if last.get("rounds") == best:  # the kept model is the one the scores came from
            valid_scores = _as_scores(last["preds"], task, model, data.info.n_classes)
        return Fitted(Pipeline([("preprocess", pre), ("model", model)]), best, valid_scores)


def _custom_eval(data: FitData):
    metric, task, k = data.metric, data.info.task, data.info.n_classes

    def evaluate(y_true: np.ndarray, y_pred: np.ndarray):
        if task is Task.BINARY:
            y_pred = _both_classes(y_pred)
        return f"automl_{metric.name}", metric(y_true.astype(int) if task.is_classification else y_true,
                                                y_pred, k), metric.greater_is_better

    return evaluate


def max_rounds_for(num_leaves: int, trees_per_round: int) -> int:
    """The most boosting rounds a model of ``num_leaves``-leaf trees may have (see
    :data:`MAX_MODEL_LEAVES`), never fewer than :data:`MIN_ROUNDS` nor more than
    :data:`MAX_ROUNDS`."""
    fit = MAX_MODEL_LEAVES // max(1, int(num_leaves) * int(trees_per_round))
    return min(MAX_ROUNDS, max(MIN_ROUNDS, fit))


def _trees_per_round(data: FitData) -> int:
    return data.info.n_classes if data.info.task is Task.MULTICLASS else 1


def _report_callback(reporter: Reporter, to_ours, deadline: float, last: dict[str, Any],
                     leaves_per_round: int = 0):
    """Reports every REPORT_EVERY rounds and stops at ``deadline``, less what finishing the
    model will take (:data:`FINISH_S_PER_LEAF` for each leaf it may have: a 30,000-tree
    model ran past its trial's limit after stopping at the deadline). When it stops, and at
    the last round, it keeps the booster's running validation predictions in ``last``
    (``preds``, ``rounds``): a model stopped there keeps every round, so these are its
    validation scores and the trial need not predict again (seconds on a big model)."""
    import lightgbm as lgb

    def keep_predictions(env: Any) -> None:
        def capture(preds: np.ndarray, _data: Any):
            last["preds"], last["rounds"] = np.array(preds, copy=True), env.iteration + 1
            return "automl_capture", 0.0, True

        try:
            env.model.eval_valid(capture)
        except Exception:  # noqa: BLE001 - the trial predicts as it would without them
            last.clear()

    def callback(env: Any) -> None:
        it = env.iteration + 1
        if env.evaluation_result_list and it % REPORT_EVERY == 0:
            reporter.report(it, float(to_ours(env.evaluation_result_list[0][2])))
        # (the finishing of the model one more round would make)
        out_of_time = time.monotonic() + FINISH_S_PER_LEAF * leaves_per_round * (it + 1) > deadline
        if out_of_time or it == env.end_iteration:
            keep_predictions(env)
        if out_of_time:
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    # before early stopping's (30), which raises at the last round before this could run
    callback.order = 25  # type: ignore[attr-defined]
    return callback


def _both_classes(preds: np.ndarray) -> np.ndarray:
    """LightGBM gives a binary task's positive-class probability alone: both columns."""
    return np.column_stack([1 - preds, preds]) if preds.ndim == 1 else preds


def _as_scores(preds: np.ndarray, task: Task, model: Any, n_classes: int) -> np.ndarray:
    """The booster's validation predictions in :func:`automl.metrics.predict_scores`'s form."""
    if not task.is_classification:
        return np.asarray(preds, dtype=float).ravel()
    return all_class_columns(_both_classes(preds), model.classes_, n_classes)


def _reduce_booster(booster: Any) -> tuple[Any, ...]:
    """Pickle a Booster as the text LightGBM writes itself (``save_model``), read back as
    bytes, not through ``Booster.__getstate__``'s ``model_to_string`` (a ctypes buffer,
    bytes, a decoded str, encoded again to write it): a 30,000-tree model is written in half
    the time and with 0.6 of the memory added (``benchmarks/pickle_models.py``). The rest of
    its state is pickled as ``__getstate__`` keeps it."""
    if getattr(booster, "_handle", None) is None:
        return NotImplemented  # nothing fitted: pickled as usual
    fd, path = tempfile.mkstemp(prefix="automl-lgb-", suffix=".txt")
    os.close(fd)
    try:
        booster.save_model(path, num_iteration=-1)  # every round, as __getstate__ keeps them
        with open(path, "rb") as fh:
            text = fh.read()
    finally:
        os.unlink(path)
    state = {k: v for k, v in booster.__dict__.items()
             if k not in ("_handle", "train_set", "valid_sets")}
    return (booster_from_text, (text, state))


def booster_from_text(text: bytes, state: dict[str, Any]) -> Any:
    """A Booster from its model text and the rest of its state (see :func:`_reduce_booster`)."""
    import lightgbm as lgb

    booster = lgb.Booster(model_str=text.decode("utf-8"))
    booster.__dict__.update(state)
    return booster
