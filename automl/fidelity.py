"""Cost-aware fidelity: how long one trial may run, and on how many training rows.

Nothing is known about what a fit costs on a new table until a trial has run, so the first
trials must not be able to spend the budget:

- **A time share per trial.** Each tabular trial gets ``SHARE_FRACTION`` of the search time.
  Past it, the trial stops between folds (the folds done are its result, scored on fewer
  validation rows: a lower-fidelity result, not a failure) and the trainers stop adding
  boosting rounds, trees or epochs (the model so far is kept). Image and text learners,
  whose one fit is the whole point, keep the time left in the search.
- **A row sample per learner**, grown as the search goes (as FLAML grows its sample size).
  After a learner's trial, its cost per training row of a fold is known. When a fold on all
  training rows would not fit the share, the learner's next trials train on a seeded
  sample of each fold's training rows sized to fit (at least ``MIN_ROWS``); each later trial
  may double it while it fits, up to all rows. A trial whose fold was stopped at the share
  gives no upper bound on the cost, so the learner's next sample is halved. The validation
  rows never change, so every trial is scored on the same rows; the final model is refitted
  on all rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHARE_FRACTION = 0.25  # of the search time: at least four trials, whatever the first ones cost
MIN_SHARE_S = 2.0
MIN_ROWS = 1_000
FIT_FRACTION = 0.7  # a fold's fit is sized to this part of the share (the rest: predict, score)


def trial_share(search_s: float) -> float:
    """Seconds one trial may run before it stops adding folds, rounds or epochs.

    Example:
        >>> trial_share(57.0)
        14.25
        >>> trial_share(4.0)
        2.0
    """
    return max(MIN_SHARE_S, SHARE_FRACTION * search_s)


@dataclass
class RowSample:
    """Per learner: the training rows of a fold its next trial fits on (``None``: all).

    Example (2 s share, 100,000 training rows; a fold of all rows took 6 s):
        >>> rows = RowSample(n_train=100_000, share_s=2.0)
        >>> rows.for_learner("lightgbm") is None  # nothing known yet: all rows
        True
        >>> rows.observe("lightgbm", rows=100_000, fold_fit_s=6.0, stopped=False)
        >>> rows.for_learner("lightgbm")  # 0.7 * 2 s at 60 us a row
        23333
        >>> rows.observe("lightgbm", rows=23_333, fold_fit_s=0.5, stopped=False)
        >>> rows.for_learner("lightgbm")  # cheaper than thought: at most twice the last
        46666
        >>> rows.observe("lightgbm", rows=46_666, fold_fit_s=2.0, stopped=True)
        >>> rows.for_learner("lightgbm")  # stopped at the share: half
        23333
    """

    n_train: int
    share_s: float
    cost: dict[str, tuple[float, bool]] = field(default_factory=dict)  # s per row, stopped
    last: dict[str, int] = field(default_factory=dict)

    def observe(self, learner: str, *, rows: int, fold_fit_s: float, stopped: bool) -> None:
        """A trial of ``learner`` fitted folds of ``rows`` training rows in ``fold_fit_s``
        seconds each (``stopped``: its first fold was cut at the share)."""
        if rows <= 0:
            return
        self.cost[learner] = (max(fold_fit_s, 1e-6) / rows, stopped)
        self.last[learner] = rows

    def for_learner(self, learner: str) -> int | None:
        if learner not in self.cost:
            return None
        per_row, stopped = self.cost[learner]
        last = self.last[learner]
        if stopped:
            rows = last // 2
        else:
            rows = min(int(FIT_FRACTION * self.share_s / per_row), 2 * last)
        rows = max(min(MIN_ROWS, self.n_train), rows)
        return None if rows >= self.n_train else rows
