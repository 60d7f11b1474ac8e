"""Memory bounds that do not depend on timing: a forest stops adding trees at its size cap
(``trainers.sklearn_trainers.FOREST_MAX_MB``), measured from the trees it has grown."""

from __future__ import annotations

import pickle
import time

import pytest

from automl.config import SearchConfig
from automl.contracts import Task
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.contracts import NullReporter
from automl.testing import tiny_frame
from automl.registry import get_trainer
from trainers import sklearn_trainers


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
    from automl.isolation import BLOB_BYTES, run_isolated

    big, small = bytes(range(256)) * (3 * BLOB_BYTES // 256 + 7), b"x" * 10
    outcome = run_isolated(lambda: {"model": big, "note": small, "value": 0.5},
                           deadline=time.monotonic() + 60, mem_cap_mb=None)
    assert outcome.status == "ok"
    assert outcome.value == {"model": big, "note": small, "value": 0.5}
