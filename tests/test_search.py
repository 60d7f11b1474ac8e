"""The search controller on real (small) data and real Optuna storages."""

import numpy as np
import pytest
from optuna.trial import TrialState

from automl import engine
from automl.config import SearchConfig
from automl.data import prepare_target
from automl.exceptions import ConfigError, SearchFailedError
from automl.leaderboard import leaderboard


def _fit(frame, target, storage=None, **kw):
    X, t = prepare_target(frame, target)
    cfg = SearchConfig(**{"n_trials": 4, "time_budget": None, **kw})
    return engine.fit(X, t, cfg, target_name=target, storage_url=storage, study_name="s")


def problem_better_or_equal(res, best):
    """The final model (an ensemble or the best trial) validates at least as well as the best trial."""
    m = res.problem.metric
    return res.model.validation_score == best or m.better(res.model.validation_score, best)


def test_defaults_are_tried_first_and_best_is_refit(mixed_frame, tmp_path):
    res = _fit(mixed_frame, "label", storage=f"sqlite:///{tmp_path}/s.db",
               include=["lightgbm", "logistic", "extra_trees"], n_trials=5)
    trials = res.study.trials
    assert [t.params["learner"] for t in trials[:3]] == ["lightgbm", "logistic", "extra_trees"]
    assert all(t.user_attrs.get("queued") == "default" for t in trials[:3])
    best = max(t.value for t in trials if t.state == TrialState.COMPLETE)
    assert res.model.validation_score is not None
    assert problem_better_or_equal(res, best)
    assert res.summary["validation"] == "5-fold cross-validation"
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert len(t.user_attrs["fold_scores"]) == 5 and t.user_attrs["fit_time"] > 0
            assert "balanced_accuracy" in t.user_attrs
    proba = res.model.predict_scores(mixed_frame.drop(columns="label"))
    assert proba.shape == (len(mixed_frame), 2)
    board = leaderboard(res.study)
    assert board.iloc[0]["score"] == best and {"learner", "params", "fit_time_s"} <= set(board)


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "gp", "cmaes", "qmc"])
def test_every_sampler_runs(regression_frame, sampler):
    res = _fit(regression_frame, "target", sampler=sampler, n_trials=4,
               include=["ridge", "lightgbm"])
    done = [t for t in res.study.trials if t.state == TrialState.COMPLETE]
    assert len(done) >= 3 and res.model.task.value == "regression"


@pytest.mark.parametrize("pruner", ["median", "halving", "hyperband", "none"])
def test_every_pruner_runs(mixed_frame, pruner):
    res = _fit(mixed_frame, "label", pruner=pruner, n_trials=6, include=["lightgbm"])
    assert res.study.trials and any(t.state == TrialState.COMPLETE for t in res.study.trials)


@pytest.mark.parametrize("storage", ["inmemory", "sqlite"])
def test_median_pruner_prunes_bad_lightgbm_trials(regression_frame, storage, tmp_path):
    """In a forked trial (sqlite) the child asks the parent to report and prune over a pipe."""
    X, t = prepare_target(regression_frame, "target")
    cfg = SearchConfig(n_trials=14, time_budget=None, include=["lightgbm"], sampler="random",
                       pruner="median")
    url = None if storage == "inmemory" else f"sqlite:///{tmp_path}/p.db"
    res = engine.fit(X, t, cfg, target_name="target", storage_url=url)
    states = [tr.state for tr in res.study.trials]
    assert TrialState.PRUNED in states, states


def test_failing_trials_are_recorded_and_search_goes_on(mixed_frame, monkeypatch):
    from trainers import sklearn_trainers

    def boom(self, params, data):
        raise RuntimeError("learner exploded")

    monkeypatch.setattr(sklearn_trainers.LogisticTrainer, "build", boom)
    res = _fit(mixed_frame, "label", include=["logistic", "lightgbm"], n_trials=3)
    failed = [t for t in res.study.trials if t.state == TrialState.FAIL]
    assert failed and "learner exploded" in failed[0].user_attrs["fail_reason"]
    assert res.model.description[0]["learner"] == "lightgbm"


def test_all_trials_failing_is_a_clear_error(mixed_frame, monkeypatch):
    from trainers import sklearn_trainers

    monkeypatch.setattr(sklearn_trainers.LogisticTrainer, "build",
                        lambda self, p, d: (_ for _ in ()).throw(ValueError("nope")))
    with pytest.raises(SearchFailedError, match="no trial succeeded.*nope"):
        _fit(mixed_frame, "label", include=["logistic"], n_trials=2)


def test_resume_checks_options(mixed_frame, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    _fit(mixed_frame, "label", storage=url, include=["logistic"], n_trials=2)
    X, t = prepare_target(mixed_frame, "label")
    with pytest.raises(ConfigError, match="already exists"):
        engine.fit(X, t, SearchConfig(n_trials=3, time_budget=None, include=["logistic"]),
                   target_name="label", storage_url=url, study_name="s")
    with pytest.raises(ConfigError, match="cannot resume.*metric"):
        engine.fit(X, t, SearchConfig(n_trials=3, time_budget=None, include=["logistic"],
                                      metric="accuracy"),
                   target_name="label", storage_url=url, study_name="s", resume=True)
    res = engine.fit(X, t, SearchConfig(n_trials=4, time_budget=None, include=["logistic"]),
                     target_name="label", storage_url=url, study_name="s", resume=True)
    assert len(res.study.trials) == 4


def test_holdout_for_large_data():
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 12_000
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["y"] = (df.a + rng.normal(size=n) > 0).astype(int)
    res = _fit(df, "y", include=["lightgbm"], n_trials=1)
    assert res.summary["validation"] == "holdout of 2400 rows"


def test_include_default_adds_opt_in_learners():
    from automl.contracts import Task
    from automl.registry import resolve_learners

    defaults = resolve_learners(Task.BINARY)
    got = resolve_learners(Task.BINARY, ["default", "catboost", "lightgbm"])
    assert got == [*defaults, "catboost"]  # the defaults first, no duplicates
    assert "ridge" not in defaults  # still only the learners that do the task
    with pytest.raises(ConfigError, match="'default' for the default ones"):
        resolve_learners(Task.BINARY, ["xgb"])
