"""Helpers for tests that run ``automl`` as real processes: start, watch the study, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import psutil
from optuna.trial import FrozenTrial, TrialState

from automl.study import configured
from tests.conftest import AUTOML, ROOT


def plugin_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess that also has the fake trainers of the tests."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": str(ROOT),
            "AUTOML_PLUGINS": "tests.fake_trainers",
            **extra,
        }
    )
    return env


def run_cli(
    *args: Any, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AUTOML, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or plugin_env(),
        cwd=ROOT,
    )


def start_cli(
    *args: Any, log_dir: Path, env: dict[str, str] | None = None, name: str = "run"
) -> subprocess.Popen:
    """Start ``automl`` in its own session (so its process group can be signalled and checked)."""
    out = (log_dir / f"{name}.out").open("w")
    err = (log_dir / f"{name}.err").open("w")
    return subprocess.Popen(
        [AUTOML, *map(str, args)],
        stdout=out,
        stderr=err,
        text=True,
        env=env or plugin_env(),
        cwd=ROOT,
        start_new_session=True,
    )


def stderr_of(log_dir: Path, name: str = "run") -> str:
    return (log_dir / f"{name}.err").read_text()


def exit_status(proc: subprocess.Popen, log_dir: Path, timeout: float = 60, name: str = "run") -> int:
    """``proc``'s exit status; if it has not exited within ``timeout`` seconds, its threads'
    stacks (the CLI prints them on SIGUSR1) and the end of its stderr, as the failure."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"automl did not exit within {timeout:g} s; where it was, and its "
                             f"stderr:\n{stderr_of(log_dir, name)[-8000:]}") from None


def tiny_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["x", "y", "z"], n)}
    )
    df["y"] = np.where(df.a + rng.normal(size=n) > 0, "yes", "no")
    df.to_csv(path, index=False)
    return path


def load_trials(url: str, name: str = "automl") -> list[FrozenTrial]:
    """The study's trials as stored now ([] while the study does not exist yet)."""
    from automl.study import make_storage

    try:
        return optuna.load_study(study_name=name, storage=make_storage(url)).get_trials(
            deepcopy=False
        )
    except Exception:  # noqa: BLE001 - no tables or no study yet
        return []


def wait_until(
    pred: Any, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.2
) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def n_state(trials: list[FrozenTrial], state: TrialState) -> int:
    return sum(t.state == state for t in trials)


def group_processes(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group."""
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not group_processes(pgid):
            return
        time.sleep(0.1)
    left = [(p.pid, " ".join(p.cmdline()[:3])) for p in group_processes(pgid)]
    raise AssertionError(f"processes outlived the killed run: {left}")


def params_key(t: FrozenTrial) -> str:
    return json.dumps(t.params, sort_keys=True, default=str)


def retry_of(t: FrozenTrial) -> int | None:
    """The trial this one retries: ours (``retry_of``) or Optuna's heartbeat retry."""
    value = t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial"))
    return None if value is None else int(value)


def check_no_repeats(trials: list[FrozenTrial]) -> None:
    """No configuration ran twice except as an explicit retry of a failed trial (once each),
    or as the probe (the first learner's default on a sample, one fold, cut short) and then
    the default itself."""
    by_number = {t.number: t for t in trials}
    assert len(by_number) == len(trials), "trial numbers repeat"
    retries = {t.number: retry_of(t) for t in trials if retry_of(t) is not None}
    counts = Counter(retries.values())
    assert all(c == 1 for c in counts.values()), f"a trial was retried more than once: {counts}"
    for number, original_number in retries.items():
        t, original = by_number[number], by_number[original_number]
        assert original.state == TrialState.FAIL, (t.number, original.number, original.state)
        assert params_key(t) == params_key(original)
    firsts = Counter(params_key(t) for t in trials if t.number not in retries and t.params
                     and t.user_attrs.get("queued") != "probe")
    repeated = [k for k, c in firsts.items() if c > 1]
    assert not repeated, f"configurations run more than once: {repeated}"


def check_dead_trials_rerun(numbers: list[int], after: list[FrozenTrial]) -> None:
    """Each trial a dead or interrupted process left runs again once, as far as it had a
    configuration: a fully sampled one is retried with the same parameters, a queued one
    that died mid-sampling goes back into the queue whole, and one that died while the
    sampler drew its parameters ran nothing and is not rerun."""
    by_number = {t.number: t for t in after}
    retried = {retry_of(t): t for t in after if retry_of(t) is not None}
    requeued = {t.user_attrs["requeue_of"]: t for t in after if "requeue_of" in t.user_attrs}
    for n in numbers:
        t = by_number[n]
        if configured(t):  # the objective had its whole configuration
            assert n in retried and n not in requeued, f"trial {n} was not retried"
            assert params_key(retried[n]) == params_key(t)
            assert retried[n].state.is_finished()
        elif t.system_attrs.get("fixed_params"):
            assert n in requeued and n not in retried, f"queued trial {n} was not queued again"
            fixed = t.system_attrs["fixed_params"]
            assert {k: requeued[n].params.get(k) for k in fixed} == fixed
        else:
            assert n not in retried and n not in requeued, n


def plant_model_file(folder: Path, data: bytes) -> None:
    """Replace the first model file of ``folder`` by the skops bytes ``data`` as someone who
    can edit the folder would: keep the file's automl header, rewrite the manifest's checksum."""
    import hashlib
    import io
    import zipfile

    from automl.persistence import HEADER

    manifest = json.loads((folder / "manifest.json").read_text())
    member = manifest["members"][0]
    header = zipfile.ZipFile(folder / member["file"]).read(HEADER)
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(HEADER, header)
    (folder / member["file"]).write_bytes(buf.getvalue())
    member["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
