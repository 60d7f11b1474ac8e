"""Unit tests of the search's core algorithms, apart from whole runs: ensemble selection,
the learner choice, the per-learner pruner view, the grid over a learner-dependent space
and the validation splits; and every docstring example of the engine, run as a doctest."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

import automl
from automl import learner_choice
from automl.config import SearchConfig
from automl.contracts import Task
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.ensemble import caruana
from automl.exceptions import DataError
from automl.learner_choice import LearnerChooser, learner_weights
from automl.metrics import METRICS
from automl.objective import Objective
from automl.registry import get_trainer
from automl.splits import make_splits
from automl.study import LearnerPruner, grid_values, make_sampler, own_params
from automl.testing import tiny_frame

# ------------------------------------------------------------------ Caruana selection


def test_caruana_averages_complementary_members_and_leaves_out_a_poor_one():
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    oof = {7: y + 1.0, 8: y - 1.0, 9: y + 5.0}  # 7 and 8 cancel out; 9 only hurts
    sel = caruana(oof, y, METRICS["rmse"], 0)
    assert sorted(sel.trials) == [7, 8] and sel.weights == [0.5, 0.5]
    assert sel.single_score == pytest.approx(1.0) and sel.score == pytest.approx(0.0)
    assert sel.improves


def test_caruana_keeps_the_best_single_trial_when_nothing_helps():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    sel = caruana({1: y + 4.0, 2: y + 0.5}, y, METRICS["rmse"], 0)  # both err upwards
    assert sel.trials == [2] and sel.weights == [1.0] and not sel.improves
    assert sel.score == sel.single_score == pytest.approx(0.5)


def test_caruana_ignores_rows_some_member_did_not_validate_and_caps_members():
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    oof = {i: y + rng.normal(scale=1.0, size=40) for i in range(12)}  # independent errors
    oof[0][:5] = np.nan  # a trial stopped before its last fold
    sel = caruana(oof, y, METRICS["rmse"], 0, rounds=50, max_members=3)
    assert 1 < len(sel.trials) <= 3
    assert sum(sel.weights) == pytest.approx(1.0)
    assert np.isfinite(sel.score) and sel.score < sel.single_score


def test_caruana_scores_per_fold_as_a_trial_is_scored():
    y = np.array([0.0, 0.0, 10.0, 10.0])
    pred = np.array([1.0, 1.0, 10.0, 10.0])
    folds = np.array([0, 0, 1, 1])
    pooled = caruana({0: pred}, y, METRICS["rmse"], 0).score
    per_fold = caruana({0: pred}, y, METRICS["rmse"], 0, folds=folds).score
    assert pooled == pytest.approx(np.sqrt(0.5)) and per_fold == pytest.approx(0.5)


def test_caruana_needs_predictions():
    with pytest.raises(ValueError, match="no out-of-fold"):
        caruana({}, np.zeros(3), METRICS["rmse"], 0)


# ------------------------------------------------------------------ learner choice


def _trial(learner, value=None, state=TrialState.COMPLETE, fit_time=1.0):
    return create_trial(params={"learner": learner},
                        distributions={"learner": CategoricalDistribution(["a", "b", "c", "d"])},
                        value=value if state == TrialState.COMPLETE else None, state=state,
                        user_attrs={"fit_time": fit_time})


def test_learner_weights_favour_the_better_and_the_cheaper_learner():
    trials = [_trial("a", 0.9), _trial("b", 0.8), _trial("c", 0.7)]
    w = learner_weights(trials, ["a", "b", "c"], greater_is_better=True)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["a"] > w["b"] > w["c"]
    # ranks fall geometrically: b's raw weight is RANK_DECAY times a's
    explore = learner_choice.EXPLORE / 3
    assert (w["b"] - explore) / (w["a"] - explore) == pytest.approx(learner_choice.RANK_DECAY)
    # the same ranks, but the best learner 16 times slower: weighed by the square root of cost
    slow = [_trial("a", 0.9, fit_time=16.0), _trial("b", 0.8), _trial("c", 0.7)]
    w_slow = learner_weights(slow, ["a", "b", "c"], greater_is_better=True)
    # a: 1 / sqrt(16) = 0.25 before normalising, b: 0.5 (its rank), so a is half of b
    assert (w_slow["a"] - explore) / (w_slow["b"] - explore) == pytest.approx(0.5)


def test_learner_weights_follow_the_metric_direction():
    trials = [_trial("a", 0.9), _trial("b", 0.1)]
    assert learner_weights(trials, ["a", "b"], greater_is_better=False)["b"] > \
        learner_weights(trials, ["a", "b"], greater_is_better=False)["a"]


def test_learner_weights_drop_a_learner_after_two_failures_and_queue_untried_ones_behind():
    trials = [_trial("a", 0.9), _trial("b", 0.5), _trial("c", state=TrialState.FAIL),
              _trial("c", state=TrialState.FAIL), _trial("d", state=TrialState.PRUNED)]
    w = learner_weights(trials, ["a", "b", "c", "d"], greater_is_better=True)
    assert w["c"] == 0.0
    assert w["a"] > w["b"] > w["d"] > 0  # pruned only: behind every learner with a score
    assert sum(w.values()) == pytest.approx(1.0)


def test_learner_chooser_queues_one_learner_only_when_the_queue_is_empty():
    study = optuna.create_study(direction="maximize")
    chooser = LearnerChooser(["a", "b"], greater_is_better=True, seed=3)
    chooser(study)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"]["learner"] in ("a", "b")
    assert waiting[0].user_attrs["queued"] == "scheduler"
    chooser(study)  # one is waiting: nothing more is queued
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    alone = optuna.create_study()
    LearnerChooser(["a"], greater_is_better=True)(alone)  # one learner: nothing to choose
    assert alone.trials == []


def test_learner_chooser_is_reproducible_for_a_seed():
    def picks(seed):
        study = optuna.create_study(direction="maximize")
        for t in [_trial("a", 0.9), _trial("b", 0.8), _trial("c", 0.7)]:
            study.add_trial(t)
        chooser = LearnerChooser(["a", "b", "c"], greater_is_better=True, seed=seed)
        out = []
        for _ in range(20):
            chooser(study)
            trial = study.ask()
            out.append(trial.suggest_categorical("learner", ["a", "b", "c", "d"]))
            study.tell(trial, 0.5)
        return out

    assert picks(1) == picks(1)


# ------------------------------------------------------------------ the per-learner pruner view


def _reported(study, learner, values):
    study.add_trial(create_trial(
        params={"learner": learner}, distributions={"learner": CategoricalDistribution(["net", "tree"])},
        value=values[-1], intermediate_values=dict(enumerate(values, start=1))))


def _running(study, learner, value):
    study.enqueue_trial({"learner": learner})
    trial = study.ask()
    trial.suggest_categorical("learner", ["net", "tree"])
    trial.report(value, 1)
    return trial


def test_learner_pruner_compares_a_trial_with_its_own_learner_only():
    base = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    for pruner, pruned in [(base, True), (LearnerPruner(base), False)]:
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for v in (0.90, 0.92, 0.94):
            _reported(study, "tree", [v])
        for v in (0.60, 0.62):
            _reported(study, "net", [v])
        # a net as good as the other nets, far below the trees
        assert bool(_running(study, "net", 0.61).should_prune()) is pruned
    study = optuna.create_study(direction="maximize", pruner=LearnerPruner(base))
    for v in (0.90, 0.92, 0.94):
        _reported(study, "tree", [v])
    assert _running(study, "tree", 0.5).should_prune()  # below its own learner's median


# ------------------------------------------------------------------ the grid over a learner-dependent space


def test_grid_values_are_few_representative_points():
    assert grid_values(IntDistribution(1, 100, log=True)) == [1, 10, 100]
    assert grid_values(FloatDistribution(0.0, 1.0)) == [0.0, 0.5, 1.0]
    assert grid_values(CategoricalDistribution(["x", "y"])) == ["x", "y"]


def test_the_grid_visits_every_point_of_every_learners_space_once():
    """Each learner's own parameters form its grid (with its default added): a brute-force
    search over the study's tree of learner-dependent parameters visits each point once."""
    frame, target = tiny_frame(Task.REGRESSION)
    X, t = prepare_target(frame, target)
    config = SearchConfig(sampler="grid", include=["knn", "ridge"], n_trials=1).validate()
    problem = prepare_problem(X, t, config)
    objective = Objective(problem, config)
    study = optuna.create_study(sampler=make_sampler("grid", seed=0))
    seen = []

    def sample(trial):
        learner, params = objective.sample(trial)
        seen.append((learner, tuple(sorted(params.items()))))
        return 0.0

    study.optimize(sample, n_trials=500)
    expected = 0
    for learner in ("knn", "ridge"):
        trainer = get_trainer(learner)
        space, default = trainer.space(problem.info), trainer.default(problem.info)
        sizes = [len(set(grid_values(d)) | ({default[n]} if not isinstance(d, CategoricalDistribution)
                                            else set())) for n, d in space.items()]
        expected += int(np.prod(sizes))
        points = [p for name, p in seen if name == learner]
        assert len(points) == len(set(points)), f"{learner}: a grid point ran twice"
        assert tuple(sorted(default.items())) in points, f"{learner}: its default is a grid point"
    assert len(seen) == expected
    for trial in study.trials:  # every parameter carries its learner's name
        assert set(own_params(trial.params, trial.params["learner"])) | {"learner"} == \
            {k.split("__", 1)[-1] for k in trial.params}


# ------------------------------------------------------------------ the splits


def _partition(splits, n):
    valid = np.concatenate([va for _, va in splits.folds])
    assert sorted(valid.tolist()) == list(range(n))  # every row validated exactly once
    for tr, va in splits.folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == n


def test_small_classification_data_gets_stratified_five_fold_cv():
    y = np.array([0] * 80 + [1] * 20)
    splits = make_splits(y, Task.BINARY, seed=1)
    assert splits.kind == "cv" and len(splits.folds) == 5 and splits.describe() == "5-fold cross-validation"
    _partition(splits, len(y))
    assert all(np.bincount(y[va]).tolist() == [16, 4] for _, va in splits.folds)
    assert splits.n_train_rows == 80
    again = make_splits(y, Task.BINARY, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits.folds, again.folds))
    other = make_splits(y, Task.BINARY, seed=2)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits.folds, other.folds))


def test_a_rare_class_lowers_the_number_of_folds():
    y = np.array([0] * 50 + [1] * 3)
    splits = make_splits(y, Task.BINARY)
    assert len(splits.folds) == 3
    assert all(1 in y[va] for _, va in splits.folds)


def test_large_data_gets_a_stratified_holdout_of_a_fifth():
    y = np.array([0] * 11_000 + [1] * 1_000)
    splits = make_splits(y, Task.BINARY)
    (tr, va), = splits.folds
    assert splits.kind == "holdout" and len(va) == 2_400 and splits.describe() == "holdout of 2400 rows"
    assert np.bincount(y[va]).tolist() == [2_200, 200]
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)  # sorted positions


def test_a_stratified_holdout_gives_each_class_its_share_drawn_at_random():
    from automl.splits import stratified_sample

    rng = np.random.default_rng(3)
    y = rng.choice(5, size=30_001, p=[0.5, 0.3, 0.15, 0.0499, 0.0001])
    (tr, va), = make_splits(y, Task.MULTICLASS, cv="holdout", seed=7).folds
    assert len(va) == 6_000 and len(tr) + len(va) == len(y)
    assert np.array_equal(np.union1d(tr, va), np.arange(len(y)))  # every row, once
    counts = np.bincount(y)
    assert np.all(np.abs(np.bincount(y[va], minlength=5) - counts * 6_000 / len(y)) < 1)
    # the same seed, the same rows; another seed, other rows of each class
    assert np.array_equal(np.sort(stratified_sample(y, 6_000, 7)), va)
    other = np.sort(stratified_sample(y, 6_000, 8))
    assert np.bincount(y[other], minlength=5).tolist() == np.bincount(y[va], minlength=5).tolist()
    assert len(np.intersect1d(other, va)) < 0.4 * len(va)  # about a fifth overlap by chance
    # within a class the rows are spread over the whole table, not its first ones
    assert va[y[va] == 0].max() > 0.9 * len(y) and va[y[va] == 0].min() < 0.1 * len(y)


def test_a_budget_that_holds_k_folds_gets_cross_validation_up_to_100000_rows():
    y = np.array([0, 1] * 10_500)  # 21,000 rows
    assert make_splits(y, Task.BINARY, n_features=13, time_budget=60).kind == "holdout"  # 273,000 cells
    assert make_splits(y, Task.BINARY, n_features=13, time_budget=300).describe() == "5-fold cross-validation"
    assert make_splits(y, Task.BINARY, n_features=13).kind == "holdout"  # no time budget
    assert make_splits(y, Task.BINARY, cv="holdout", n_features=13, time_budget=300).kind == "holdout"
    big = np.array([0, 1] * 50_000)  # 100,000 rows: a holdout at any budget
    assert make_splits(big, Task.BINARY, n_features=1, time_budget=3600).kind == "holdout"


def test_cv_choice_regression_and_too_few_rows():
    y = np.linspace(0, 1, 30)
    assert len(make_splits(y, Task.REGRESSION, cv=3).folds) == 3
    assert make_splits(y, Task.REGRESSION, cv="holdout").kind == "holdout"
    _partition(make_splits(y, Task.REGRESSION), 30)
    with pytest.raises(DataError, match="at least 2 rows"):
        make_splits(np.array([1.0]), Task.REGRESSION)


# ------------------------------------------------------------------ docstring examples

MODULES = sorted(["automl"] + [m.name for m in pkgutil.walk_packages(automl.__path__, "automl.")])
SLOW_DOCTESTS = {"automl.api"}  # its examples run whole (small) searches


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_DOCTESTS else m
                                  for m in MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (run " \
                               f"python -m doctest -v on it)"


def test_docstring_examples_cover_the_core_modules():
    counted = {name: doctest.DocTestFinder().find(importlib.import_module(name))
               for name in ("automl.splits", "automl.ensemble", "automl.study", "automl.metrics",
                            "automl.preprocessing")}
    assert all(any(t.examples for t in tests) for tests in counted.values())
