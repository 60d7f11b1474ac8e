"""Cost-aware fidelity: how many folds a trial fits, and on how many training rows.

Nothing is known about what a fit costs on a new table until a trial has run, so the first
trials must not be able to spend the budget on folds:

- **A time share per trial.** A tabular learner's first trial starts no new fold after
  ``SHARE_FRACTION`` of the search time: the folds done are its result, scored on fewer
  validation rows (a lower-fidelity result, not a failure). Once a learner's cost is
  known, its trials run all their folds (their rows sized to ``GROW_FRACTION`` of the time
  left, below): a trial scored on one fold can beat the others on a lucky fold. A fold
  under way is not cut at the share: trainers stop adding rounds, trees or epochs only at
  the trial's own deadline (the time left in the search), since a boosted model cut early
  is far worse than one fold fewer (flights at 60 s: validation RMSE 6.4 for a LightGBM
  trial cut at its share against 4.8 for one that ran on). Image and text learners, whose
  one fit is the whole point, keep the time left in the search.
- **A row sample per learner**, grown as the search goes (as FLAML grows its sample size).
  After each trial, the learner's cost per training row of a fold is known; when a fold on
  all rows would not fit its next trial's time, that trial trains on a seeded sample of
  each fold's training rows sized to fit (at most ``GROWTH`` times the last trial's rows,
  at least ``MIN_ROWS``, up to all rows). A trial whose fold ran into its deadline gives no
  upper bound on the cost, so the next sample is halved. The validation rows never change,
  so every trial is scored on the same rows; the final model is refitted on all rows (or,
  when that does not fit the budget, is the trial's own model).
- **A probe first, on every table** (with a time budget). The search starts with the first
  learner's default on at most ``PROBE_ROWS`` training rows (FLAML's first sample; fewer on
  wide tables, :func:`probe_rows`), one fold, that stops adding rounds after
  ``PROBE_SHARE`` of the budget: a model, a score and
  the progress line within seconds, where the default under cross-validation can take most
  of a short budget (100,000 rows at 60 s: its first trial finished at 22.5 s; 10,000
  flights rows: 12.7 s, LightGBM's default going on for 1,900-3,000 rounds a fold). At 2%
  of 60 s the first trial on 500,000 rows completes at 6.4 s, at 5% at 8.5 s. The default
  then runs on all rows as before; the probe's cost is not used to size it (on a sample
  that small, fixed costs dominate, and the rows it would choose for the default are too
  few). The preprocessing that trials share is fitted after the probe has started, not
  before it (the probe preprocesses its own sample): on 500,000 rows that shared fit takes
  seconds, on 5,000 rows of 10 columns 0.7-0.9 s, as long as the probe. Where this run
  owns a new study, the probe starts before the study opens (:mod:`automl.early_probe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from automl.trial_files import fold_models_path

SHARE_FRACTION = 0.25  # of the search time: at least four trials, whatever the first ones cost
GROW_FRACTION = 0.5  # of the time left: the most a trial of a learner of known cost may take
MIN_SHARE_S = 2.0
MIN_ROWS = 1_000
GROWTH = 4  # a learner's sample grows at most this much a trial
FIT_FRACTION = 0.7  # a fold's fit is sized to this part of its time (the rest: predict, score)
PROBE_ROWS = 10_000
# ... and at most this many cells (rows x features): on wide tables the probe's cost is
# binning and encoding every column of every row (5,000 columns: LightGBM's default took
# 5.2 s on 4,000 rows, 2.7 s of it building its dataset), so it gets fewer rows
PROBE_CELLS = 2_000_000
PROBE_SHARE = 0.02  # of the time budget (at least 1 s): the probe's training stops there
PROBE = "probe"  # a probe trial's user attribute ``queued``


def probe_rows(n_features: int) -> int:
    """The most training rows the probe uses: :data:`PROBE_ROWS`, fewer on wide tables.

    Example:
        >>> probe_rows(20), probe_rows(1_000), probe_rows(5_000)
        (10000, 2000, 1000)
    """
    return max(MIN_ROWS, min(PROBE_ROWS, PROBE_CELLS // max(1, n_features)))


def is_probe(trial: Any) -> bool:
    """Whether ``trial`` (live or frozen) is the probe: its cost says little of the learner's."""
    return trial.user_attrs.get("queued") == PROBE


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

    Example (100,000 training rows; a fold of all rows took 6 s):
        >>> rows = RowSample(n_train=100_000)
        >>> rows.for_learner("lightgbm", 2.0) is None  # nothing known yet: all rows
        True
        >>> rows.observe("lightgbm", rows=100_000, fold_fit_s=6.0, stopped=False)
        >>> rows.for_learner("lightgbm", 2.0)  # 0.7 * 2 s at 60 us a row
        23333
        >>> rows.observe("lightgbm", rows=23_333, fold_fit_s=0.5, stopped=False)
        >>> rows.for_learner("lightgbm", 2.0)  # cheaper than thought: as many as fit
        65332
        >>> rows.observe("lightgbm", rows=65_332, fold_fit_s=4.0, stopped=True)
        >>> rows.for_learner("lightgbm", 2.0)  # stopped at its deadline: half
        32666
    """

    n_train: int
    cost: dict[str, tuple[float, bool]] = field(default_factory=dict)  # s per row, stopped
    last: dict[str, int] = field(default_factory=dict)

    def known(self, learner: str) -> bool:
        return learner in self.cost

    def observe(self, learner: str, *, rows: int, fold_fit_s: float, stopped: bool) -> None:
        """A trial of ``learner`` fitted folds of ``rows`` training rows in ``fold_fit_s``
        seconds each (``stopped``: its first fold was cut at its deadline)."""
        if rows <= 0:
            return
        self.cost[learner] = (max(fold_fit_s, 1e-6) / rows, stopped)
        self.last[learner] = rows

    def for_learner(self, learner: str, time_s: float) -> int | None:
        """Rows for the next trial of ``learner``, which may take ``time_s`` seconds."""
        if learner not in self.cost:
            return None
        per_row, stopped = self.cost[learner]
        last = self.last[learner]
        if stopped:
            rows = last // 2
        else:
            rows = min(int(FIT_FRACTION * time_s / per_row), GROWTH * last)
        rows = max(min(MIN_ROWS, self.n_train), rows)
        return None if rows >= self.n_train else rows


# What the final model will cost (the controller keeps that much time for it)

SAVE_BYTES_PER_S = 50 * 2**20  # skops writes ~100 MB/s; half that, with the checksum and the disk
# Saving the model and the run's last files after the build: 1.2-1.4 s for 3-4 members on
# arrhythmia and german_credit at 60 s (`--debug`: "model saved in"), then ~0.4 s to exit
SAVE_S = 0.5
SAVE_PER_MEMBER_S = 0.3


def saving_estimate(n_members: int) -> float:
    return SAVE_S + SAVE_PER_MEMBER_S * max(1, n_members)


# A refit's time over its trial's fold fit time scaled to all rows, 42 refits on 10 tables
# at 60 s (session 29, `--debug` logs "refit of trial N took"): boosters that stopped early
# 0.46-1.1 (median 0.71) where the refit took 0.3 s or more, with 1.25 times the rows and
# the rounds (holdout or 5 folds), so 0.57 per row and round; forests 0.8-1.4; each
# refit's process adds ~0.2 s. The old rule (x 1.3, + 0.5 s) expected 2.4 times what they
# took, and the search stopped that much early (bank_marketing: 13.6 s kept, 5.0 s used).
REFIT_OVERHEAD_S = 0.25
EARLY_STOPPED_REFIT = 0.6
SAMPLED_REFIT_MARGIN = 1.3

REFIT_MAX_SHARE = 0.25  # of the budget: the most the search stops early for the final refit
CHEAP_REFIT_SHARE = 0.05  # of the budget: an ensemble member's refit the search waits for


def reserve_floor(budget_s: float) -> float:
    """The least time kept for the final model (saving it, at the least)."""
    return max(1.0, 0.05 * budget_s)


def refit_reserve(ranked: Any, problem: Any, fold_dir: str | None, budget_s: float) -> float:
    """Time to keep for the final model while the search runs: the best trial's refit plus
    the cheap refits (at most ``CHEAP_REFIT_SHARE`` of the budget each) of the other
    learners' best trials, possible ensemble members for diversity (arrhythmia, 2 folds: test
    log loss 0.92 with a member's first-split model, 0.83 with its refit). A total over
    ``REFIT_MAX_SHARE`` of the budget is not waited for (the best trial's first-split model
    stands in); the floor is :func:`reserve_floor`."""
    est = sum(final_member_estimate(t, problem, fold_dir) for t in ranked[:1])
    seen = {ranked[0].params.get("learner")} if ranked else set()
    members = 1
    for t in ranked[1:]:
        if t.params.get("learner") in seen:
            continue
        seen.add(t.params.get("learner"))
        cost = final_member_estimate(t, problem, fold_dir)
        if cost <= CHEAP_REFIT_SHARE * budget_s:
            est += cost
            members += 1
    est += saving_estimate(members)
    floor = reserve_floor(budget_s)
    return est if floor < est <= REFIT_MAX_SHARE * budget_s else floor


def build_estimate(members: Any, problem: Any, fold_dir: str | None, budget_s: float) -> float:
    """Seconds the final model will spend on these ensemble members, taken in order as
    :func:`automl.final_model.build_model` takes them: each bagged member's saving, the first
    member's refit, and another's refit only while the total stays within
    ``REFIT_MAX_SHARE`` of the budget. The build leaves a refit that would end past the
    budget out (or uses its first-split model), so the search does not stop for it."""
    total = 0.0
    for i, trial in enumerate(members):
        bag = _bag_estimate(trial, fold_dir)
        cost = refit_estimate(trial, problem) if bag is None else bag
        if i == 0 or bag is not None or total + cost <= REFIT_MAX_SHARE * budget_s:
            total += cost
    return total


def final_member_estimate(trial: Any, problem: Any, fold_dir: str | None) -> float:
    """Seconds the final model will spend on this trial: saving its bagged fold models when
    they were kept, else refitting it on all rows."""
    bag = _bag_estimate(trial, fold_dir)
    return refit_estimate(trial, problem) if bag is None else bag


def _bag_estimate(trial: Any, fold_dir: str | None) -> float | None:
    """Seconds to save the trial's kept fold models; None when none were kept."""
    if fold_dir is None:
        return None
    try:
        return fold_models_path(fold_dir, trial.number).stat().st_size / SAVE_BYTES_PER_S + 0.2
    except OSError:
        return None


def refit_estimate(trial: Any, problem: Any) -> float:
    """Seconds a refit on all rows is expected to take: the trial's fold fit time scaled to
    all rows (from its sample of them, when it had one), with ``REFIT_OVERHEAD_S`` for the
    refit's process. A trial that stopped early is refitted for its best rounds scaled to
    all rows, as :func:`automl.final_model.refit_trial` does, with no validation set to
    score each round (``EARLY_STOPPED_REFIT``); a trial on a sample keeps a margin
    (``SAMPLED_REFIT_MARGIN``) for fits that grow faster than the rows."""
    per_fold = float(trial.user_attrs.get("fold_fit_time", trial.user_attrs.get("fit_time", 1.0)))
    sampled = trial.user_attrs.get("train_rows")
    scale = len(problem.y) / max(1, sampled or problem.splits.n_train_rows)
    if trial.user_attrs.get("n_iterations"):
        scale *= EARLY_STOPPED_REFIT * len(problem.y) / max(1, problem.splits.n_train_rows)
    return per_fold * scale * (SAMPLED_REFIT_MARGIN if sampled else 1.0) + REFIT_OVERHEAD_S
