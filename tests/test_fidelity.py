"""Cost-aware fidelity (automl.fidelity): a trial's time share, the per-learner row sample,
the final model's use of the best trials' kept models. The wide-table and rescue runs are
in test_always_a_model.py; RowSample's rules are its doctest."""

from __future__ import annotations

import pickle
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from automl.config import SearchConfig
from automl.contracts import Task
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.fidelity import RowSample
from automl.final_model import FallbackModel, select_ensemble
from automl.metrics import get_metric
from automl.objective import TrialSpec, cross_validate
from automl.problem import affordable_styles, preprocess_folds, sample_positions
from automl.study import best_trials
from automl.testing import tiny_frame
from automl.trial_files import save_oof


def _problem(task=Task.BINARY, rows=200, **config):
    frame, target = tiny_frame(task, rows=rows)
    X, t = prepare_target(frame, target)
    return prepare_problem(X, t, SearchConfig(n_trials=1, **config).validate())


@pytest.mark.parametrize("task", [Task.BINARY, Task.MULTICLASS, Task.REGRESSION])
def test_a_sampled_fold_trains_on_its_own_training_rows_with_the_shared_preprocessing(task):
    problem = _problem(task, rows=150)
    problem.pre_cache = preprocess_folds(problem, ["linear"], seed=0)
    full = problem.fit_data(1, seed=0, n_threads=1, deadline=time.monotonic() + 60)
    part = problem.fit_data(1, seed=0, n_threads=1, deadline=time.monotonic() + 60, max_rows=40)
    assert 38 <= len(part.y_train) <= 42 and len(part.y_valid) == len(full.y_valid)
    assert set(part.X_train.index) <= set(full.X_train.index)  # never a validation row
    (key, (pre, Xt, _)), = part.preprocessed.items()
    np.testing.assert_allclose(np.asarray(Xt), np.asarray(pre.transform(part.X_train)))
    if task.is_classification:  # every class keeps rows
        assert set(part.y_train) == set(full.y_train)
    again = problem.fit_data(1, seed=0, n_threads=1, deadline=time.monotonic() + 60, max_rows=40)
    assert list(again.X_train.index) == list(part.X_train.index)  # seeded


def test_a_rare_class_keeps_two_rows_in_a_sample():
    y = np.array([0] * 995 + [1] * 5)
    pos = sample_positions(y, 100, seed=3, classification=True)
    assert int((y[pos] == 1).sum()) == 2 and 100 <= len(pos) <= 102  # about 100


def test_a_trial_past_its_share_stops_after_the_fold_and_says_so():
    problem = _problem(rows=200)
    spec = TrialSpec(number=0, learner="random_forest", params={
        "n_estimators": 200, "max_features": 0.5, "min_samples_leaf": 1, "criterion": "gini",
        "class_weight": None}, seed=0, n_threads=1, soft_s=0.0, limit_s=60, max_train_rows=60)
    result = cross_validate(problem, spec, reporter=_NoPrune(), deadline=time.monotonic())
    assert result["folds_done"] == 1 and result["n_folds"] == 5
    assert result["stopped_at_deadline"] and result["train_rows"] <= 62
    assert np.isfinite(result["value"])


class _NoPrune:
    def report(self, step, value):
        return None


def test_row_sample_never_goes_below_the_floor_or_above_all_rows():
    rows = RowSample(n_train=5_000)
    rows.observe("knn", rows=5_000, fold_fit_s=100.0, stopped=True)
    assert rows.for_learner("knn", 1.0) == 2_500
    rows.observe("knn", rows=1_000, fold_fit_s=100.0, stopped=True)
    assert rows.for_learner("knn", 1.0) == 1_000  # MIN_ROWS
    rows.observe("knn", rows=1_000, fold_fit_s=0.001, stopped=False)
    assert rows.for_learner("knn", 1.0) == 4_000  # grows 4x
    rows.observe("knn", rows=4_000, fold_fit_s=0.001, stopped=False)
    assert rows.for_learner("knn", 1.0) is None  # all rows
    small = RowSample(n_train=300)
    small.observe("knn", rows=300, fold_fit_s=100.0, stopped=True)
    assert small.for_learner("knn", 1.0) is None  # fewer rows than the floor: all of them


def test_fallback_keeps_the_best_models_and_each_learners_best_within_a_byte_cap():
    keep = FallbackModel(get_metric("rmse", Task.REGRESSION), keep=2, max_bytes=10)

    def offer(number, value, blob, learner="lightgbm"):
        trial = type("T", (), {"number": number, "params": {"learner": learner}})()
        keep.offer(trial, {"value": value, "model": blob})

    offer(0, 5.0, b"aaa")
    offer(1, 3.0, b"bbb")
    offer(2, 4.0, b"ccc")
    assert sorted(keep.models) == [1, 2]  # the two best
    offer(3, 9.0, b"dd", learner="knn")
    assert sorted(keep.models) == [1, 2, 3]  # and the best knn, for ensembles
    offer(4, 8.0, b"eeeeeeeeee", learner="ridge")
    assert sorted(keep.models) == [1, 2, 3]  # the best ridge would pass 10 bytes
    offer(5, 1.0, None)
    assert sorted(keep.models) == [1, 2, 3]  # a trial that sent no model changes nothing


def test_trials_stopped_after_their_first_fold_still_form_an_ensemble(tmp_path):
    """Every trial validated on the first fold only: the ensemble is chosen on that fold's
    rows (before, gaps left every such trial out, so wide tables got no ensemble)."""
    problem = _problem(Task.REGRESSION, rows=150, include=["ridge"], cv=3)
    _, va = problem.splits.folds[0]
    y = problem.y.astype(float)
    metric = problem.metric
    study = optuna.create_study(direction=metric.direction)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 20, len(y))
    preds = {0: y + noise, 1: y - noise, 2: y + 3 * noise}
    for number, pred in preds.items():
        oof = np.full(len(y), np.nan)
        oof[va] = pred[va]
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=metric(y[va], pred[va], 0),
            params={"learner": "ridge"},
            distributions={"learner": optuna.distributions.CategoricalDistribution(["ridge"])},
            user_attrs={"partial_folds": "1/3"}))
        save_oof(str(tmp_path), number, oof.astype(np.float32))
    trials, weights, score = select_ensemble(problem, study, str(tmp_path))
    assert sorted(t.number for t in trials) == [0, 1] and score is not None
    assert score < min(t.value for t in study.trials)
    pickle.dumps(weights)


def _partial_best_study(tmp_path, partial_scale):
    """Trial 0 stopped after two folds of three, ``partial_scale`` times trial 1's noise
    (best by value); trials 1 and 2 validated on every row, with independent noise."""
    problem = _problem(Task.REGRESSION, rows=150, include=["ridge"], cv=3)
    _, last = problem.splits.folds[2]
    y = problem.y.astype(float)
    metric = problem.metric
    study = optuna.create_study(direction=metric.direction)
    rng = np.random.default_rng(0)
    noise, other = rng.normal(0, 20, len(y)), rng.normal(0, 20, len(y))
    partial = y + partial_scale * noise
    partial[last] = np.nan
    for number, (pred, attrs) in enumerate([(partial, {"partial_folds": "2/3"}),
                                            (y + noise, {}), (y + other, {})]):
        seen = ~np.isnan(pred)
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=metric(y[seen], pred[seen], 0),
            params={"learner": "ridge"},
            distributions={"learner": optuna.distributions.CategoricalDistribution(["ridge"])},
            user_attrs=attrs))
        save_oof(str(tmp_path), number, pred.astype(np.float32))
    assert best_trials(study, metric, 1)[0].number == 0
    return problem, study, y, noise, other


def test_a_best_trial_scored_on_fewer_folds_does_not_narrow_the_ensemble_to_its_rows(tmp_path):
    """With two trials validated on every row, the ensemble is chosen on all rows from
    those: a best trial stopped after two folds of three would narrow the choice to its
    rows (ames at 60 s: an ensemble chosen on two folds of five lost on test). Here the
    best trial does not beat that ensemble on its own rows, so the ensemble stands."""
    problem, study, y, noise, other = _partial_best_study(tmp_path, 0.9)
    trials, weights, score = select_ensemble(problem, study, str(tmp_path))
    assert sorted(t.number for t in trials) == [1, 2]
    blend = sum(w * {1: y + noise, 2: y + other}[t.number] for t, w in zip(trials, weights))
    assert score == pytest.approx(problem.metric(y, blend, 0), rel=2e-3)  # on every row (float32)


def test_a_best_trial_scored_on_fewer_folds_that_clearly_wins_on_its_rows_is_the_model(tmp_path):
    """The best trial stopped after some folds, and on the rows it was validated on it
    beats the ensemble of the complete trials in (nearly) every bootstrap resample: it is
    the model. (Its value and the ensemble's score come from different rows: on digits at
    60 s, 0.028 on one fold against 0.080 on all rows, where that fold's rows gave the
    ensemble 0.038 and the win was not clear.)"""
    problem, study, *_ = _partial_best_study(tmp_path, 0.1)
    trials, weights, score = select_ensemble(problem, study, str(tmp_path))
    assert [t.number for t in trials] == [0] and weights == [1.0] and score is None


def test_an_over_confident_model_is_calibrated_and_the_temperature_is_saved(tmp_path):
    """Temperature scaling (automl.calibration) on the final model where log loss is the
    metric: fitted on the out-of-fold blend, saved in the model folder, applied by predict."""
    from automl.calibration import choose_temperature, scale
    from automl.model import AutoMLModel
    from automl.persistence import load_model, save_model

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1200)
    right = rng.random(1200) < 0.7  # right 70% of the time, but 98% sure
    guess = np.where(right, y, (y + 1) % 3)
    oof = np.full((1200, 3), 0.01)
    oof[np.arange(1200), guess] = 0.98
    save_oof(str(tmp_path), 7, oof.astype(np.float32))
    t = choose_temperature(y, str(tmp_path), [7], [1.0], "log_loss")
    assert t > 1.5
    assert choose_temperature(y, str(tmp_path), [7], [1.0], "accuracy") == 1.0
    calibrated = scale(oof, t)
    assert (calibrated.argmax(axis=1) == guess).all()  # ranking unchanged
    assert calibrated[np.arange(1200), guess].max() < 0.9
    save_oof(str(tmp_path), 8, oof[:600].astype(np.float32))  # too few validated rows
    assert choose_temperature(y[:600], str(tmp_path), [8], [1.0], "log_loss") == 1.0

    problem = _problem(Task.MULTICLASS, rows=90, include=["logistic"])
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from automl.preprocessing import make_preprocessor

    member = Pipeline([("preprocess", make_preprocessor(problem.info.schema, "linear", seed=0,
                                                          n_rows=90, task=problem.info.task)),
                       ("model", LogisticRegression(max_iter=500))]).fit(problem.X, problem.y)
    model = AutoMLModel(schema=problem.info.schema, task=problem.info.task, classes=problem.classes,
                        metric="log_loss", target="y", members=[member], weights=[1.0],
                        description=[{"trial": 0, "learner": "logistic"}], temperature=0.5)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.temperature == 0.5
    np.testing.assert_allclose(loaded.predict_scores(problem.X),
                               scale(member.predict_proba(problem.X), 0.5), rtol=1e-6)


def test_the_search_keeps_time_for_the_chosen_ensembles_refits_only(tmp_path):
    """The search waits for the cheap refits of every learner's best trial (possible ensemble
    members), but when that would stop it, it chooses the ensemble as the final model will
    and keeps time for those members only (ames at 60 s stopped with 11 s left and the final
    model needed 2 s of it)."""
    from automl.controller import Budget, Controller

    problem = _problem(Task.REGRESSION, rows=150, include=["ridge"], cv=3)
    config = SearchConfig(time_budget=100, include=["ridge"], cv=3).validate()
    y = problem.y.astype(float)
    metric = problem.metric
    study = optuna.create_study(direction=metric.direction)
    noise = np.random.default_rng(0).normal(0, 20, len(y))
    learners = optuna.distributions.CategoricalDistribution(["ridge", "knn", "elasticnet"])
    # two cheap complementary ridge trials form the ensemble; the slow learners' bests do not
    for number, (learner, pred, fold_s) in enumerate([
            ("ridge", y + noise, 0.01), ("ridge", y - noise, 0.01),
            ("knn", y + 3 * noise, 3.0), ("elasticnet", y - 3 * noise, 3.0)]):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=metric(y, pred, 0), params={"learner": learner},
            distributions={"learner": learners},
            user_attrs={"fold_fit_time": fold_s, "fit_time": 3 * fold_s}))
        save_oof(str(tmp_path), number, pred.astype(np.float32))
    budget = Budget(start=time.monotonic() - 90, time_budget=100, n_trials=None)  # 10 s left
    controller = Controller(study, problem, config, executor=None, budget=budget,
                            oof_dir=str(tmp_path))
    controller._update_reserve()
    assert budget.reserve > 10  # the slow learners' refits (about 4.75 s each) are waited for
    assert controller._may_start()  # ... but the ensemble needs the ridge refits only
    assert 5.0 <= budget.reserve < 6.0  # the floor (5% of the budget) covers two ridge refits
    controller._update_reserve()
    assert not controller._may_start()  # planned once per finished trial


def test_the_final_models_estimate_keeps_no_time_for_a_refit_the_build_would_leave_out(tmp_path):
    """The time kept for the final model follows what it will do: a refit's estimate is its
    trial's fold fit time scaled to all rows (and its rounds too, at 0.6 a row and round,
    for a trial that stopped early; 1.3 times it for one on a sample), and a later member's refit that would take the
    total past a quarter of the budget is not counted (the build leaves it out or uses its
    first-split model). The old rule (x 1.3, + 0.5 s) expected 2.4 times what 42 refits took."""
    from automl.fidelity import build_estimate, refit_estimate
    from automl.trial_files import save_fold_models

    problem = _problem(Task.REGRESSION, rows=150, include=["ridge"], cv=3)
    assert (len(problem.y), problem.splits.n_train_rows) == (150, 100)  # a refit: 1.5x the rows
    learners = optuna.distributions.CategoricalDistribution(["ridge"])

    def trial(number, fold_s, **attrs):
        frozen = create_trial(state=TrialState.COMPLETE, value=1.0, params={"learner": "ridge"},
                              distributions={"learner": learners},
                              user_attrs={"fold_fit_time": fold_s, **attrs})
        frozen.number = number
        return frozen

    stopped, plain, slow = trial(0, 1.0, n_iterations=40), trial(1, 1.0), trial(2, 20.0)
    sampled = trial(3, 1.0, train_rows=50)
    assert refit_estimate(stopped, problem) == pytest.approx(1.0 * 1.5 * 0.6 * 1.5 + 0.25)  # rounds scaled too
    assert refit_estimate(plain, problem) == pytest.approx(1.0 * 1.5 + 0.25)
    assert refit_estimate(sampled, problem) == pytest.approx(1.0 * 3 * 1.3 + 0.25)
    members = [stopped, plain, slow, sampled]
    assert build_estimate(members, problem, None, 100) == pytest.approx(1.6 + 1.75 + 4.15)
    assert build_estimate([slow, stopped], problem, None, 100) == pytest.approx(30.25)  # none left
    assert build_estimate(members, problem, None, 1000) == pytest.approx(1.6 + 1.75 + 30.25 + 4.15)
    save_fold_models(str(tmp_path), 2, b"x" * 1000)  # kept fold models: saved, always
    assert build_estimate(members, problem, str(tmp_path), 100) == pytest.approx(
        1.6 + 1.75 + 0.2 + 4.15, abs=1e-3)


def test_a_trial_another_driver_failed_as_stale_is_dropped_not_a_crash(caplog):
    """A driver whose heartbeats were late by more than the grace period (a stalled machine)
    finds its trial failed by another driver's stale check: it drops the result and goes
    on, where it used to stop with "internal error: UpdateFinishedTrialError"."""
    from automl.controller import Budget, Controller
    from automl.executors import Outcome

    problem = _problem(include=["logistic"])
    config = SearchConfig(n_trials=2, include=["logistic"]).validate()
    study = optuna.create_study(direction=problem.metric.direction)
    seen = []
    controller = Controller(study, problem, config, executor=None,
                            budget=Budget(start=time.monotonic(), time_budget=None, n_trials=2),
                            callbacks=[lambda s, t: seen.append(t.number)])
    trial = study.ask()
    controller.running[trial.number] = (trial, time.perf_counter())
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # the other driver
    result = {"fit_time": 1.0, "fold_fit_time": 0.2, "fold_scores": [0.8], "value": 0.8}
    controller._tell(trial.number, Outcome("ok", value=result))
    assert study.trials[0].state == TrialState.FAIL and not seen and not controller.running
    assert "ended by another process" in caplog.text


def _large_regression(n: int = 52_000):
    """A regression table whose holdout leaves over 40,000 training rows (a probe's threshold)."""
    import pandas as pd

    rng = np.random.default_rng(2)
    X = rng.normal(size=(n, 4))
    group = rng.choice(["a", "b", "c"], size=n)
    y = X[:, 0] * 3 + X[:, 1] ** 2 + (group == "a") * 2 + rng.normal(scale=0.3, size=n)
    frame = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"]).assign(group=group, target=y)
    return prepare_target(frame, "target")


def test_a_large_table_starts_with_a_probe_on_a_sample_then_its_default_on_all_rows():
    from automl import engine
    from automl.fidelity import PROBE_ROWS

    X, t = _large_regression()
    config = SearchConfig(time_budget=90, n_trials=3, include=["lightgbm", "ridge"])
    res = engine.fit(X, t, config, target_name="target")
    assert res.problem.splits.kind == "holdout" and res.problem.splits.n_train_rows > 40_000
    probe, default, ridge = res.study.trials[:3]  # (the queue's next ones wait)
    assert [t.user_attrs["queued"] for t in (probe, default, ridge)] == ["probe", "default", "default"]
    assert probe.params == default.params and probe.params["learner"] == "lightgbm"
    assert probe.state == default.state == TrialState.COMPLETE
    assert probe.user_attrs["train_rows"] == PROBE_ROWS
    assert "train_rows" not in default.user_attrs and "train_rows" not in ridge.user_attrs
    assert default.value < probe.value  # all rows fit better than 10,000 (rmse)


def test_a_probe_first_on_every_table_with_a_time_budget_and_only_once():
    from automl.opening import enqueue_defaults

    large = prepare_problem(*_large_regression(), SearchConfig(n_trials=1, include=["lightgbm", "ridge"]))
    small = _problem(Task.REGRESSION, rows=200, include=["lightgbm", "ridge"])
    linear_first = _problem(Task.REGRESSION, rows=200, include=["ridge", "lightgbm"])

    def queued(problem, probe, again=False):
        study = optuna.create_study()
        enqueue_defaults(study, problem, probe=probe)
        if again:  # a second process creating the same study queues nothing more
            enqueue_defaults(study, problem, probe=probe)
        return [t.user_attrs["queued"] for t in study.trials]

    for problem in (large, small):
        assert queued(problem, True, again=True)[:3] == ["probe", "default", "default"]
        assert queued(problem, True, again=True).count("probe") == 1
        assert "probe" not in queued(problem, False)  # (no time budget: nothing to share)
    # a probe is the first learner's default cut short: only for a learner that takes a share
    assert queued(linear_first, True)[0] == "probe"
    assert len(queued(small, True, again=True)) == len(queued(small, True))


def test_on_a_small_table_the_probe_fits_one_fold_and_the_default_all_of_them():
    """5-fold cross-validation on 2,000 rows: the probe's result comes from its first fold
    (the first result within seconds on any table: LightGBM's default under 5 folds took
    12.7 s on 10,000 flights rows), then the default runs every fold."""
    from automl import engine

    X, t = _large_regression(2_000)
    config = SearchConfig(time_budget=60, n_trials=2, include=["lightgbm"], cv="5")
    res = engine.fit(X, t, config, target_name="target")
    probe, default = res.study.trials[:2]
    assert [t.user_attrs["queued"] for t in (probe, default)] == ["probe", "default"]
    assert probe.state == default.state == TrialState.COMPLETE
    assert probe.user_attrs["partial_folds"] == "1/5" and "partial_folds" not in default.user_attrs


def test_the_probe_stops_training_after_its_share_of_the_budget():
    """The probe stops adding rounds after 5% of the budget (LightGBM's default ran 1,900 to
    3,000 rounds on 10,000 flights rows: 7 to 9 s of a 60 s budget); the default that
    follows, on all rows, gets the usual time."""
    from automl.controller import Budget, Controller
    from automl.fidelity import PROBE_ROWS, PROBE_SHARE
    from automl.opening import enqueue_defaults

    X, t = _large_regression()
    config = SearchConfig(time_budget=60, include=["lightgbm"]).validate()
    problem = prepare_problem(X, t, config)
    study = optuna.create_study()
    enqueue_defaults(study, problem, probe=True)
    controller = Controller(study, problem, config, executor=None,
                            budget=Budget(start=time.monotonic(), time_budget=60, n_trials=None))
    probe, default = controller._spec(study.ask()), controller._spec(study.ask())
    assert probe.max_train_rows == PROBE_ROWS and probe.soft_s <= PROBE_SHARE * 60
    assert probe.fold_s == 0  # no fold after the first
    assert default.max_train_rows is None and default.soft_s > 4 * probe.soft_s


@pytest.mark.parametrize("probe", [True, False])
def test_the_shared_preprocessing_is_fitted_after_the_probe_and_before_any_other_trial(probe):
    """The probe preprocesses its own 10,000 rows, so the slow fit every other trial shares
    (seconds on 500,000 rows) starts once the probe has started, and the probe's result is
    recorded while that fit runs; without a probe it comes before the first trial. Real
    forked trials (the local executor)."""
    from automl.controller import Budget, Controller
    from automl.executors.local import LocalExecutor
    from automl.fidelity import PROBE_ROWS
    from automl.opening import enqueue_defaults

    config = SearchConfig(time_budget=60, include=["lightgbm"], n_trials=2).validate()
    problem = prepare_problem(*_large_regression(), config)
    study = optuna.create_study()
    enqueue_defaults(study, problem, probe=probe)
    events = []

    class Recording(LocalExecutor):
        def submit(self, spec, hooks):
            events.append(("trial", spec.max_train_rows, bool(problem.pre_cache)))
            super().submit(spec, hooks)

    executor = Recording(config)
    executor.start(problem)

    def share(between):
        events.append("share")
        # what the controller gives the shared fit to call while it waits: it records the
        # trials that finished (the probe's result is not held until the shared fit ends)
        give_up = time.monotonic() + 60
        while probe and study.trials[0].state != TrialState.COMPLETE and time.monotonic() < give_up:
            between()
            time.sleep(0.05)
        if probe:
            events.append(("probe told", study.trials[0].state))
        executor.share_preprocessing(["tree"], seed=0, limit_s=30, meanwhile=between)

    controller = Controller(study, problem, config, executor,
                            Budget(start=time.monotonic(), time_budget=60, n_trials=2), share=share)
    controller.run()
    executor.close()
    if probe:
        assert events == [("trial", PROBE_ROWS, False), "share",
                          ("probe told", TrialState.COMPLETE), ("trial", None, True)]
    else:
        assert events == ["share", ("trial", None, True), ("trial", None, True)]
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE] * 2
    assert controller.preprocessing_s > 0


def test_an_ensemble_that_lost_a_member_reports_its_kept_members_blend(tmp_path):
    """A member left out for lack of time: the model's validation score is the blend of the
    members it kept, with their weights renormalized, not the heaviest chosen member's own
    value (wine_quality at 60 s said 1.018 for a blend that validated at about 0.81)."""
    from automl.final_model import kept_blend_score

    problem = _problem(Task.REGRESSION, rows=150, include=["ridge"], cv=3)
    y = problem.y.astype(float)
    metric = problem.metric
    study = optuna.create_study(direction=metric.direction)
    noise = np.random.default_rng(0).normal(0, 20, len(y))
    preds = {0: y + noise, 1: y - 0.5 * noise, 2: y + 3 * noise}
    for number, pred in preds.items():
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=metric(y, pred, 0), params={"learner": "ridge"},
            distributions={"learner": optuna.distributions.CategoricalDistribution(["ridge"])}))
        save_oof(str(tmp_path), number, pred.astype(np.float32))
    trials = study.trials
    kept = [{"trial": 0, "weight": 0.3}, {"trial": 1, "weight": 0.3}]  # trial 2 left out
    score = kept_blend_score(problem, str(tmp_path), kept, trials)
    folds = [va for _, va in problem.splits.folds]
    blend = (preds[0].astype(np.float32) + preds[1].astype(np.float32)) / 2
    assert score == pytest.approx(np.mean([metric(y[va], blend[va], 0) for va in folds]), rel=1e-5)
    assert score < min(t.value for t in trials)  # opposite errors partly cancel
    # without their out-of-fold predictions: the best kept member's own value
    assert kept_blend_score(problem, None, kept, trials) == min(trials[0].value, trials[1].value)


def test_a_wide_tables_probe_trains_on_fewer_rows():
    """The probe's cost is every column of every row it bins and encodes: on 1,000 columns it
    gets 2,000 rows (5,000 columns: LightGBM's default took 5.2 s on 4,000 rows), the early
    probe and the controller alike; the default after it trains on all rows."""
    from automl.controller import Budget, Controller
    from automl.early_probe import start
    from automl.opening import enqueue_defaults

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(3_000, 1_000)), columns=[f"f{i}" for i in range(1_000)])
    y = pd.Series(X["f0"].to_numpy() + rng.normal(size=3_000), name="y")
    X, t = prepare_target(X.assign(y=y), "y")
    config = SearchConfig(time_budget=60, include=["lightgbm"]).validate()
    problem = prepare_problem(X, t, config)
    study = optuna.create_study()
    enqueue_defaults(study, problem, probe=True)
    budget = Budget(start=time.monotonic(), time_budget=60, n_trials=None)
    controller = Controller(study, problem, config, executor=None, budget=budget)
    probe, default = controller._spec(study.ask()), controller._spec(study.ask())
    assert probe.max_train_rows == 2_000 and default.max_train_rows is None

    class Submitted:
        accelerator = "cpu"

        def start(self, problem):
            self.problem = problem

        def submit(self, spec, hooks):
            self.spec = spec

    executor = Submitted()
    start(problem, config, executor, budget, keep_folds=False, model_dir=None)
    assert executor.spec.max_train_rows == 2_000


def _large_problem(rows=66_000):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(4)})
    X["city"] = rng.choice(["north", "south", "east", "west"], size=rows)
    X["y"] = X["x0"] * 2 + (X["city"] == "east") + rng.normal(scale=0.1, size=rows)
    frame, t = prepare_target(X, "y")
    return prepare_problem(frame, t, SearchConfig(n_trials=1, cv=3).validate())


def test_a_large_tables_styles_are_shared_cheapest_first_while_they_fit_the_time(monkeypatch):
    from automl import preprocessing

    class Slow(preprocessing.FunctionTransformer):
        def fit_transform(self, X, y=None, **kw):  # a style that takes 1 s whatever the rows
            time.sleep(1.0)
            return np.zeros((len(X), 1))

    monkeypatch.setitem(preprocessing._STYLES, "slow", lambda schema, **kw: Slow())
    problem = _large_problem()
    assert len(problem.splits.folds[0][0]) > 2 * 20_000  # (timed on a sample)
    keys = [("slow", "tfidf"), ("tree", "tfidf"), ("linear", "tfidf")]
    # 1 s on 20,000 rows is 1 s x 1.5 x 66,000 / 20,000 = 5 s for all of them: past 3 s
    assert sorted(affordable_styles(problem, keys, 0, time.monotonic() + 3.0)) == [
        ("linear", "tfidf"), ("tree", "tfidf")]
    assert affordable_styles(problem, keys, 0, time.monotonic() + 600)[-1] == ("slow", "tfidf")
    cache = preprocess_folds(problem, ["linear", "tree"], 0, deadline=time.monotonic())
    assert cache == {0: {}, 1: {}, 2: {}}  # nothing fits: every trial fits its own
    small = _problem(rows=200)  # a small table: no timing, everything is tried
    assert affordable_styles(small, keys, 0, time.monotonic()) == keys
