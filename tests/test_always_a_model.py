"""Every run that can hold one model ends with one: a trial out of time after some folds is a
lower-fidelity result, not a failure, and a run that truly cannot fit says what would."""

from __future__ import annotations

import json

import optuna

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
