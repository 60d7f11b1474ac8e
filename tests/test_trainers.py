"""One contract test run over every registered trainer, on every task it claims."""

import importlib.util

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import BaseDistribution

from automl.config import SearchConfig
from automl.contracts import FitData, NullReporter, Task, Trainer
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.metrics import predict_scores
from automl.registry import builtin, get_trainer, input_kinds

HAS_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("lightning") is not None
HAS_TEXT = HAS_TORCH and importlib.util.find_spec("sentence_transformers") is not None
NEEDS = {"mlp": HAS_TORCH, "text_finetune": HAS_TEXT}


class Recorder:
    def __init__(self):
        self.values = []

    def report(self, step, value):
        self.values.append((step, value))


def _problem(frame, target, task="auto"):
    X, t = prepare_target(frame, target, task)
    return prepare_problem(X, t, SearchConfig(n_trials=1).validate())


@pytest.fixture(params=["binary", "multiclass", "regression"])
def problem(request, mixed_frame, regression_frame):
    if request.param == "binary":
        return _problem(mixed_frame, "label")
    if request.param == "multiclass":
        df = mixed_frame.copy()
        df["label"] = np.where(df["x1"] > 0.7, "high", np.where(df["x1"] < -0.3, "low", "mid"))
        return _problem(df, "label")
    return _problem(regression_frame, "target")


# CatBoost's multiclass fit takes ~40 s on 2 cores: its contract runs in the slow step
# (its pruning test below stays in the default suite)
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "catboost" else n
                                  for n in builtin() if NEEDS.get(n, True)])
def test_trainer_contract(name, problem):
    trainer = get_trainer(name)
    assert isinstance(trainer, Trainer)
    if problem.info.task not in trainer.tasks:
        pytest.skip(f"{name} does not do {problem.info.task.value}")
    if not input_kinds(name) & {c.kind for c in problem.info.schema.columns}:
        pytest.skip(f"{name} reads none of this table's column kinds (tests/test_image.py runs it)")
    if name == "text_finetune" and not problem.info.schema.columns_of("text"):
        pytest.skip("text_finetune learns from text columns; this table has none")
    space = trainer.space(problem.info)
    default = trainer.default(problem.info)
    assert set(default) == set(space), "the default must set every searched parameter"
    for key, dist in space.items():
        assert isinstance(dist, BaseDistribution)
        assert dist._contains(dist.to_internal_repr(default[key])), f"default {key} outside its space"
    tr, va = problem.splits.folds[0]
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, seed=0, n_threads=1)
    reporter = Recorder()
    fitted = trainer.fit(dict(default), data, reporter)
    est = fitted.estimator
    pred = predict_scores(est, problem.X.iloc[va], problem.info.task, problem.info.n_classes)
    score = problem.metric(problem.y[va], pred, problem.info.n_classes)
    assert np.isfinite(score)
    if problem.info.task.is_classification:
        assert pred.shape == (len(va), problem.info.n_classes)
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)
    if fitted.valid_scores is not None:  # the trial scores these instead of predicting
        np.testing.assert_allclose(fitted.valid_scores, pred, rtol=1e-6, atol=1e-9)
    for step, value in reporter.values:  # intermediate values are in the trial's metric
        assert isinstance(step, int) and np.isfinite(value)
    if name in ("lightgbm", "catboost", "hist_gb", "random_forest", "extra_trees", "mlp",
                "text_finetune"):
        assert reporter.values, f"{name} is iterative and must report to the pruner"
    # a refit (no validation part) works too, with the iterations found by the trial
    refit = FitData(problem.X, problem.y, None, None, problem.info, problem.metric,
                    n_iterations=fitted.n_iterations)
    est = trainer.fit(dict(default), refit, NullReporter()).estimator
    assert len(predict_scores(est, problem.X.head(5), problem.info.task, problem.info.n_classes)) == 5


@pytest.mark.parametrize("stop", ["deadline", "last-round"])
def test_lightgbm_hands_back_the_validation_scores_of_the_model_it_kept(problem, stop, monkeypatch):
    """Stopped at its deadline, or at its last round while still improving, LightGBM keeps
    every round, and its running validation predictions are the kept model's: the trial
    scores those instead of predicting again (3.8 s for a 3,000-tree model on flights'
    26,000 validation rows, past the trial's limit). When early stopping kept fewer rounds
    than it ran, there are none and the trial predicts."""
    import time

    from trainers import lightgbm_trainer

    trainer = get_trainer("lightgbm")
    tr, va = problem.splits.folds[0]
    deadline = float("inf")
    if stop == "deadline":
        deadline = time.monotonic() - 1  # stops after its first round
    else:
        monkeypatch.setattr(lightgbm_trainer, "MAX_ROUNDS", 7)
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, seed=0, n_threads=1, deadline=deadline)
    fitted = trainer.fit(dict(trainer.default(problem.info)), data, NullReporter())
    pred = predict_scores(fitted.estimator, problem.X.iloc[va], problem.info.task,
                          problem.info.n_classes)
    rounds = 1 if stop == "deadline" else 7
    assert (fitted.valid_scores is not None) == (fitted.n_iterations == rounds)
    if stop == "deadline" or problem.info.task is not Task.BINARY:  # AUC may plateau early
        assert fitted.valid_scores is not None
    if fitted.valid_scores is not None:
        assert fitted.valid_scores.shape == pred.shape
        np.testing.assert_allclose(fitted.valid_scores, pred, rtol=1e-6, atol=1e-9)


def test_lightgbm_keeps_back_the_time_finishing_its_model_takes(problem, monkeypatch):
    """Finishing a model (LightGBM's text round trip in train(), then the trial's pickle)
    costs time by its leaves: the deadline keeps that back, so a model whose finishing
    would outlast the deadline stops adding rounds (digits at 60 s: 30,000 trees stopped
    at the deadline, then ran past the trial's limit finishing)."""
    import time

    from trainers import lightgbm_trainer

    trainer = get_trainer("lightgbm")
    tr, va = problem.splits.folds[0]
    params = dict(trainer.default(problem.info))
    monkeypatch.setattr(lightgbm_trainer, "FINISH_S_PER_LEAF", 10.0 / params["num_leaves"])
    # ten seconds a round (a tree of num_leaves leaves, each class's for multiclass): two
    # rounds would finish past a deadline 15 s away, so the model stops after its first
    t0 = time.monotonic()
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, seed=0, n_threads=1, deadline=t0 + 15)
    fitted = trainer.fit(params, data, NullReporter())
    assert fitted.n_iterations == 1 and time.monotonic() - t0 < 10


def test_lightgbm_stops_adding_rounds_where_its_trees_would_hold_too_many_leaves(problem, monkeypatch):
    """A boosted model holds its trees' leaves (about 150 bytes each): rounds stop at
    MAX_MODEL_LEAVES, counted over every class's tree (digits' 10 classes at 3,000 rounds
    made a 300 MB trial), in a trial and in a refit alike."""
    from trainers import lightgbm_trainer

    assert lightgbm_trainer.max_rounds_for(31, 1) == lightgbm_trainer.MAX_ROUNDS
    assert lightgbm_trainer.max_rounds_for(31, 10) == lightgbm_trainer.MAX_MODEL_LEAVES // 310
    assert lightgbm_trainer.max_rounds_for(512, 50) == lightgbm_trainer.MIN_ROUNDS
    trainer = get_trainer("lightgbm")
    tr, va = problem.splits.folds[0]
    params = {**trainer.default(problem.info), "learning_rate": 0.01, "num_leaves": 8,
              "min_child_samples": 2}
    per_round = problem.info.n_classes if problem.info.task is Task.MULTICLASS else 1
    monkeypatch.setattr(lightgbm_trainer, "MIN_ROUNDS", 5)
    monkeypatch.setattr(lightgbm_trainer, "MAX_MODEL_LEAVES", 8 * per_round * 40)
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, seed=0, n_threads=1)
    fitted = trainer.fit(params, data, NullReporter())
    assert fitted.n_iterations <= 40 and fitted.estimator[-1].booster_.num_trees() <= 40 * per_round
    refit = FitData(problem.X, problem.y, None, None, problem.info, problem.metric, seed=0,
                    n_threads=1, n_iterations=500)
    booster = trainer.fit(params, refit, NullReporter()).estimator[-1].booster_
    assert booster.num_trees() == 40 * per_round


def test_lightgbm_models_pickle_as_lightgbm_writes_them(problem):
    """A trial's kept LightGBM model is pickled as the text LightGBM writes itself (one copy
    in memory, not four), and reads back to the same model: its predictions, its rounds
    and the rest of its state."""
    import pickle

    import lightgbm as lgb

    from automl import pickling

    trainer = get_trainer("lightgbm")
    tr, va = problem.splits.folds[0]
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, seed=0, n_threads=1)
    est = trainer.fit(dict(trainer.default(problem.info)), data, NullReporter()).estimator
    blob = pickling.dumps(est)
    assert b"booster_from_text" in blob and b"_handle" not in blob
    back = pickle.loads(blob)
    X = problem.X.iloc[va]
    np.testing.assert_array_equal(
        predict_scores(back, X, problem.info.task, problem.info.n_classes),
        predict_scores(est, X, problem.info.task, problem.info.n_classes))
    old, new = est[-1].booster_, back[-1].booster_
    assert isinstance(new, lgb.Booster) and new.num_trees() == old.num_trees()
    assert new.best_iteration == old.best_iteration and new.params == old.params
    assert back[-1].best_iteration_ == est[-1].best_iteration_


def test_unseen_categories_at_predict(mixed_frame):
    problem = _problem(mixed_frame, "label")
    for name in ("lightgbm", "catboost", "logistic", "random_forest", "hist_gb", "knn"):
        trainer = get_trainer(name)
        data = FitData(problem.X, problem.y, problem.X, problem.y, problem.info, problem.metric)
        est = trainer.fit(dict(trainer.default(problem.info)), data, NullReporter()).estimator
        X_new = problem.X.head(4).copy()
        X_new["color"] = ["purple", None, "red", "never-seen"]
        assert np.isfinite(predict_scores(est, X_new, problem.info.task, 2)).all(), name


@pytest.mark.parametrize("learner", ["lightgbm", "catboost"])
def test_pruning_stops_a_boosting_trial(mixed_frame, learner):
    problem = _problem(mixed_frame, "label")
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=0.99))
    trial = study.ask()
    from automl.objective import TrialReporter

    reporter = TrialReporter.for_trial(trial)
    tr, va = problem.splits.folds[0]
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric)
    trainer = get_trainer(learner)
    with pytest.raises(optuna.TrialPruned):
        trainer.fit(dict(trainer.default(problem.info)), data, reporter)
    assert trial.study.trials[0].intermediate_values


def test_catboost_gets_categories_as_integers_and_stops_at_the_deadline(mixed_frame):
    """The ordinal codes (floats, NaN for missing) reach CatBoost as integer categories;
    a trial past its soft deadline stops adding rounds and keeps its model."""
    import time

    problem = _problem(mixed_frame, "label")
    trainer = get_trainer("catboost")
    tr, va = problem.splits.folds[0]
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, deadline=time.monotonic() - 1)
    est = trainer.fit(dict(trainer.default(problem.info)), data, NullReporter()).estimator
    model = est.named_steps["model"]
    assert model.cat_columns and model.model.get_cat_feature_indices() == model.cat_columns
    assert model.model.tree_count_ <= 2  # stopped at once
    codes = model._frame(est.named_steps["preprocess"].transform(problem.X.iloc[va]))
    assert all(codes[j].dtype == np.int64 for j in model.cat_columns)


def test_a_row_missing_every_measurement_gets_no_certain_prediction():
    """The shipped penguins hold two rows with every measurement missing (an Adelie from
    Torgersen, a Gentoo from Biscoe). Trained with the first, a weakly regularised model
    must not stake a near-certain prediction on the second from missing-value flags that
    one training row set: they fall back on the medians and the island."""
    from tests.conftest import ROOT

    frame = pd.read_csv(ROOT / "examples" / "penguins.csv")
    measured = frame.columns[1:5]
    empty = frame[measured].isna().all(axis=1)
    assert empty.sum() == 2
    train, row = frame.drop(index=frame.index[empty][1]), frame.loc[[frame.index[empty][1]]]
    problem = _problem(train, "species")
    trainer = get_trainer("logistic")
    params = {**trainer.default(problem.info), "C": 1000.0}
    data = FitData(problem.X, problem.y, None, None, problem.info, problem.metric)
    est = trainer.fit(params, data, NullReporter()).estimator
    proba = predict_scores(est, row.drop(columns="species"), problem.info.task, 3)[0]
    gentoo = list(problem.classes).index("Gentoo")
    assert proba[gentoo] > 0.01, dict(zip(problem.classes, proba.round(4)))
