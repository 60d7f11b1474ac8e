"""Bagged fold models as the final model's members (opt-in, k-fold validation only)."""

import json

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution
from sklearn.linear_model import LogisticRegression

from automl import engine
from automl.config import SearchConfig
from automl.contracts import Task
from automl.data import prepare_target
from automl.ensemble import FoldBag
from automl.metrics import METRICS
from automl.trial_files import candidate_numbers, candidate_threshold, fold_models_path, prune_fold_models
from tests.runs import plugin_env, run_cli


def _fit(frame, target, **kw):
    X, t = prepare_target(frame, target)
    cfg = SearchConfig(**{"n_trials": 4, "time_budget": None, **kw})
    return engine.fit(X, t, cfg, target_name=target, study_name="s")


def test_foldbag_averages_its_models_and_aligns_missing_classes():
    X = np.arange(12, dtype=float).reshape(-1, 1)
    y = np.array([0, 1, 2] * 4)
    full = LogisticRegression().fit(X, y)
    two = LogisticRegression().fit(X[y < 2], y[y < 2])  # a fold that never saw class 2
    bag = FoldBag([full, two], Task.MULTICLASS, 3)
    proba = bag.predict_proba(X)
    expected = (full.predict_proba(X) + np.column_stack([two.predict_proba(X), np.zeros(len(X))])) / 2
    np.testing.assert_allclose(proba, expected)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert list(bag.predict(X)) == list(proba.argmax(axis=1))


def test_kfold_members_are_their_bagged_fold_models(mixed_frame):
    res = _fit(mixed_frame, "label", include=["logistic", "lightgbm"], n_trials=4, bagging=True)
    assert res.problem.splits.kind == "cv"
    for member, desc in zip(res.model.members, res.model.description):
        assert isinstance(member, FoldBag) and len(member.models) == 5
        assert desc["bagged_folds"] == 5
    X = mixed_frame.drop(columns="label")
    proba = res.model.predict_scores(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1.0)
    # a bagged member predicts the mean of its fold models
    bag = res.model.members[0]
    Xc = res.model._prepare(X)
    mean = np.mean([m.predict_proba(Xc) for m in bag.models], axis=0)
    np.testing.assert_allclose(bag.predict_proba(Xc), mean)


def test_default_and_holdout_refit_on_all_rows(mixed_frame):
    for kw in ({}, {"cv": "holdout", "bagging": True}):
        res = _fit(mixed_frame, "label", include=["logistic"], n_trials=2, **kw)
        assert not any(isinstance(m, FoldBag) for m in res.model.members), kw
        assert not any("bagged_folds" in d for d in res.model.description), kw


def _study_with(values_by_learner):
    study = optuna.create_study(direction="minimize")
    dist = {"learner": CategoricalDistribution(["a", "b", "c"])}
    for learner, value in values_by_learner:
        study.add_trial(optuna.trial.create_trial(params={"learner": learner}, distributions=dist,
                                                  value=value))
    return study


def test_candidates_are_the_best_trials_plus_each_learners_best():
    study = _study_with([("a", 1.0), ("a", 2.0), ("a", 3.0), ("b", 9.0), ("c", 8.0)])
    assert candidate_numbers(study, METRICS["rmse"], n=2) == [0, 1, 4, 3]
    # a new "a" trial must beat the 2nd best; a new "b" trial only b's best (9.0, the worse)
    assert candidate_threshold(study, METRICS["rmse"], "a", n=2) == 2.0
    assert candidate_threshold(study, METRICS["rmse"], "b", n=2) == 9.0
    assert candidate_threshold(study, METRICS["rmse"], "new", n=2) is None  # no trial of its own
    assert candidate_threshold(study, METRICS["rmse"], "a", n=10) is None  # fewer than n trials


def test_pruning_keeps_candidates_and_running_trials(tmp_path):
    study = _study_with([("a", float(v)) for v in range(12)])
    running = study.ask()  # a trial another worker is still running
    for number in [*range(12), running.number]:
        fold_models_path(str(tmp_path), number).write_bytes(b"x")
    prune_fold_models(str(tmp_path), study, METRICS["rmse"])
    left = sorted(int(p.name.split("-")[1].split(".")[0]) for p in tmp_path.glob("*.folds.pkl"))
    assert left == [*range(10), running.number]


def test_cli_saves_and_predicts_a_bagged_model(tmp_path, mixed_frame):
    data = tmp_path / "d.csv"
    mixed_frame.to_csv(data, index=False)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    res = run_cli("fit", data, "--target", "label", "--n-trials", 3, "--include", "logistic,lightgbm",
                  "--output", out, "--bagging", env=plugin_env(TMPDIR=str(scratch)))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(m.get("bagged_folds") == 5 for m in manifest["members"])
    # fold models are pickles: kept in a private temporary folder, removed after the run,
    # never in the output folder that a later --resume reads
    assert not list(scratch.iterdir())
    assert not [p for p in out.rglob("*") if p.suffix == ".pkl"]
    res = run_cli("predict", out, data, "--output", tmp_path / "p.csv")
    assert res.returncode == 0, res.stderr
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == len(mixed_frame) and {"proba_neg", "proba_pos"} <= set(preds)


def test_cli_refits_by_default(tmp_path, mixed_frame):
    data = tmp_path / "d.csv"
    mixed_frame.to_csv(data, index=False)
    out = tmp_path / "out"
    res = run_cli("fit", data, "--target", "label", "--n-trials", 2, "--include", "logistic",
                  "--output", out)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert not any("bagged_folds" in m for m in manifest["members"])
