"""Executors decide where evaluations run; the controller asks and tells, they run.

Three kinds behind one interface:

- :class:`~automl.executors.inprocess.InProcessExecutor`: in this process, one at a time,
  without hard limits (``--no-isolation``, and the Python API's default);
- :class:`~automl.executors.local.LocalExecutor`: forked child processes on this machine,
  ``--n-jobs`` at a time, each with a hard time limit and a memory cap;
- :class:`~automl.executors.ray.RayExecutor`: Ray tasks on a cluster (``--executor ray``),
  each running the same forked, limited child on its worker.

An executor never touches the study: it reports a trial's start, its intermediate values
and its :class:`Outcome` through :class:`TrialHooks` and :meth:`Executor.poll`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from automl.config import SearchConfig
from automl.exceptions import ConfigError
from automl.objective import TrialSpec
from automl.problem import Problem

from automl.config import EXECUTORS  # noqa: F401 - re-exported


@dataclass
class Outcome:
    """How an evaluation ended. ``status`` is one of ok, pruned, failed, timeout, memory,
    crashed (the trial's process died), lost (its worker or node died: worth one retry)."""

    status: str
    value: Any = None
    reason: str = ""


class TrialHooks(Protocol):
    """What a running trial tells the controller (called in the driver)."""

    def started(self, attrs: dict[str, Any]) -> None:
        """The trial started; ``attrs`` say where (``worker``, ``ray_node``, ...)."""

    def report(self, step: int, value: float) -> bool:
        """An intermediate value; returns whether the trial should stop (pruned)."""


class Executor(Protocol):
    """Where evaluations run. ``submit`` only when :meth:`free_slots` is positive."""

    name: str
    # trials run on this machine and can write files the driver reads (TrialSpec.model_dir)
    local_files: bool

    def start(self, problem: Problem) -> None:
        """Make the problem available where trials run (once per run)."""

    def share_preprocessing(self, styles: Sequence[str], seed: int, limit_s: float,
                            meanwhile: Callable[[], None] | None = None) -> None:
        """Fit the shared preprocessing once, where trials run, and keep it for them;
        ``meanwhile`` (the driver's own work: telling finished trials) may be called while
        it runs, and is called once more by the caller after."""

    def free_slots(self) -> int:
        """How many more evaluations may be submitted now."""

    def submit(self, spec: TrialSpec, hooks: TrialHooks) -> None:
        """Start evaluating ``spec`` (its outcome comes from :meth:`poll`, keyed by number)."""

    def poll(self, timeout: float) -> list[tuple[int, Outcome]]:
        """Wait up to ``timeout`` seconds; the trials that ended meanwhile."""

    def call(self, job: Callable[[Problem, TrialSpec], Any], spec: TrialSpec) -> Outcome:
        """Run one job (a refit) under ``spec``'s limits and wait for it."""

    def cancel_all(self) -> list[int]:
        """Stop every running evaluation now; the numbers of the trials stopped."""

    def close(self) -> None:
        """Release what :meth:`start` took (processes, a Ray instance)."""


def make_executor(config: SearchConfig, storage_url: str | None) -> Executor:
    """The executor ``config`` asks for (``executor``; ``isolate=False`` means in-process).

    A study held in memory (no storage) runs its trials in this process unless Ray runs them:
    forking after OpenMP ran here can hang.
    """
    if config.executor == "ray":
        from automl.executors.ray import RayExecutor

        return RayExecutor(config)
    if storage_url is None and config.n_jobs > 1:
        raise ConfigError(f"n_jobs={config.n_jobs} runs trials in forked processes, which needs a "
                          "storage (e.g. storage='sqlite:///study.db'); give one, or n_jobs=1.")
    if config.executor == "inprocess" or not config.isolate or storage_url is None:
        from automl.executors.inprocess import InProcessExecutor

        return InProcessExecutor(config)
    from automl.executors.local import LocalExecutor

    return LocalExecutor(config)


TRIAL_DEVICES_ENV = "AUTOML_TRIAL_DEVICES"  # how many GPUs a trial was given (trainers.distributed)


def gpu_env(gpus: Sequence[str]) -> dict[str, str] | None:
    """A trial child's environment for the GPUs given to it (None: none given)."""
    if not gpus:
        return None
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus), TRIAL_DEVICES_ENV: str(len(gpus))}


def visible_gpus() -> list[str]:
    """The GPUs this machine shows (``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``),
    found without initialising CUDA in this process (its children fork)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def check_local_gpus(config: SearchConfig, where: str) -> list[str]:
    """The visible GPUs, or a one-line error when ``--gpus-per-trial`` asks for more."""
    if config.gpus_per_trial <= 0:
        return []
    gpus = visible_gpus()
    if len(gpus) < config.gpus_per_trial:
        raise ConfigError(f"--gpus-per-trial {config.gpus_per_trial:g} but {where} sees "
                          f"{len(gpus)} GPU(s); drop the flag, or run on a machine (or a Ray "
                          "cluster, --executor ray) that has them.")
    return gpus
