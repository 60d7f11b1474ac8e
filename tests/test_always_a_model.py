"""Every run that can hold one model ends with one: a trial out of time after some folds is a
lower-fidelity result, not a failure, and a run that truly cannot fit says what would."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd

from tests.runs import plugin_env, run_cli, tiny_csv


def test_a_trial_out_of_time_after_some_folds_is_scored_on_those(tmp_path):
    data = tiny_csv(tmp_path / "d.csv")
    out = tmp_path / "out"
    # each fold sleeps 0.8 s: within a 2.5 s trial limit only the first folds fit
    res = run_cli("fit", data, "--target", "y", "--output", out, "--include", "sleepy",
                  "--trial-timeout", "2.5", "--n-trials", "2", "--cv", "5",
                  env=plugin_env(AUTOML_TEST_SLEEP_S="0.8"))
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="automl", storage=f"sqlite:///{out}/study.db").trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done, [t.user_attrs.get("fail_reason") for t in trials]
    for t in done:
        folds, total = map(int, t.user_attrs["partial_folds"].split("/"))
        assert total == 5 and 1 <= folds < 5 and len(t.user_attrs["fold_scores"]) == folds
    assert json.loads((out / "manifest.json").read_text())["members"]


def test_a_budget_that_cannot_hold_a_trial_says_what_would(tmp_path):
    data = tiny_csv(tmp_path / "d.csv")
    res = run_cli("fit", data, "--target", "y", "--output", tmp_path / "out", "--include", "sleepy",
                  "--time-budget", "0.5")
    assert res.returncode == 1, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("automl: error: the 0.5 s budget ran out before the first trial started: "
                           "reading and preparing the data took "), line
    assert "give --time-budget " in line and "Traceback" not in res.stderr


def test_a_search_where_no_trial_finishes_ends_with_a_rescue_model(tmp_path):
    """Every fit on all rows outlasts its trial (a learner that cannot stop early): the run
    still ends with a model, one more trial on a sample of the rows."""
    data = tiny_csv(tmp_path / "d.csv", n=15_000)
    out = tmp_path / "out"
    # a fold of 12,000 rows sleeps 6 s, past the 3 s trial limit; 2,000 rows sleep 1 s
    res = run_cli("fit", data, "--target", "y", "--output", out, "--include", "rowsleepy",
                  "--time-budget", "14", "--trial-timeout", "3",
                  env=plugin_env(AUTOML_TEST_SLEEP_PER_ROW_S="0.0005"))
    assert res.returncode == 0, res.stderr
    assert "no trial finished in the search; fitting rowsleepy on at most 2000 rows" in res.stderr
    trials = optuna.load_study(study_name="automl", storage=f"sqlite:///{out}/study.db").trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 1 and done[0].user_attrs["train_rows"] <= 2_000
    # each failed trial failed on time: past its limit, or asked with none left (a trial
    # still queued, never started, has no reason: a loaded machine leaves one)
    reasons = [t.user_attrs.get("fail_reason", "") for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert reasons and all("time limit" in r or r == "no time left in the budget" for r in reasons), \
        [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["trial"] for m in manifest["members"]] == [done[0].number]


def test_a_wide_table_whose_first_trial_outlasts_its_share_stops_after_a_fold(tmp_path):
    """The issue's failure: on a wide, 10-class table the folds of the first trial's
    defaults cost most of the budget (the trial ran past its limit in fold 5 and was thrown
    away). A trial now starts no new fold after its share of the search (a quarter), so it
    is scored on the folds done and the run ends with a model within its budget."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    # real digits, each pixel written 6 times with noise: 1,797 x 384 (a heavy LightGBM fold)
    X = np.repeat(digits.data, 6, axis=1) + rng.normal(0, 1.0, (len(digits.data), 384))
    frame = pd.DataFrame(X.round(2), columns=[f"p{i}" for i in range(384)])
    frame["digit"] = digits.target
    frame.to_csv(tmp_path / "wide.csv", index=False)
    out = tmp_path / "out"
    res = run_cli("fit", tmp_path / "wide.csv", "--target", "digit", "--output", out,
                  "--time-budget", "16", "--include", "lightgbm,hist_gb,random_forest,logistic")
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="automl", storage=f"sqlite:///{out}/study.db").trials
    first = trials[0]
    assert first.state == optuna.trial.TrialState.COMPLETE, first.user_attrs.get("fail_reason")
    folds, total = map(int, first.user_attrs["partial_folds"].split("/"))
    assert total == 5 and folds < 5
    assert json.loads((out / "manifest.json").read_text())["members"]
