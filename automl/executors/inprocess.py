"""The in-process executor: trials run in this process, one at a time, without hard limits.

Used with ``--no-isolation`` and by the Python API by default. A trial that hangs hangs
the search; a trial's exception is recorded as its failure and the search goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from automl.config import SearchConfig
from automl.exceptions import TrialFailed
from automl.executors import Outcome, TrialHooks, check_local_gpus
from automl.objective import TrialReporter, TrialSpec, evaluate
from automl.problem import Problem, preprocess_folds

log = logging.getLogger("automl")


class InProcessExecutor:
    """Evaluates each trial right away, in this process, one at a time."""

    name = "inprocess"
    local_files = True

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        # honoured: one trial at a time may use the GPU(s) of this machine
        self.gpus = check_local_gpus(config, "this machine")
        self.accelerator = "gpu" if self.gpus else config.extra.get("accelerator", "cpu")
        self.problem: Problem | None = None
        self._done: list[tuple[int, Outcome]] = []

    def start(self, problem: Problem) -> None:
        self.problem = problem

    def share_preprocessing(self, styles: Sequence[str], seed: int, limit_s: float,
                            meanwhile: Callable[[], None] | None = None) -> None:
        assert self.problem is not None
        try:
            self.problem.pre_cache = preprocess_folds(self.problem, styles, seed)
        except Exception as exc:  # noqa: BLE001 - trials then preprocess on their own
            log.debug("shared preprocessing failed: %s", exc)

    def free_slots(self) -> int:
        return 0 if self._done else 1  # the last outcome is told before the next trial starts

    def submit(self, spec: TrialSpec, hooks: TrialHooks) -> None:
        assert self.problem is not None
        hooks.started({})
        outcome = _run(lambda: evaluate(self.problem, spec, TrialReporter(hooks.report)))
        self._done.append((spec.number, outcome))

    def poll(self, timeout: float) -> list[tuple[int, Outcome]]:
        done, self._done = self._done, []
        return done

    def call(self, job: Callable[[Problem, TrialSpec], Any], spec: TrialSpec) -> Outcome:
        assert self.problem is not None
        problem = self.problem
        return _run(lambda: job(problem, spec))

    def cancel_all(self) -> list[int]:
        return []

    def close(self) -> None:
        self.problem = None


def _run(fn: Callable[[], Any]) -> Outcome:
    """``fn``'s value, or why it failed (a failing learner must not stop the search)."""
    try:
        return Outcome("ok", fn())
    except optuna.TrialPruned as exc:
        return Outcome("pruned", reason=str(exc))
    except TrialFailed as exc:
        return Outcome("failed", reason=exc.reason)
    except MemoryError:
        return Outcome("memory", reason="MemoryError: the trial ran out of memory")
    except Exception as exc:  # noqa: BLE001
        return Outcome("failed", reason=f"{type(exc).__name__}: {exc}"[:1000])
