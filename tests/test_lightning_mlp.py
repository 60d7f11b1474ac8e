"""The Lightning MLP: training practice, imbalance, pruning, failures, saving (needs torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("safetensors")

from automl.config import SearchConfig  # noqa: E402
from automl.contracts import FitData, NullReporter  # noqa: E402
from automl.data import prepare_target  # noqa: E402
from automl.engine import prepare_problem  # noqa: E402
from automl.metrics import predict_scores  # noqa: E402
from automl.exceptions import MissingDependencyError, TrialFailed  # noqa: E402
from automl.registry import get_trainer  # noqa: E402
from automl.objective import TrialReporter  # noqa: E402
from automl.study import make_pruner  # noqa: E402
from tests.conftest import AUTOML, EXAMPLE, ROOT, shared_dataset  # noqa: E402
from trainers import lightning_common  # noqa: E402
from trainers.mlp import network  # noqa: E402
from trainers.mlp.module import TabularModule  # noqa: E402

pytestmark = pytest.mark.deep


def _problem(frame, target, **cfg):
    X, t = prepare_target(frame, target, "auto")
    return prepare_problem(X, t, SearchConfig(n_trials=1, **cfg).validate())


def _fold(problem, **kw):
    tr, va = problem.splits.folds[0]
    return FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, **kw)


@pytest.fixture(scope="module")
def penguins():
    return _problem(pd.read_csv(EXAMPLE), "species")


def _fit(problem, params=None, **kw):
    trainer = get_trainer("mlp")
    data = _fold(problem, **kw)
    fitted = trainer.fit({**trainer.default(problem.info), **(params or {})}, data, NullReporter())
    est = fitted.estimator
    _, va = problem.splits.folds[0]
    return (est, data, predict_scores(est, problem.X.iloc[va], problem.info.task, problem.info.n_classes),
            fitted.n_iterations)


def test_beats_a_constant_predictor_on_real_data():
    problem = _problem(pd.read_csv(shared_dataset("breast_cancer")), "diagnosis")
    est, data, pred, n_iterations = _fit(problem)
    _, va = problem.splits.folds[0]
    assert problem.metric.name == "roc_auc"
    assert problem.metric(problem.y[va], pred, 2) > 0.95  # a constant scores 0.5
    prior = np.bincount(problem.y[problem.splits.folds[0][0]], minlength=2) / len(data.y_train)
    ll = lambda p: -np.mean(np.log(np.clip(p[np.arange(len(va)), problem.y[va]], 1e-15, 1)))  # noqa: E731
    assert ll(pred) < 0.5 * ll(np.tile(prior, (len(va), 1)))
    assert 1 <= n_iterations <= 20  # the best epoch, for the refit
    assert list(est.classes_) == [0, 1]


def test_same_seed_same_predictions(penguins):
    _, _, a, _ = _fit(penguins, seed=3)
    _, _, b, _ = _fit(penguins, seed=3)
    _, _, c, _ = _fit(penguins, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


class Curve:
    """A reporter that keeps what a trial reports (what Optuna stores as intermediate values)."""

    def __init__(self):
        self.values = {}

    def report(self, step, value):
        self.values[step] = value


def test_refit_trains_the_trials_epochs_and_a_trial_reports_its_curve(penguins, monkeypatch):
    epochs = []
    real = TabularModule.on_train_epoch_end
    monkeypatch.setattr(TabularModule, "on_train_epoch_end",
                        lambda self: (epochs.append(self.current_epoch), real(self))[1])
    trainer = get_trainer("mlp")
    data = FitData(penguins.X, penguins.y, None, None, penguins.info, penguins.metric,
                   n_iterations=3)
    est = trainer.fit(dict(trainer.default(penguins.info)), data, NullReporter()).estimator
    assert predict_scores(est, penguins.X.head(7), penguins.info.task, 3).shape == (7, 3)
    assert epochs == [0, 1, 2]
    # a trial reports the validation metric of every epoch, up to the one early stopping ends
    epochs.clear()
    curve = Curve()
    data = _fold(penguins)
    fitted = trainer.fit(dict(trainer.default(penguins.info)), data, curve)
    assert sorted(curve.values) == [e + 1 for e in epochs] and len(curve.values) >= 5
    best = max(curve.values, key=curve.values.get) if penguins.metric.greater_is_better \
        else min(curve.values, key=curve.values.get)
    assert fitted.n_iterations == best


FORK_AFTER_FIT = """
import time
import pandas as pd
import torch
from automl.isolation import run_isolated
from tests.test_lightning_mlp import _fit, _problem
from tests.conftest import EXAMPLE

penguins = _problem(pd.read_csv(EXAMPLE), "species")
est, _, _, _ = _fit(penguins, {"width": 512, "depth": 3})
est.predict_proba(pd.concat([penguins.X] * 20))

def child():
    torch.set_num_threads(2)
    a = torch.randn(1500, 1500)
    return float((a @ a).abs().mean()), torch.get_num_threads()

outcome = run_isolated(child, deadline=time.monotonic() + 60, mem_cap_mb=None)
print("OUTCOME", repr((outcome.status, outcome.reason, outcome.value)))
"""


def test_forked_trials_still_use_threads_after_in_process_use():
    """Fitting and predicting here keep torch single-threaded, so a forked trial can use
    several threads (a process whose OpenMP pool ran several threads hangs its forks). In a
    fresh interpreter: the test process itself may have run other libraries' threaded work."""
    done = subprocess.run([sys.executable, "-c", FORK_AFTER_FIT], capture_output=True,
                          text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("OUTCOME ")][-1]
    status, reason, value = ast.literal_eval(line.removeprefix("OUTCOME "))
    assert status == "ok", reason
    assert value[1] == 2  # the child kept its two threads


def test_deadline_stops_training(penguins):
    t0 = time.monotonic()
    est, data, pred, n_iterations = _fit(penguins, {"epochs": 200}, deadline=time.monotonic())
    assert time.monotonic() - t0 < 10
    assert n_iterations == 1
    assert np.isfinite(pred).all()


def test_class_weights():
    counts = np.array([900, 90, 10])
    none = lightning_common.class_weights(counts, None)
    np.testing.assert_array_equal(none, [1, 1, 1])
    balanced = lightning_common.class_weights(counts, "balanced")
    from sklearn.utils.class_weight import compute_class_weight

    y = np.repeat([0, 1, 2], counts)
    np.testing.assert_allclose(balanced, compute_class_weight("balanced", classes=np.arange(3), y=y))
    effective = lightning_common.class_weights(counts, "effective")
    beta = 0.999
    raw = (1 - beta) / (1 - beta ** counts)
    np.testing.assert_allclose(effective, raw * 3 / raw.sum())
    assert effective[2] > effective[1] > effective[0] and effective.sum() == pytest.approx(3)
    # milder than balanced for the rarest class: large classes saturate
    assert effective[2] / effective[0] < balanced[2] / balanced[0]
    # an absent class does not break the weights
    assert np.isfinite(lightning_common.class_weights([5, 0, 5], "balanced")).all()
    with pytest.raises(ValueError, match="class_weight"):
        lightning_common.class_weights(counts, "inverse")


def test_weighted_loss_matches_torch_cross_entropy(penguins):
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(50, 3)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, size=50))
    for mode in ("balanced", "effective"):
        cw = lightning_common.class_weights(np.bincount(y.numpy(), minlength=3), mode)
        w = torch.tensor(lightning_common.row_weights(y.numpy(), penguins.info, mode))
        expected = torch.nn.functional.cross_entropy(logits, y, weight=torch.tensor(cw, dtype=torch.float32))
        got = lightning_common.weighted_loss(logits, y, w, classification=True)
        assert float(got) == pytest.approx(float(expected), rel=1e-5)
    sw = rng.uniform(0.5, 2, size=50)
    w = lightning_common.row_weights(y.numpy(), penguins.info, "balanced", sw)
    np.testing.assert_allclose(w, lightning_common.class_weights(np.bincount(y.numpy()), "balanced")[y.numpy()] * sw,
                               rtol=1e-6)


def test_imbalanced_data_searches_a_balanced_sampler(mixed_frame):
    df = mixed_frame.copy()
    df["label"] = np.where(df["x1"] > 1.4, "rare", "common")  # about 8% rare
    problem = _problem(df, "label")
    space = get_trainer("mlp").space(problem.info)
    assert "balanced_sampler" in space and set(space["class_weight"].choices) == {None, "balanced", "effective"}
    _, _, pred, _ = _fit(problem, {"balanced_sampler": True, "class_weight": "effective"})
    assert np.isfinite(pred).all()
    balanced_space = get_trainer("mlp").space(_problem(mixed_frame, "label").info)
    assert "balanced_sampler" not in balanced_space


def test_unseen_and_missing_levels_use_the_unknown_embedding(mixed_frame):
    problem = _problem(mixed_frame, "label")
    est, _, _, _ = _fit(problem)
    assert est[-1].arch_["cardinalities"], "low-cardinality categoricals are embedded"
    X_new = problem.X.head(4).copy()
    X_new["color"] = ["purple", None, "red", "never-seen"]
    pred = predict_scores(est, X_new, problem.info.task, 2)
    assert np.isfinite(pred).all()
    same = predict_scores(est, X_new.assign(color=[None, None, "red", None]), problem.info.task, 2)
    np.testing.assert_allclose(pred, same, rtol=1e-6)  # every unknown level maps to code 0


def test_nan_loss_fails_the_trial_with_the_reason(penguins, monkeypatch):
    real = network.forward
    monkeypatch.setattr(network, "forward", lambda net, a, b: real(net, a, b) * float("nan"))
    with pytest.raises(TrialFailed, match="training loss became nan"):
        _fit(penguins)
    # through the search: the trial is recorded as failed, with the reason, and the search goes on
    from automl import engine

    X, t = prepare_target(pd.read_csv(EXAMPLE), "species")
    cfg = SearchConfig(n_trials=2, include=["mlp", "logistic"], isolate=False, cv="holdout",
                       ensemble=False)
    res = engine.fit(X, t, cfg, target_name="species")
    mlp_trials = [tr for tr in res.study.trials if tr.user_attrs.get("learner") == "mlp"]
    assert mlp_trials and all(tr.state == optuna.trial.TrialState.FAIL for tr in mlp_trials)
    assert "training loss became nan" in mlp_trials[0].user_attrs["fail_reason"]
    assert res.model.description[0]["learner"] == "logistic"


def test_median_pruner_prunes_mlp_trials(penguins):
    """Four good trials, then a bad one: the study's median pruner stops it at an early epoch."""
    trainer = get_trainer("mlp")
    default = dict(trainer.default(penguins.info))
    bad = {**default, "learning_rate": 1e-4, "width": 16, "depth": 1, "dropout": 0.5, "epochs": 60}
    configs = [(default, seed) for seed in range(4)] + [(bad, 0)]
    study = optuna.create_study(direction="minimize", pruner=make_pruner("median"))

    def objective(trial):
        trial.suggest_categorical("learner", ["mlp"])  # the pruner compares trials of one learner
        params, seed = configs[trial.number]
        data = _fold(penguins, seed=seed)
        est = trainer.fit(params, data, TrialReporter.for_trial(trial)).estimator
        pred = predict_scores(est, data.X_valid, penguins.info.task, 3)
        return penguins.metric(data.y_valid, pred, 3)

    study.optimize(objective, n_trials=len(configs))
    states = [t.state for t in study.trials]
    assert states[:4] == [optuna.trial.TrialState.COMPLETE] * 4
    assert states[4] == optuna.trial.TrialState.PRUNED
    assert len(study.trials[4].intermediate_values) < 60


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    with pytest.raises(MissingDependencyError, match=r"automl\[deep\]"):
        get_trainer("mlp")


def test_estimator_state_is_plain_and_skops_safe(penguins):
    import skops.io as sio

    est, _, pred, _ = _fit(penguins)
    net = est[-1]
    state = net.__getstate__()
    assert isinstance(state["weights_"], bytes) and isinstance(state["arch_"], dict)
    assert not any(type(v).__module__.startswith("torch") for v in state.values())
    blob = sio.dumps(est)
    untrusted = sio.get_untrusted_types(data=blob)
    # skops imported through automl (persistence.skops_io) trusts no sklearn type by default,
    # so those may be listed too; never a torch one
    assert untrusted and all(t.startswith(("trainers.", "automl.", "numpy.", "sklearn."))
                             for t in untrusted), untrusted
    from automl.allowlist import audit, trainer_allowlist

    assert set(untrusted) <= audit(blob, trainer_allowlist())  # every name is on the allowlist
    loaded = sio.loads(blob, trusted=untrusted)
    assert loaded[-1]._net is None  # rebuilt lazily on the first prediction
    _, va = penguins.splits.folds[0]
    np.testing.assert_allclose(predict_scores(loaded, penguins.X.iloc[va], penguins.info.task, 3), pred,
                               rtol=1e-6)


@pytest.mark.slow  # ~30 s; the estimator's save/load round trip is in tests/test_mlp_parts.py
def test_saved_mlp_model_predicts_through_api_and_cli(tmp_path):
    from automl.persistence import load_model

    out = tmp_path / "out"
    # --trial-timeout: a safety net that kills a trial child that hangs, so the run goes on
    res = subprocess.run([AUTOML, "fit", str(EXAMPLE), "--target", "species", "--include", "mlp",
                          "--n-trials", "3", "--cv", "holdout", "--trial-timeout", "120",
                          "--output", str(out)],
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    model = load_model(out)
    assert {d["learner"] for d in model.description} == {"mlp"}
    df = pd.read_csv(EXAMPLE)
    api = model.predict_frame(df.drop(columns="species"))
    assert (api["prediction"] == df["species"]).mean() > 0.9
    res = subprocess.run([AUTOML, "predict", str(out), str(EXAMPLE), "--output", str(tmp_path / "p.csv")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    cli = pd.read_csv(tmp_path / "p.csv")
    assert list(cli["prediction"]) == list(api["prediction"])
    np.testing.assert_allclose(cli.filter(like="proba_").to_numpy(), api.filter(like="proba_").to_numpy(),
                               rtol=1e-6)
