"""Memory bounds that do not depend on timing: a forest stops adding trees at its size cap
(``trainers.sklearn_trainers.FOREST_MAX_MB``), measured from the trees it has grown."""

from __future__ import annotations

import dataclasses
import pickle
import time
import warnings
import weakref

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from automl.config import SearchConfig
from automl.contracts import NullReporter, Task
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.registry import get_trainer
from automl.testing import tiny_frame
from trainers import sklearn_trainers
from trainers.sklearn_trainers import LogisticTrainer


def _fit_forest(rows, learner="random_forest", n_estimators=300, task=Task.REGRESSION):
    frame, target = tiny_frame(task, rows=rows)
    X, t = prepare_target(frame, target)
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    data = problem.fit_data(None, seed=0, n_threads=1, deadline=time.monotonic() + 120)
    params = {"n_estimators": n_estimators, "max_features": 1.0, "min_samples_leaf": 1,
              "criterion": "gini" if task.is_classification else "squared_error"}
    if task.is_classification:
        params["class_weight"] = None
    fitted = get_trainer(learner).fit(params, data, NullReporter())
    return getattr(fitted, "estimator", fitted)


def _forest(model):
    return model.steps[-1][1] if hasattr(model, "steps") else model


@pytest.mark.parametrize("learner", ["random_forest", "extra_trees"])
def test_a_forest_of_deep_trees_stops_at_its_size_cap(monkeypatch, learner):
    monkeypatch.setattr(sklearn_trainers, "FOREST_MAX_MB", 4)
    model = _forest(_fit_forest(6000, learner))
    n_trees = len(model.estimators_)
    assert sklearn_trainers.FOREST_FIRST <= n_trees < 300
    size = len(pickle.dumps(model)) / 2**20
    assert size <= 4 * 1.25, f"{n_trees} trees, {size:.1f} MB pickled"


def test_a_forest_that_fits_its_cap_keeps_all_its_trees():
    model = _forest(_fit_forest(300, task=Task.BINARY, n_estimators=120))
    assert len(model.estimators_) == 120


def test_kept_models_wait_on_disk_not_in_the_drivers_memory(tmp_path):
    from automl.final_model import FallbackModel
    from automl.metrics import get_metric

    keep = FallbackModel(get_metric("rmse", Task.REGRESSION), keep=1, folder=str(tmp_path))
    for number, value, learner in ((0, 5.0, "knn"), (1, 3.0, "knn"), (2, 4.0, "ridge")):
        trial = type("T", (), {"number": number, "params": {"learner": learner}})()
        keep.offer(trial, {"value": value, "model": pickle.dumps({"trial": number})})
    assert sorted(keep.models) == [1, 2]  # the best, and the best ridge
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-1.kept.pkl", "trial-2.kept.pkl"]
    assert not keep.models._memory  # nothing held in memory
    assert pickle.loads(keep.models.get(2)) == {"trial": 2}
    assert keep.models.get(0) is None
    (tmp_path / "trial-1.kept.pkl").unlink()  # a vanished file is no model, not a crash
    assert keep.models.get(1) is None


def test_a_childs_large_bytes_travel_beside_its_result_and_arrive_whole():
    from automl.child_messages import BLOB_BYTES
    from automl.isolation import run_isolated

    big, small = bytes(range(256)) * (3 * BLOB_BYTES // 256 + 7), b"x" * 10
    outcome = run_isolated(lambda: {"model": big, "note": small, "value": 0.5},
                           deadline=time.monotonic() + 60, mem_cap_mb=None)
    assert outcome.status == "ok"
    assert outcome.value == {"model": big, "note": small, "value": 0.5}


def test_a_childs_large_arrays_travel_out_of_band_and_arrive_whole_and_writable(monkeypatch):
    """The shared preprocessing of a large table is arrays of 100+ MB: they come as raw
    messages read into one buffer each, not inside a pickle that both sides hold twice."""
    import multiprocessing.connection as mpc

    import pandas as pd
    import scipy.sparse as sp

    from automl.child_messages import BLOB_BYTES
    from automl.isolation import run_isolated

    def arrays():
        rng = np.random.default_rng(0)
        n = 400_000
        return {"C": rng.normal(size=(n, 4)), "F": np.asfortranarray(rng.normal(size=(n, 4))),
                "strided": rng.normal(size=(10_000, 4))[:, ::2], "small": np.arange(3),
                "frame": pd.DataFrame({"x": rng.normal(size=n), "s": rng.choice(["a", "bb"], n),
                                       "c": pd.Categorical(rng.choice(list("xyz"), n))}),
                "sparse": sp.random(n, 50, density=0.05, format="csr", random_state=0)}

    sizes: list[int] = []
    recv_bytes = mpc.Connection.recv_bytes

    def counted(self, *args, **kwargs):
        message = recv_bytes(self, *args, **kwargs)
        sizes.append(len(message))
        return message

    monkeypatch.setattr(mpc.Connection, "recv_bytes", counted)
    outcome = run_isolated(arrays, deadline=time.monotonic() + 60, mem_cap_mb=None)
    assert outcome.status == "ok", outcome
    got, want = outcome.value, arrays()
    for key in ("C", "F", "strided", "small"):
        assert np.array_equal(got[key], want[key]) and got[key].flags.writeable, key
    assert got["F"].flags.f_contiguous
    pd.testing.assert_frame_equal(got["frame"], want["frame"])
    assert (got["sparse"] != want["sparse"]).nnz == 0 and got["sparse"].data.flags.writeable
    # inside the pickle: only the parts under BLOB_BYTES (codes, string data, the strided copy)
    assert max(sizes) < 2 * BLOB_BYTES, sizes  # 46.8 MB when the 3 to 13 MB arrays were in it


def test_each_large_part_of_a_childs_result_is_let_go_once_sent():
    """While a result crosses, the child's memory falls as the parent's grows: an array
    whose last reference was the message list is freed right after its own send."""
    from automl.child_messages import BLOB_BYTES, result_messages, send

    value = {"a": np.ones(BLOB_BYTES), "b": np.zeros(BLOB_BYTES), "model": b"m" * BLOB_BYTES}
    alive = [weakref.ref(value["a"]), weakref.ref(value["b"])]
    messages = result_messages("ok", value)
    del value
    seen: list[list[bool]] = []

    class Conn:
        def send_bytes(self, message):
            seen.append([ref() is not None for ref in alive])

    send(Conn(), messages)
    assert messages == []
    # header, pickle, a, b, model: "a" is gone before "b" is sent, "b" before the model
    assert seen == [[True, True], [True, True], [True, True], [False, True], [False, False]]


def test_the_parent_reads_a_large_array_straight_into_its_buffer():
    """``Connection.recv_bytes_into`` reads a message whole into a BytesIO, then copies it:
    the parent would briefly hold each array twice (the shared preprocessing of a table is
    hundreds of MB)."""
    import tracemalloc

    from automl.isolation import run_isolated

    size = 48 * 2**20
    tracemalloc.start()
    try:
        outcome = run_isolated(lambda: {"X": np.arange(size // 8, dtype=np.float64)},
                               deadline=time.monotonic() + 60, mem_cap_mb=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status == "ok", outcome
    assert outcome.value["X"][-1] == size // 8 - 1
    assert peak < 1.25 * size, peak / 2**20  # 2 x when read through a BytesIO


class _TrackedLogistic(LogisticRegression):
    """A logistic regression that counts how many of its fitted selves are alive."""

    def fit(self, X, y, sample_weight=None):
        _LIVE.add(self)
        return super().fit(X, y, sample_weight=sample_weight)


_LIVE: weakref.WeakSet = weakref.WeakSet()
_ALIVE_AT_FIT: list[int] = []


class _TrackedTrainer(LogisticTrainer):
    name = "tracked_logistic"
    saved_types = LogisticTrainer.saved_types | {f"{__name__}._TrackedLogistic"}

    def build(self, params, data):
        _ALIVE_AT_FIT.append(len(_LIVE))  # fold models still held when the next fit starts
        return _TrackedLogistic(C=params["C"], max_iter=200)


def _cv(tmp_path, **spec):
    from automl.objective import TrialSpec, cross_validate
    from automl.registry import registered

    frame, target = tiny_frame(Task.BINARY, rows=200)
    X, t = prepare_target(frame, target)
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    _ALIVE_AT_FIT.clear()
    with registered(_TrackedTrainer):
        spec = TrialSpec(number=7, learner="tracked_logistic", params={"C": 1.0}, seed=0,
                         n_threads=1, soft_s=60, limit_s=60, **spec)
        return cross_validate(problem, spec, reporter=NullReporter(),
                              deadline=time.monotonic() + 60), problem


def test_a_trial_writes_its_first_model_to_disk_and_holds_one_fold_model_at_a_time(tmp_path):
    result, problem = _cv(tmp_path, model_dir=str(tmp_path))
    assert result["n_folds"] == result["folds_done"] == 5
    # no earlier fold's model (the first one included) is alive when a fold's fit starts
    assert _ALIVE_AT_FIT == [0] * 5
    assert "model" not in result and result["model_file"] == str(tmp_path / "trial-7.first.pkl")
    with open(result["model_file"], "rb") as fh:
        model = pickle.load(fh)
    assert model.predict_proba(problem.X.iloc[:3]).shape == (3, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-7.first.pkl"]  # no temporary left


def test_a_trial_that_does_not_beat_the_kept_models_leaves_no_model_file(tmp_path):
    result, _ = _cv(tmp_path, model_dir=str(tmp_path), keep_model_if_better=1.5)  # AUC > 1.5: never
    assert "model" not in result and "model_file" not in result
    assert not list(tmp_path.iterdir())


def test_without_a_model_folder_the_first_model_comes_back_as_bytes(tmp_path):
    result, problem = _cv(tmp_path)
    assert _ALIVE_AT_FIT == [0, 1, 1, 1, 1]  # the first model is held, but only it
    assert pickle.loads(result["model"]).predict_proba(problem.X.iloc[:3]).shape == (3, 2)


def test_kept_models_take_a_trials_model_file_by_moving_it(tmp_path):
    from automl.final_model import FallbackModel
    from automl.metrics import get_metric

    kept, written = tmp_path / "kept", tmp_path / "trials"
    kept.mkdir(), written.mkdir()
    keep = FallbackModel(get_metric("rmse", Task.REGRESSION), keep=1, folder=str(kept))
    for number, value in ((0, 5.0), (1, 3.0)):
        path = written / f"trial-{number}.first.pkl"
        path.write_bytes(pickle.dumps({"trial": number}))
        trial = type("T", (), {"number": number, "params": {"learner": "knn"}})()
        keep.offer(trial, {"value": value, "model_file": str(path)})
    assert not list(written.iterdir())  # moved, not copied
    assert sorted(keep.models) == [1] and pickle.loads(keep.models[1]) == {"trial": 1}
    trial = type("T", (), {"number": 2, "params": {"learner": "knn"}})()
    keep.offer(trial, {"value": 1.0, "model_file": str(written / "gone.pkl")})  # vanished: no model
    assert sorted(keep.models) == [1]


def test_a_refit_with_a_model_folder_leaves_its_model_in_a_file_the_final_model_reads_once(tmp_path):
    from automl.final_model import _unpickle_member
    from automl.objective import TrialSpec, refit

    frame, target = tiny_frame(Task.BINARY, rows=120)
    X, t = prepare_target(frame, target)
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    spec = TrialSpec(number=3, learner="logistic", params={"C": 1.0, "class_weight": None}, seed=0,
                     n_threads=1, soft_s=60, limit_s=60, model_dir=str(tmp_path))
    path = refit(problem, spec)
    assert path == str(tmp_path / "trial-3.refit.pkl")
    model = _unpickle_member(path, problem)
    assert model.predict_proba(problem.X.iloc[:4]).shape == (4, 2)
    assert not list(tmp_path.iterdir())  # read once, then removed
    assert isinstance(refit(problem, dataclasses.replace(spec, model_dir=None)), bytes)  # elsewhere (a Ray node): the bytes


def test_saving_builds_deferred_members_one_at_a_time_and_predicting_builds_them_all(
        tmp_path, monkeypatch):
    """`automl fit` saves a model whose members wait in files (engine's lazy_members): each
    is built, written and let go before the next, so they are never all in memory."""
    from automl import persistence
    from automl.model import AutoMLModel, Deferred

    frame, target = tiny_frame(Task.BINARY, rows=120)
    X, t = prepare_target(frame, target)
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    with warnings.catch_warnings():  # unscaled columns: convergence is beside the point here
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = [LogisticRegression(C=c).fit(problem.X.select_dtypes("number").fillna(0),
                                              problem.y) for c in (0.1, 1.0, 10.0)]
    blobs = [pickle.dumps(m) for m in fitted]
    del fitted
    live: weakref.WeakSet = weakref.WeakSet()

    def loader(blob):
        member = pickle.loads(blob)
        live.add(member)
        return member

    model = AutoMLModel(schema=problem.info.schema, task=problem.info.task,
                        classes=problem.classes, metric="roc_auc", target="y",
                        members=[Deferred(lambda b=b: loader(b)) for b in blobs],
                        weights=[1.0, 1.0, 1.0],
                        description=[{"trial": i, "learner": "logistic"} for i in range(3)])
    alive_at_write = []
    write = persistence._write_member

    def watched(*args, **kwargs):
        alive_at_write.append(len(live))
        return write(*args, **kwargs)

    monkeypatch.setattr(persistence, "_write_member", watched)
    persistence.save_model(model, tmp_path / "m")
    assert alive_at_write == [1, 1, 1]  # all built first (the old way): [3, 3, 3]
    assert len(live) == 0 and all(isinstance(m, Deferred) for m in model.members)
    assert len(persistence.load_model(tmp_path / "m").members) == 3

    model.load_members()  # what predicting does first
    assert len(live) == 3 and not any(isinstance(m, Deferred) for m in model.members)


def test_a_trial_childs_full_collection_leaves_the_parents_heap_shared():
    """A forked trial starts with the parent's objects frozen (``automl.isolation``): a full
    collection in the child walks only its own objects. Walking the inherited ones writes to
    their headers and copies each page of the parent's heap into the child (about 40 MB with
    the driver's imports); here a heap of 300,000 dicts (tens of MB) must stay shared."""
    import gc

    import psutil

    from automl import isolation

    heap = [{"a": i} for i in range(300_000)]

    def child() -> float:
        me = psutil.Process()
        before = me.memory_full_info().uss
        gc.collect()
        return (me.memory_full_info().uss - before) / 2**20

    outcome = isolation.run_isolated(child, deadline=time.monotonic() + 60, mem_cap_mb=None)
    assert outcome.status == "ok", outcome.reason
    assert outcome.value < 8, f"the child's collection copied {outcome.value:.1f} MB"
    assert len(heap) == 300_000 and gc.isenabled()


def test_a_process_that_froze_objects_itself_keeps_them_frozen():
    import gc

    from automl import gc_freeze, isolation

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        outcome = isolation.run_isolated(lambda: 1, deadline=time.monotonic() + 60, mem_cap_mb=None)
        # still frozen (unfreezing empties the permanent generation; a few frozen objects
        # may have been freed meanwhile)
        assert outcome.status == "ok" and gc.get_freeze_count() > frozen // 2
        assert not gc_freeze._OWN_FREEZE and not gc_freeze._FROZEN_FOR
    finally:
        gc.unfreeze()


def test_the_parents_objects_stay_frozen_while_a_child_lives_and_thaw_after():
    """While a trial child lives, this process's own full collections must not walk the
    objects it shares with the child either (digits: one during a 20 s trial unshared 50
    MB); once no child forked under the freeze lives, they are collectable again."""
    import gc

    from automl import isolation

    seen: list[int] = []
    outcome = isolation.run_isolated(lambda: time.sleep(0.5) or 1, deadline=time.monotonic() + 60,
                                     mem_cap_mb=None, meanwhile=lambda: seen.append(gc.get_freeze_count()))
    assert outcome.status == "ok" and seen and min(seen) > 0
    assert gc.get_freeze_count() == 0
