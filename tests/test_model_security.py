"""Model folders never run code, and a hand-edited manifest is caught.

Each payload below is planted as an attacker who can edit the folder would: the model file
is replaced, its automl header kept, and the manifest's checksum rewritten to match. Each
would create a marker file if it ran (``test_the_payloads_are_live`` proves that, by loading
them the way the old prefix allowlist did). ``automl predict`` and ``load_model`` must refuse
them with one line, before skops builds anything, and the marker must not exist.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from automl import cli
from automl.allowlist import Allowlist, audit
from automl.exceptions import ModelFileError
from automl.persistence import atomic_write_text, load_model, skops_io
from automl.preprocessing import datetime_features
from tests.conftest import AUTOML, ROOT
from tests.runs import plant_model_file, plugin_env, run_cli, tiny_csv

FIT = ("--n-trials", "2", "--include", "logistic", "--quiet")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    base = tmp_path_factory.mktemp("fitted")
    data = tiny_csv(base / "d.csv")
    assert cli.main(["fit", str(data), "--target", "y", "--output", str(base / "model"), *FIT]) == 0
    return base / "model", data


# ---------------------------------------------------------------- payloads

class _Touch:
    """Unpickling it opens ``path`` for writing (creates the marker)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _Slot:
    """A placeholder whose node in the skops tree is replaced by a hand-written one."""


def _node(module: str, name: str, loader: str, **rest) -> dict:
    return {"__module__": module, "__class__": name, "__loader__": loader, **rest}


def _json(value) -> dict:
    return _node("builtins", "str", "JsonNode", content=json.dumps(value), is_json=True)


def _tuple(*items) -> dict:
    return _node("builtins", "tuple", "TupleNode", content=[_json(i) for i in items])


def _call(module: str, name: str, *args) -> dict:
    """A node that makes skops call ``module.name(*args)`` while loading."""
    return _node(module, name, "ConstructorFromReduceNode", content=_tuple(*args))


def _dumps(obj, slot: dict | None = None) -> bytes:
    """skops bytes of ``obj``, with the node of any ``_Slot`` replaced by ``slot``."""
    data = skops_io().dumps(obj)
    if slot is None:
        return data

    def swap(node):
        if isinstance(node, dict):
            if node.get("__class__") == "_Slot":
                return slot
            return {k: swap(v) for k, v in node.items()}
        return [swap(v) for v in node] if isinstance(node, list) else node

    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            body = src.read(item)
            if item == "schema.json":
                body = json.dumps(swap(json.loads(body))).encode()
            dst.writestr(item, body)
    return out.getvalue()


def _ahead(pipe, step, slot=None) -> bytes:
    return _dumps(Pipeline([("evil", step), *pipe.steps]), slot)


def numpy_load_pickle(pipe, marker, work):
    pkl = work / "evil.npy"
    pkl.write_bytes(pickle.dumps(_Touch(str(marker))))
    return _ahead(pipe, FunctionTransformer(functools.partial(np.load, str(pkl), allow_pickle=True)))


def numpy_savetxt(pipe, marker, work):
    return _ahead(pipe, FunctionTransformer(functools.partial(np.savetxt, str(marker))))


def os_system(pipe, marker, work):
    return _ahead(pipe, _Slot(), _call("os", "system", f"touch '{marker}'"))


def builtins_exec(pipe, marker, work):
    return _ahead(pipe, _Slot(), _call("builtins", "exec", f"open({str(marker)!r}, 'w').close()"))


def subprocess_run(pipe, marker, work):
    slot = _node("subprocess", "run", "ConstructorFromReduceNode",
                 content=_node("builtins", "tuple", "TupleNode", content=[
                     _node("builtins", "list", "ListNode", content=[_json("touch"), _json(str(marker))])]))
    return _ahead(pipe, _Slot(), slot)


def unknown_class(pipe, marker, work):
    return _ahead(pipe, _Slot(), _call("logging", "FileHandler", str(marker)))  # opens the file


def other_numpy_function(pipe, marker, work):
    return _ahead(pipe, _Slot(), _call("numpy", "savetxt", str(marker), [1.0]))


def nested_deep(pipe, marker, work):
    evil = FunctionTransformer(functools.partial(np.savetxt, str(marker)))
    inner = Pipeline([("b", Pipeline([("c", Pipeline([("evil", evil)]))]))])
    return _dumps(Pipeline([pipe.steps[0], ("a", inner), *pipe.steps[1:]]))


def partial_with_object_arg(pipe, marker, work):
    """An allowed function, bound to an argument that is an object, not data."""
    step = FunctionTransformer(functools.partial(datetime_features, _Slot()))
    return _ahead(pipe, step, _call("logging", "FileHandler", str(marker)))


PAYLOADS = [numpy_load_pickle, numpy_savetxt, os_system, builtins_exec, subprocess_run,
            unknown_class, other_numpy_function, nested_deep, partial_with_object_arg]


def _copy(fitted, tmp_path):
    model, data = fitted
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    return folder, data


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda f: f.__name__)
def test_the_payloads_are_live(fitted, tmp_path, payload):
    """Loaded trusting every type they name (as the old prefix allowlist did for numpy.*),
    then used to predict, each payload creates its marker: the refusals below mean something."""
    sio = skops_io()
    folder, data = _copy(fitted, tmp_path)
    marker = tmp_path / "ran"
    blob = payload(load_model(folder).members[0], marker, tmp_path)
    try:
        model = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
        model.predict_proba(pd.read_csv(data).drop(columns="y"))
    except Exception:  # noqa: BLE001 - the payload ran; what it returns does not matter
        pass
    assert marker.exists(), payload.__name__


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda f: f.__name__)
def test_predict_refuses_a_planted_payload_before_building_anything(fitted, tmp_path, payload):
    folder, data = _copy(fitted, tmp_path)
    marker = tmp_path / "ran"
    plant_model_file(folder, payload(load_model(folder).members[0], marker, tmp_path))
    with pytest.raises(ModelFileError, match="does not load"):
        load_model(folder)
    loads = tmp_path / "loads.log"
    env = plugin_env(AUTOML_PLUGINS="tests.deserialize_spy", AUTOML_TEST_LOADS=str(loads))
    res = run_cli("predict", folder, data, "--output", tmp_path / "p.csv", env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("automl: error: ") and "refusing to load it" in lines[0], lines
    assert not marker.exists(), "the payload ran"
    assert not loads.exists(), "a model file was deserialized"
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("name,ok", [
    ("sklearn.utils.validation.check_array", False),  # a learner's function, not declared here
    ("automl.preprocessing.datetime_features", True),
    ("numpy.load", False),
])
def test_partial_is_allowed_only_for_a_declared_function_with_plain_arguments(name, ok):
    module, func = name.rsplit(".", 1)
    part = functools.partial(getattr(__import__(module, fromlist=[func]), func), "a", n=[1, 2.5])
    data = skops_io().dumps(FunctionTransformer(part))
    if ok:
        assert name in audit(data, Allowlist())
    else:
        with pytest.raises(ModelFileError, match=f"function '{name}' is not on the allowlist"):
            audit(data, Allowlist())
    # a bound argument that is an object (here an allowed type) is refused all the same
    bound = functools.partial(datetime_features, FunctionTransformer())
    with_object = skops_io().dumps(FunctionTransformer(bound))
    with pytest.raises(ModelFileError, match="not plain data"):
        audit(with_object, Allowlist())


@pytest.mark.parametrize("loader", ["MethodNode", "OperatorFuncNode", "content", "reduce", None])
def test_a_node_kind_the_audit_does_not_know_is_refused(loader):
    data = _dumps([_Slot()], _node("os", "system", loader, content=_tuple("true")))
    with pytest.raises(ModelFileError, match=f"loader {loader!r} for 'os.system'"):
        audit(data, Allowlist())


# ---------------------------------------------------------------- manifest edits

def _reverse_classes(m):
    m["classes"] = m["classes"][::-1]


def _edit(key, value):
    def edit(m):
        m[key] = value
    edit.__name__ = f"{key}={value}"
    return edit


def _member(key, value):
    def edit(m):
        m["members"][0][key] = value
    edit.__name__ = f"member {key}={value}"
    return edit


def _schema_kind(m):
    column = m["schema"]["columns"][0]
    column["kind"] = "numeric" if column["kind"] == "categorical" else "categorical"


@pytest.mark.parametrize("edit,what", [
    (_reverse_classes, "classes"),
    (_edit("task", "multiclass"), "task"),
    (_edit("target", "other"), "target"),
    (_edit("metric", "accuracy"), "metric"),
    (_edit("validation_score", 0.999), "validation_score"),
    (_edit("temperature", 3.0), "temperature"),
    (_schema_kind, "schema"),
    (_member("weight", 0.5), "weight"),
    (_member("learner", "lightgbm"), "description"),
], ids=["classes-reversed", "task", "target", "metric", "score", "temperature", "schema", "weight",
        "learner"])
def test_a_hand_edited_manifest_is_refused(fitted, tmp_path, edit, what):
    folder, data = _copy(fitted, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    expected = f"the manifest does not match the model files \\(it differs in: {what}\\)"
    with pytest.raises(ModelFileError, match=expected):
        load_model(folder)
    if what == "classes":  # the edit that would silently invert every prediction, from the CLI
        res = run_cli("predict", folder, data, "--output", tmp_path / "p.csv")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert "does not match the model files" in lines[0] and "refit" in lines[0], lines
        assert not (tmp_path / "p.csv").exists()


def test_swapped_members_and_a_missing_header_are_refused(fitted, tmp_path):
    from automl.persistence import save_model

    folder, data = _copy(fitted, tmp_path)
    model = load_model(folder)
    model.members, model.weights = model.members * 2, [0.25, 0.75]
    model.description = [{"learner": "logistic", "trial": 0}, {"learner": "logistic", "trial": 1}]
    save_model(model, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["members"] = manifest["members"][::-1]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="differs in: member order"):
        load_model(folder)
    manifest["members"] = manifest["members"][::-1]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert load_model(folder).weights == [0.25, 0.75]
    # a model file without the automl header (written by something else), checksum fixed
    blob = skops_io().dumps(model.members[0])
    (folder / manifest["members"][0]["file"]).write_bytes(blob)
    manifest["members"][0]["sha256"] = hashlib.sha256(blob).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="has no automl header"):
        load_model(folder)


def test_an_older_model_format_asks_for_a_refit(fitted, tmp_path):
    folder, _ = _copy(fitted, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="older automl .*refit the model"):
        load_model(folder)


# ---------------------------------------------------------------- the allowlist is complete

def _frame(task: str, dense: bool, n: int = 400) -> pd.DataFrame:
    """Numbers with missing values and, unless ``dense``, every other column kind (a
    high-cardinality categorical among them, so target encoding is saved too)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=n)
    df = pd.DataFrame({"x": x, "z": rng.uniform(size=n), "k": rng.integers(0, 9, n).astype(float)})
    df.loc[rng.choice(n, 30, replace=False), "z"] = np.nan
    if not dense:
        words = np.array(["good", "bad", "great", "poor", "fine", "dull"])
        df["color"] = rng.choice(["red", "green", "blue"], n)
        df["code"] = [f"c{v}" for v in rng.integers(0, 300, n)]
        df["when"] = pd.date_range("2024-01-01", periods=n, freq="D").astype(str)
        df["review"] = [" ".join(rng.choice(words, 4)) for _ in range(n)]
        df["flag"] = rng.choice(["yes", "no"], n)
    score = x + rng.normal(scale=0.5, size=n)
    df["y"] = {"binary": np.where(score > 0, "pos", "neg"),
               "multiclass": np.select([score < -0.5, score < 0.5], ["a", "b"], "c"),
               "regression": score * 10}[task]
    return df


@pytest.mark.slow
@pytest.mark.parametrize("task,dense", [("binary", True), ("multiclass", False), ("multiclass", True),
                                        ("regression", False), ("regression", True)])
def test_every_learner_roundtrips_for_every_task(tmp_path, task, dense):
    """Each built-in trainer's model (alone and as a bag of fold models) loads through the
    exact allowlist and predicts what it predicted before saving (binary with every column
    kind: tests/test_persistence.py)."""
    import importlib.util

    from automl.config import SearchConfig
    from automl.contracts import FitData, NullReporter
    from automl.data import prepare_target
    from automl.engine import prepare_problem
    from automl.ensemble import FoldBag
    from automl.model import AutoMLModel
    from automl.persistence import save_model
    from automl.registry import builtin, get_trainer, input_kinds

    X, t = prepare_target(_frame(task, dense), "y")
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    assert problem.info.task.value == task
    for name in builtin():
        if (name == "mlp" and importlib.util.find_spec("lightning") is None) or \
                (name == "catboost" and importlib.util.find_spec("catboost") is None):
            continue
        if not input_kinds(name) & {c.kind for c in problem.info.schema.columns}:
            continue  # the image learners: tests/test_image.py
        if name == "text_finetune" and not problem.info.schema.columns_of("text"):
            continue
        trainer = get_trainer(name)
        if problem.info.task not in trainer.tasks:
            continue
        data = FitData(problem.X, problem.y, None, None, problem.info, problem.metric)
        est = trainer.fit(dict(trainer.default(problem.info)), data, NullReporter()).estimator
        bag = FoldBag([est, est], problem.info.task, problem.info.n_classes)
        model = AutoMLModel(problem.info.schema, problem.info.task, t.classes, problem.metric.name, "y",
                            [est, bag], [0.5, 0.5], [{"learner": name}, {"learner": name}])
        save_model(model, tmp_path / name)
        loaded = load_model(tmp_path / name)
        np.testing.assert_allclose(loaded.predict_scores(X.head(30)), model.predict_scores(X.head(30)),
                                   rtol=1e-6, err_msg=name)


class _Wrapped(BaseEstimator):
    """A plugin's estimator class: loadable only once its trainer declares it."""

    def __init__(self, inner=None) -> None:
        self.inner = inner

    def fit(self, X, y=None):
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, X):
        return self.inner.predict_proba(X)


def test_a_plugin_trainer_declares_the_types_its_models_hold(fitted, tmp_path, monkeypatch):
    from automl import registry
    from automl.exceptions import ConfigError
    from automl.persistence import save_model

    folder, data = _copy(fitted, tmp_path)
    model = load_model(folder)
    pipe = model.members[0]
    model.members = [Pipeline([pipe.steps[0], ("model", _Wrapped(pipe.steps[-1][1]))])]
    model.description = [{"learner": "wrapped"}]
    before = (folder / "manifest.json").read_bytes()
    with pytest.raises(ConfigError, match=f"learner 'wrapped' cannot be saved: type '{__name__}._Wrapped' "
                                          "is not on the allowlist; its trainer must declare"):
        save_model(model, folder)
    assert (folder / "manifest.json").read_bytes() == before  # nothing written
    assert not list(folder.glob(".*.tmp"))  # nor left half-written

    class WrappedTrainer:
        name = "wrapped"
        saved_types = frozenset({f"{__name__}._Wrapped"})

    monkeypatch.setitem(registry._CUSTOM, "wrapped", WrappedTrainer)
    save_model(model, folder)
    X = pd.read_csv(data).drop(columns="y")
    np.testing.assert_allclose(load_model(folder).predict_scores(X), model.predict_scores(X))


# ---------------------------------------------------------------- file modes

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == mode


def test_predict_output_and_model_files_respect_the_umask(fitted, tmp_path):
    folder, data = _copy(fitted, tmp_path)
    out = tmp_path / "p.csv"
    res = subprocess.run([AUTOML, "predict", str(folder), str(data), "--output", str(out)],
                         capture_output=True, text=True, env=plugin_env(), cwd=ROOT, umask=0o027,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    model, _ = fitted  # written by `automl fit` in this process (umask of the test run)
    expected = 0o666 & ~_current_umask()
    for f in model.iterdir():
        if f.is_file() and f.suffix in (".json", ".skops"):
            assert stat.S_IMODE(f.stat().st_mode) == expected, f.name


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

