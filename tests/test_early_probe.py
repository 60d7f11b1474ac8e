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


def _mixed_table(n: int, seed: int = 0):
    """Real kinds a clean converts: numbers, numbers written as text, dates, categories."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "a": a, "b": rng.integers(0, 40, n),
        "price": [f"${v:,.2f}" for v in rng.uniform(0, 5_000, n)],
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
        "city": rng.choice(["Oslo", " Lima", "Pune ", None], n),
        "flag": rng.choice(["yes", "no"], n),
        "y": np.where(np.nan_to_num(a) + rng.normal(size=n) > 0, "up", "down"),
    }).astype({"when": str})


def test_a_large_tables_probe_runs_on_its_own_rows_cleaned_alone_with_the_same_result(monkeypatch):
    """A table over the thresholds is cleaned after the probe has started: the probe's
    rows, cleaned alone, are those rows of the whole cleaned table, and the probe's result
    (value, out-of-fold predictions at their places, folds) is the one it has on the whole."""
    import numpy as np
    import pandas as pd

    from automl import engine
    from automl.fidelity import probe_rows
    from automl.objective import TrialReporter, evaluate
    from automl.registry import get_trainer
    from automl.schema import clean_frame

    monkeypatch.setattr(engine, "LEAK_SAMPLE_ROWS", 500)
    monkeypatch.setattr(engine, "DEFER_CLEAN_CELLS", 1)
    X, t = prepare_target(_mixed_table(3_000), "y")
    config = SearchConfig(time_budget=30, include=["lightgbm"], cv=3).validate()
    problem = prepare_problem(X, t, config)
    assert problem.raw
    whole = clean_frame(X, problem.info.schema)
    rows = min(probe_rows(problem.info.n_features), 900)
    part = problem.first_split_part(rows, seed=0)
    assert not part.raw and len(part.X) == rows + len(problem.splits.folds[0][1])
    pd.testing.assert_frame_equal(part.X, whole.iloc[part.part_of[0]])
    assert problem.raw  # the part did not clean the whole table

    trainer = get_trainer("lightgbm")
    default = trainer.default(problem.info)
    params = {name: default[name] for name in trainer.space(problem.info) if name in default}
    spec = early_probe.TrialSpec(number=0, learner="lightgbm", params=params, seed=0, n_threads=1,
                                 soft_s=20, limit_s=30, max_train_rows=rows, fold_s=0.0)
    never = TrialReporter(lambda step, value: False)
    on_part = evaluate(part, dataclasses.replace(spec, max_train_rows=None), never)
    assert problem.X is not None and not problem.raw  # reading X cleaned it
    pd.testing.assert_frame_equal(problem.X, whole)
    on_whole = evaluate(problem, spec, never)
    assert on_part["value"] == on_whole["value"] and on_part["train_rows"] == rows
    assert (on_part["folds_done"], on_part["n_folds"]) == (1, 3) == \
        (on_whole["folds_done"], on_whole["n_folds"])
    np.testing.assert_array_equal(on_part["oof"], on_whole["oof"])  # NaN where not validated
    assert np.isnan(on_part["oof"]).any(axis=-1).sum() == len(X) - len(problem.splits.folds[0][1])


def test_a_large_table_fits_with_the_probe_first_and_predicts(tmp_path):
    """The whole path on a table over the thresholds (25,000 rows x 81 columns): the probe,
    on its rows cleaned alone, is the first trial; the trials after it use the whole
    cleaned table; the model predicts a frame of the raw kinds."""
    import numpy as np
    import pandas as pd

    n = 25_000
    df = _mixed_table(n)
    rng = np.random.default_rng(1)
    wide = pd.DataFrame(rng.normal(size=(n, 75)).round(3), columns=[f"x{i}" for i in range(75)])
    df = pd.concat([df, wide], axis=1)
    data, out = tmp_path / "big.csv", tmp_path / "out"
    df.to_csv(data, index=False)
    res = run_cli("fit", data, "--target", "y", "--include", "lightgbm,logistic",
                  "--time-budget", 20, "--output", out, "--seed", 0)
    assert res.returncode == 0, res.stderr
    trials = load_trials(f"sqlite:///{out / 'study.db'}")
    assert trials[0].user_attrs["queued"] == "probe" and trials[0].state == TrialState.COMPLETE
    assert trials[0].user_attrs["train_rows"] == 10_000  # of the holdout's 20,000
    assert any(t.state == TrialState.COMPLETE for t in trials[1:])
    test = tmp_path / "test.csv"
    df.drop(columns=["y"]).head(500).to_csv(test, index=False)
    pred = run_cli("predict", out, test, "--output", tmp_path / "p.csv")
    assert pred.returncode == 0, pred.stderr
    assert len(pd.read_csv(tmp_path / "p.csv")) == 500
