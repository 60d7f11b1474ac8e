"""The probe starts while the study opens (automl.early_probe): real runs, real forks."""

from __future__ import annotations

import dataclasses
import time

import optuna
from optuna.trial import TrialState

from automl import early_probe
from automl.config import SearchConfig
from automl.contracts import Task
from automl.controller import Budget, Controller
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.executors.local import LocalExecutor
from automl.opening import enqueue_defaults
from automl.testing import tiny_frame
from tests.runs import check_no_repeats, load_trials, run_cli, tiny_csv


def test_the_probe_starts_before_the_study_opens_and_becomes_its_first_trial(tmp_path):
    data, out = tiny_csv(tmp_path / "d.csv", n=400), tmp_path / "out"
    res = run_cli("fit", data, "--target", "y", "--include", "lightgbm,logistic",
                  "--time-budget", 12, "--output", out)
    assert res.returncode == 0, res.stderr
    trials = load_trials(f"sqlite:///{out / 'study.db'}")
    probe, default = trials[0], trials[1]
    assert probe.user_attrs["queued"] == "probe" and probe.state == TrialState.COMPLETE
    assert probe.user_attrs["started_early_s"] > 0  # it ran while the study opened
    assert probe.user_attrs["worker"] and probe.user_attrs["partial_folds"] == "1/5"
    assert default.user_attrs["queued"] == "default" and "started_early_s" not in default.user_attrs
    check_no_repeats(trials)


def _setup(**config):
    config = SearchConfig(time_budget=30, include=["lightgbm", "logistic"], **config).validate()
    problem = prepare_problem(*prepare_target(*tiny_frame(Task.BINARY, rows=300)), config)
    executor = LocalExecutor(config)
    executor.start(problem)
    budget = Budget(start=time.monotonic(), time_budget=30, n_trials=config.n_trials)
    return config, problem, executor, budget


def test_a_first_trial_that_is_not_the_early_probe_stops_it_and_runs_as_any_other():
    config, problem, executor, budget = _setup(n_trials=1)
    early = early_probe.start(problem, config, executor, budget, keep_folds=False, model_dir=None)
    assert early is not None and not early.spec.prunable
    # as if the study's first trial had another configuration than the early child's
    early.spec = dataclasses.replace(early.spec, params={**early.spec.params, "num_leaves": 7})
    study = optuna.create_study(direction=problem.metric.direction)
    enqueue_defaults(study, problem, probe=True)
    controller = Controller(study, problem, config, executor, budget, early=early)
    try:
        controller.run()
    finally:
        executor.close()
    first = study.trials[0]
    assert first.user_attrs["queued"] == "probe" and first.state == TrialState.COMPLETE
    assert "started_early_s" not in first.user_attrs  # run again, not adopted
    assert first.params["lightgbm__num_leaves"] != 7


def test_only_a_new_study_this_run_owns_with_a_budget_and_forked_trials_starts_it_early():
    config, problem, executor, _ = _setup()
    try:
        assert early_probe.allowed(config, problem, executor, resume=False, owned_storage=True)
        assert not early_probe.allowed(config, problem, executor, resume=True, owned_storage=True)
        assert not early_probe.allowed(config, problem, executor, resume=False, owned_storage=False)
        grid = dataclasses.replace(config, sampler="grid")
        assert not early_probe.allowed(grid, problem, executor, resume=False, owned_storage=True)
        trials = dataclasses.replace(config, time_budget=None, n_trials=3)
        assert not early_probe.allowed(trials, problem, executor, resume=False, owned_storage=True)
    finally:
        executor.close()
