"""The local executor: each evaluation in a forked child process on this machine, with a
hard time limit and a memory cap (see :mod:`automl.isolation`), ``--n-jobs`` at a time.

Children share the prepared data copy-on-write and start in milliseconds; one that hangs,
runs past its limit or grows past its cap is killed and its trial fails with the reason.
With ``--gpus-per-trial``, each child sees only the GPU(s) given to it
(``CUDA_VISIBLE_DEVICES``); a GPU is shared by ``1 / gpus_per_trial`` trials.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

from automl.config import SearchConfig
from automl.executors import Outcome, TrialHooks, check_local_gpus, gpu_env
from automl.isolation import ChildOutcome, IsolatedChild, ask_parent, default_memory_cap_mb, run_isolated
from automl.objective import TrialReporter, TrialSpec, evaluate
from automl.problem import Problem, preprocess_folds
from automl.study import worker_id

POLL_S = 0.1


def _ask_parent_report(step: int, value: float) -> bool:
    """In a trial's child: record an intermediate value through the parent, which holds the
    trial (the child never opens the storage), and get its pruning answer."""
    return bool(ask_parent(("report", step, value)))


def _never_prune(step: int, value: float) -> bool:
    """In a trial's child that asks nothing (``TrialSpec.prunable`` False)."""
    return False


def _outcome(child: ChildOutcome) -> Outcome:
    return Outcome(child.status, child.value if child.status == "ok" else None, child.reason)


class LocalExecutor:
    """Forked, limited children on this machine, ``config.n_jobs`` at a time."""

    name = "local"
    local_files = True

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.slots = config.n_jobs
        gpus = check_local_gpus(config, "this machine")
        self._gpu_free = {g: 1.0 for g in gpus}
        self.accelerator = "gpu" if gpus else config.extra.get("accelerator", "cpu")
        self.problem: Problem | None = None
        self._running: dict[int, tuple[IsolatedChild, list[str]]] = {}

    def start(self, problem: Problem) -> None:
        self.problem = problem

    def share_preprocessing(self, styles: Sequence[str], seed: int, limit_s: float,
                            meanwhile: Callable[[], None] | None = None) -> None:
        problem = self.problem
        assert problem is not None
        deadline = time.monotonic() + limit_s
        outcome = run_isolated(lambda: preprocess_folds(problem, styles, seed, deadline),
                               deadline=deadline, mem_cap_mb=self._cap(1),
                               meanwhile=meanwhile)
        if outcome.status == "ok":
            problem.pre_cache = outcome.value

    def _cap(self, n_parallel: int) -> float:
        return self.config.memory_limit_mb or default_memory_cap_mb(n_parallel)

    # -- GPUs: whole ones for gpus_per_trial >= 1, else a share of one ---------------------
    def _pick_gpus(self) -> list[str] | None:
        need = self.config.gpus_per_trial
        if need <= 0:
            return []
        if need < 1:
            for gpu, free in self._gpu_free.items():
                if free >= need - 1e-9:
                    return [gpu]
            return None
        whole = [g for g, free in self._gpu_free.items() if free >= 1 - 1e-9]
        return whole[:math.ceil(need)] if len(whole) >= math.ceil(need) else None

    def _take(self, gpus: list[str], sign: float) -> None:
        share = min(1.0, self.config.gpus_per_trial)
        for g in gpus:
            self._gpu_free[g] += sign * share

    def free_slots(self) -> int:
        free = self.slots - len(self._running)
        return free if free <= 0 or self._pick_gpus() is not None else 0

    def submit(self, spec: TrialSpec, hooks: TrialHooks) -> None:
        problem = self.problem
        assert problem is not None
        gpus = self._pick_gpus() or []
        env = gpu_env(gpus)
        reporter = TrialReporter(_ask_parent_report if spec.prunable else _never_prune)
        child = IsolatedChild(lambda: evaluate(problem, spec, reporter),
                              deadline=time.monotonic() + spec.limit_s,
                              mem_cap_mb=self._cap(self.slots),
                              on_message=lambda msg: hooks.report(msg[1], msg[2]), env=env)
        self._take(gpus, -1)
        self._running[spec.number] = (child, gpus)
        where: dict[str, Any] = {"worker": f"{worker_id().rsplit(':', 1)[0]}:{child.pid}"}
        if gpus:
            where["cuda_visible_devices"] = ",".join(gpus)
        hooks.started(where)

    def poll(self, timeout: float) -> list[tuple[int, Outcome]]:
        if not self._running:
            time.sleep(min(timeout, POLL_S))
            return []
        wait([c.conn for c, _ in self._running.values()], timeout=min(timeout, POLL_S))
        done = []
        for number, (child, gpus) in list(self._running.items()):
            outcome = child.poll(0)
            if outcome is not None:
                del self._running[number]
                self._take(gpus, +1)
                done.append((number, _outcome(outcome)))
        return done

    def call(self, job: Callable[[Problem, TrialSpec], Any], spec: TrialSpec) -> Outcome:
        problem = self.problem
        assert problem is not None
        gpus = self._pick_gpus() or []
        env = gpu_env(gpus)
        return _outcome(run_isolated(lambda: job(problem, spec),
                                     deadline=time.monotonic() + spec.limit_s,
                                     mem_cap_mb=self._cap(1), env=env))

    def cancel_all(self) -> list[int]:
        stopped = list(self._running)
        for child, gpus in self._running.values():
            child.kill()
            self._take(gpus, +1)
        self._running.clear()
        return stopped

    def close(self) -> None:
        self.cancel_all()
        self.problem = None
