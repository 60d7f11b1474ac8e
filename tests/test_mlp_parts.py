"""The MLP's parts one at a time: preprocessing, network, Lightning module, callbacks,
estimator, and the shared torch estimator and training helpers (needs torch; tiny data)."""

from __future__ import annotations

import pickle
import time

import numpy as np
import optuna
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("safetensors")

from automl.config import SearchConfig  # noqa: E402
from automl.contracts import FitData, Task  # noqa: E402
from automl.data import prepare_target  # noqa: E402
from automl.engine import prepare_problem  # noqa: E402
from automl.exceptions import TrialFailed  # noqa: E402
from automl.isolation import torch_threads  # noqa: E402
from trainers.lightning_callbacks import keep_best, validation_callbacks  # noqa: E402
from trainers.lightning_common import (  # noqa: E402
    LossWatch,
    Rows,
    class_weights,
    lightning_trainer,
    training_root,
    warmup_cosine,
    whole_batch,
)
from trainers.mlp.estimator import MLPEstimator  # noqa: E402
from trainers.mlp.module import TabularModule  # noqa: E402
from trainers.mlp.network import architecture, build_network, embedding_dim, forward  # noqa: E402
from trainers.mlp.preprocessing import cardinalities, make_net_preprocessor, split_inputs  # noqa: E402
from trainers.torch_estimator import logits_to_scores  # noqa: E402

pytestmark = pytest.mark.deep

PARAMS = {"depth": 2, "width": 16, "dropout": 0.0, "norm": "batch"}


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """The test process runs torch with one thread (see trainers.torch_estimator.torch_threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n = 160
    x = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x + (color == "red") * 1.5 > 0.5, "pos", "neg")
    frame = pd.DataFrame({"x": x, "z": rng.uniform(size=n), "color": color, "label": label})
    frame.loc[:9, "color"] = np.nan
    X, t = prepare_target(frame, "label", "auto")
    return prepare_problem(X, t, SearchConfig(n_trials=1, cv="holdout").validate())


def _fold(problem, **kw) -> FitData:
    tr, va = problem.splits.folds[0]
    return FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, **kw)


def _inputs(problem, data: FitData):
    """The fitted preprocessor, the architecture and the tensors of both parts."""
    pre = make_net_preprocessor(problem.info.schema, n_rows=len(data.y_train), task=problem.info.task)
    Xt = pre.fit_transform(data.X_train, data.y_train)
    cards = cardinalities(pre)
    arch = architecture(PARAMS, Xt.shape[1] - len(cards), cards, problem.info.n_classes)
    train = [torch.from_numpy(a) for a in split_inputs(Xt, arch["n_num"], cards)]
    valid = [torch.from_numpy(a) for a in split_inputs(pre.transform(data.X_valid), arch["n_num"], cards)]
    return pre, arch, train, valid


class Curve:
    """A reporter keeping every reported value; pruning at ``prune_at`` if given."""

    def __init__(self, prune_at: int | None = None) -> None:
        self.values: dict[int, float] = {}
        self.prune_at = prune_at

    def report(self, step: int, value: float) -> None:
        self.values[step] = value
        if step == self.prune_at:
            raise optuna.TrialPruned()


def _train(problem, data, reporter, *, epochs=4, lr=1e-2, x_num=None, deadline=float("inf"), patience=50):
    """A real Lightning run of the TabularModule with the shared callbacks."""
    _, arch, (x_num_t, x_cat), (xv_num, xv_cat) = _inputs(problem, data)
    x_num_t = x_num_t if x_num is None else x_num
    y = torch.as_tensor(data.y_train.astype(np.int64))
    w = torch.ones(len(y))
    train = torch.utils.data.DataLoader(Rows(x_num_t, x_cat, y, w), batch_size=32, collate_fn=whole_batch,
                                        sampler=torch.utils.data.RandomSampler(
                                            range(len(y)), generator=torch.Generator().manual_seed(0)))
    valid = torch.utils.data.DataLoader(Rows(xv_num, xv_cat), batch_size=1000, collate_fn=whole_batch)
    to_scores = lambda z: logits_to_scores(z, Task.BINARY.value, 0.0, 1.0)  # noqa: E731
    callbacks, best = validation_callbacks(reporter, data, to_scores, patience=patience)
    torch.manual_seed(0)
    module = TabularModule(build_network(arch), True, lr, 0.0, 2, 4 * epochs, deadline)
    with training_root("automl-test-") as root:
        trainer = lightning_trainer(root, "cpu", max_epochs=epochs, callbacks=callbacks, validate=True)
        trainer.fit(module, train, valid)
    return module, trainer, best, (xv_num, xv_cat)


# ---------------------------------------------------------------- preprocessing

def test_preprocessing_puts_codes_last_with_zero_for_unknown(problem):
    data = _fold(problem)
    pre, arch, (x_num, x_cat), _ = _inputs(problem, data)
    # 3 levels, the missing one (its code is the unknown one) and the unknown code 0
    assert cardinalities(pre) == [5] and arch["n_num"] == x_num.shape[1] >= 2
    assert x_num.dtype == torch.float32 and x_cat.dtype == torch.int64
    assert abs(float(x_num[:, 0].mean())) < 0.1  # standardised
    new = data.X_valid.head(3).copy()
    new["color"] = [None, "purple", "red"]
    _, codes = split_inputs(pre.transform(new), arch["n_num"], cardinalities(pre))
    assert codes[0, 0] == 0 and codes[1, 0] == 0 and codes[2, 0] > 0
    # codes beyond the table are clipped, NaN codes are unknown, NaN numbers are 0
    num, codes = split_inputs(np.array([[np.nan, 9.0], [1.0, np.nan]]), 1, [4])
    assert num.tolist() == [[0.0], [1.0]] and codes.tolist() == [[3], [0]]


# ---------------------------------------------------------------- network

def test_network_shapes_and_forward():
    arch = architecture({**PARAMS, "norm": "layer"}, 5, [4, 30], 3)
    assert arch["embedding_dims"] == [embedding_dim(4), embedding_dim(30)] and embedding_dim(10 ** 6) == 32
    net = build_network(arch)
    assert [e.num_embeddings for e in net["embeddings"]] == [4, 30]
    assert net["body"][0].in_features == 5 + sum(arch["embedding_dims"]) and len(net["body"]) == 8
    out = forward(net, torch.randn(7, 5), torch.randint(0, 4, (7, 2)))
    assert out.shape == (7, 3)
    only_codes = build_network(architecture(PARAMS, 0, [4], 1))
    assert forward(only_codes.eval(), torch.zeros(2, 0), torch.tensor([[1], [2]])).shape == (2, 1)


# ---------------------------------------------------------------- Lightning module

def test_module_step_uses_the_row_weights_and_optimizer_groups():
    arch = architecture(PARAMS, 3, [4], 2)
    module = TabularModule(build_network(arch), True, 0.01, 0.1, 2, 10, float("inf"))
    x_num, x_cat = torch.randn(6, 3), torch.tensor([[0], [1], [2], [3], [1], [2]])
    y = torch.tensor([0, 1, 1, 0, 1, 1])
    cw = torch.tensor(class_weights([2, 4], "balanced"), dtype=torch.float32)
    loss = module.training_step((x_num, x_cat, y, cw[y]), 0)
    expected = torch.nn.functional.cross_entropy(module(x_num, x_cat), y, weight=cw)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    config = module.configure_optimizers()
    groups = config["optimizer"].param_groups
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.1
    assert all(p.ndim < 2 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    assert config["lr_scheduler"]["interval"] == "step"
    assert groups[0]["lr"] == pytest.approx(0.01 * warmup_cosine(0, 2, 10))


def test_warmup_then_cosine():
    assert [warmup_cosine(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5) and warmup_cosine(20, 4, 20) == pytest.approx(0.0)


def test_loss_watch_fails_on_a_non_finite_loss():
    watch = LossWatch()
    watch.check_loss(1)  # nothing tracked yet
    watch.track_loss(torch.tensor(0.5))
    watch.check_loss(1)
    watch.track_loss(torch.tensor(float("inf")))
    with pytest.raises(TrialFailed, match="training loss became inf in epoch 3 .diverged: lower the learning rate"):
        watch.check_loss(3)


# ---------------------------------------------------------------- callbacks

def test_pruning_callback_reports_the_metric_of_each_epoch(problem):
    data = _fold(problem)
    curve = Curve()
    module, trainer, best, (xv_num, xv_cat) = _train(problem, data, curve, epochs=4)
    assert sorted(curve.values) == [1, 2, 3, 4]
    module.eval()
    with torch.inference_mode():  # the last report is the metric of the network as it ended
        pred = logits_to_scores(module(xv_num, xv_cat).numpy(), "binary", 0.0, 1.0)
    assert curve.values[4] == pytest.approx(data.metric(data.y_valid, pred, 2), rel=1e-6)
    sign = 1 if data.metric.greater_is_better else -1
    assert best.epoch == max(curve.values, key=lambda e: sign * curve.values[e])
    assert keep_best(best, module.net, trainer, data) == best.epoch


def test_pruning_stops_training_at_the_pruned_epoch(problem):
    curve = Curve(prune_at=2)
    with pytest.raises(optuna.TrialPruned):
        _train(problem, _fold(problem), curve, epochs=6)
    assert sorted(curve.values) == [1, 2]


def test_nan_inputs_stop_the_trial_with_the_reason(problem):
    data = _fold(problem)
    _, _, (x_num, _), _ = _inputs(problem, data)
    with pytest.raises(TrialFailed, match="training loss became nan in epoch 1"):
        _train(problem, data, Curve(), x_num=torch.full_like(x_num, float("nan")))


def test_deadline_stops_after_one_batch(problem):
    curve = Curve()
    _, trainer, _, _ = _train(problem, _fold(problem), curve, epochs=20, deadline=time.monotonic())
    assert trainer.current_epoch <= 1 and len(curve.values) <= 1


# ---------------------------------------------------------------- estimator

def _estimator(task: Task, n_out: int, **kw) -> MLPEstimator:
    torch.manual_seed(0)
    arch = architecture(PARAMS, 3, [4], n_out)
    return MLPEstimator().store(build_network(arch), arch, task, n_out, **kw)


def test_estimator_predicts_and_round_trips_without_torch_objects():
    import skops.io as sio

    X = np.column_stack([np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 4 - 1])
    est = _estimator(Task.MULTICLASS, 3)
    proba = est.predict_proba(X)
    assert proba.shape == (20, 3) and np.allclose(proba.sum(axis=1), 1)
    assert est.predict(X).tolist() == proba.argmax(axis=1).tolist()
    state = est.__getstate__()
    assert set(state) == {"arch_", "weights_", "task_", "classes_", "y_mean_", "y_scale_"}
    assert isinstance(state["weights_"], bytes)
    for loaded in (pickle.loads(pickle.dumps(est)),
                   sio.loads(sio.dumps(est), trusted=["trainers.mlp.estimator.MLPEstimator"])):
        assert loaded._net is None
        np.testing.assert_allclose(loaded.predict_proba(X), proba, rtol=1e-6)
    with pytest.raises(NotImplementedError, match="trained by trainers.mlp.trainer.MLPTrainer"):
        est.fit(X)


def test_regression_estimator_scales_back_and_has_no_proba():
    X = np.zeros((4, 4))
    est = _estimator(Task.REGRESSION, 1, y_mean=10.0, y_scale=2.0)
    raw = est.logits(X)[:, 0]
    np.testing.assert_allclose(est.predict(X), raw * 2.0 + 10.0, rtol=1e-6)
    with pytest.raises(AttributeError, match="this MLP is a regressor"):
        est.predict_proba(X)
    assert est.predict(np.zeros((0, 4))).shape == (0,)


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(3):  # no operation runs: the OpenMP pool stays single-threaded
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


def test_trainer_settings_log_nothing(tmp_path):
    trainer = lightning_trainer(str(tmp_path), "cpu", max_epochs=3, callbacks=[], validate=False,
                                accumulate_grad_batches=2)
    assert trainer.logger is None and trainer.max_epochs == 3 and trainer.limit_val_batches == 0
    assert trainer.accumulate_grad_batches == 2 and trainer.gradient_clip_val == 1.0
