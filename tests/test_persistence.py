"""Model folders: verified before anything is deserialized; atomic saves."""

import json
import shutil

import numpy as np
import pytest

from automl import engine
from automl.config import SearchConfig
from automl.data import prepare_target
from automl.exceptions import ModelFileError
from automl.persistence import load_model, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=120), "b": rng.choice(["x", "y"], 120)})
    df["y"] = (df.a > 0).astype(int)
    X, t = prepare_target(df, "y")
    res = engine.fit(X, t, SearchConfig(n_trials=2, time_budget=None, include=["lightgbm", "logistic"]),
                     target_name="y")
    folder = tmp_path_factory.mktemp("m") / "model"
    save_model(res.model, folder)
    return folder, df


def _copy(saved, tmp_path):
    folder, df = saved
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst, df


def test_roundtrip(saved):
    folder, df = saved
    model = load_model(folder)
    assert model.predict_frame(df.drop(columns="y")).shape == (len(df), 3)


def test_truncated_model_file(saved, tmp_path):
    folder, _ = _copy(saved, tmp_path)
    f = next(folder.glob("model-*.skops"))
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(folder)


def test_newer_format(saved, tmp_path):
    folder, _ = _copy(saved, tmp_path)
    m = json.loads((folder / "manifest.json").read_text())
    m["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelFileError, match="newer automl"):
        load_model(folder)


@pytest.mark.parametrize("name", ["../evil.skops", "/etc/passwd", "sub/x.skops", ".hidden"])
def test_manifest_path_escape(saved, tmp_path, name):
    folder, _ = _copy(saved, tmp_path)
    m = json.loads((folder / "manifest.json").read_text())
    m["members"][0]["file"] = name
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelFileError, match="outside the folder"):
        load_model(folder)


def test_untrusted_type_refused(saved, tmp_path):
    """A model file that would run code on load (os.system) is refused, checksum fixed or not."""
    import os

    from automl.persistence import skops_io
    from tests.runs import plant_model_file

    folder, _ = _copy(saved, tmp_path)
    plant_model_file(folder, skops_io().dumps({"f": os.system}))
    with pytest.raises(ModelFileError, match="'posix.system' is not on the allowlist"):
        load_model(folder)


def test_save_keeps_earlier_model_when_interrupted(saved, tmp_path, monkeypatch):
    folder, df = _copy(saved, tmp_path)
    before = (folder / "manifest.json").read_text()
    model = load_model(folder)
    from automl import persistence

    def fail(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "atomic_write_text", fail)
    with pytest.raises(OSError):
        save_model(model, folder)
    assert (folder / "manifest.json").read_text() == before
    assert load_model(folder).predict_frame(df.drop(columns="y")).shape[0] == len(df)


def test_every_learner_roundtrips_through_a_model_folder(mixed_frame, tmp_path):
    """Each trainer's fitted estimator saves and loads through skops' allowlist."""
    import importlib.util

    from automl.contracts import FitData, NullReporter
    from automl.engine import prepare_problem
    from automl.model import AutoMLModel
    from automl.registry import builtin, get_trainer, input_kinds

    X, t = prepare_target(mixed_frame, "label")
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    for name in builtin():  # not the test-only trainers other tests register
        if name == "mlp" and importlib.util.find_spec("lightning") is None:
            continue
        trainer = get_trainer(name)
        if problem.info.task not in trainer.tasks:
            continue
        if not input_kinds(name) & {c.kind for c in problem.info.schema.columns}:
            continue  # the image learners: tests/test_image.py round-trips them
        data = FitData(problem.X, problem.y, None, None, problem.info, problem.metric)
        est = trainer.fit(dict(trainer.default(problem.info)), data, NullReporter()).estimator
        model = AutoMLModel(problem.info.schema, problem.info.task, t.classes, "roc_auc", "label",
                            [est], [1.0], [{"learner": name}])
        save_model(model, tmp_path / name)
        loaded = load_model(tmp_path / name)
        np.testing.assert_allclose(loaded.predict_scores(X.head(20)), model.predict_scores(X.head(20)),
                                   rtol=1e-6, err_msg=name)


def test_a_model_of_many_arrays_saves_without_listing_the_zip_for_each(mixed_frame, tmp_path,
                                                                     monkeypatch):
    """skops writes each array as its own zip entry and asks whether its name is there
    already; listing every name for each made saving quadratic (a 1,280-round 4-class
    HistGradientBoosting model, 15,381 arrays: 5.5 s). The index of names answers it, and
    the file reads back to the same model."""
    import zipfile

    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    from automl.engine import prepare_problem
    from automl.model import AutoMLModel
    from automl.preprocessing import make_preprocessor

    X, t = prepare_target(mixed_frame, "label")
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    pre = make_preprocessor(problem.info.schema, "tree", n_rows=len(problem.y), task=problem.info.task)
    est = Pipeline([("preprocess", pre), ("model", HistGradientBoostingClassifier(
        max_iter=300, early_stopping=False, max_leaf_nodes=4, random_state=0))]).fit(problem.X, problem.y)
    model = AutoMLModel(problem.info.schema, problem.info.task, t.classes, "roc_auc", "label",
                        [est], [1.0], [{"learner": "hist_gb"}])
    listed = []
    real = zipfile.ZipFile.namelist
    monkeypatch.setattr(zipfile.ZipFile, "namelist", lambda self: listed.append(1) or real(self))
    save_model(model, tmp_path / "m")
    assert len(listed) < 10  # 300 predictors' arrays: one listing each before
    monkeypatch.undo()
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_scores(X), model.predict_scores(X))
