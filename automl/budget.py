"""The run's wall clock: when the search ends (leaving time for the final model) and how
long a trial starting now may run."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from automl.fidelity import PROBE_SHARE

HARD_KILL_GRACE_S = 2.0  # past a trial's limit before its process is killed


@dataclass
class Budget:
    """Wall-clock bookkeeping: the search ends early enough to leave time for the refit."""

    start: float
    time_budget: float | None
    n_trials: int | None
    reserve: float = 0.0
    trial_timeout: float | None = None

    @property
    def end(self) -> float:
        return self.start + self.time_budget if self.time_budget else math.inf

    def search_end(self) -> float:
        return self.end - self.reserve

    def remaining(self) -> float:
        return self.search_end() - time.monotonic()

    def trial_deadlines(self, probe: bool = False) -> tuple[float, float] | None:
        """A trial starting now: after how many seconds its trainer stops adding rounds (the
        soft deadline) and its process is killed (the hard one); None: no time left. The
        probe stops adding rounds after ``PROBE_SHARE`` of the budget."""
        remaining = self.remaining()
        if remaining <= 0.2:  # (_may_start asked for 0.5 s: asking took the rest)
            return None
        limit = min(remaining, self.trial_timeout or math.inf)
        # Trainers stop adding rounds at the soft deadline; the rest of the limit is for
        # predicting the validation rows, scoring and sending the result back. The grace
        # never eats into the time kept for the refit and saving.
        wrap_up = min(max(1.0, 0.15 * limit), 15.0)
        hard = min(limit + HARD_KILL_GRACE_S, remaining + 0.5)
        soft = max(0.5 * limit, limit - wrap_up)
        if probe and self.time_budget:
            soft = min(soft, max(1.0, PROBE_SHARE * self.time_budget))
        return soft, hard
