"""The probe starts while the study opens.

Opening a new SQLite study takes about a second (SQLAlchemy's and alembic's imports, the
schema, alembic's revision scripts), and the probe (:mod:`automl.fidelity`: the first
learner's default on a sample, one fold, cut short) takes about as long on a small table.
The driver does the one while a forked child does the other, so the first result comes a
second sooner on every table. When the study is open, the controller asks its first trial:
if that is the same probe, the running child becomes that trial
(:meth:`automl.controller.Controller.run`); if not, the child is stopped.

Only where nothing else can put trials in the study first: a new study in storage this run
owns (the command line's own run folder, not a shared ``--storage``, not ``--resume``),
trials forked on this machine (the local executor), a time budget and a sampler that takes
the queue (not grid). The probe is never pruned, so its child never waits on the driver
(busy opening the study); its intermediate values are not recorded.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from automl.fidelity import probe_rows
from automl.objective import TrialSpec
from automl.registry import get_trainer, trainer_class

if TYPE_CHECKING:
    import optuna

    from automl.config import SearchConfig
    from automl.budget import Budget
    from automl.executors import Executor
    from automl.problem import Problem

FIRST_TRIAL = 0  # a new study's first trial: the probe is queued first (automl.opening)


@dataclass
class PendingHooks:
    """The probe's hooks until its trial exists: where it started is kept for the trial;
    it is never pruned."""

    attrs: dict[str, Any] = field(default_factory=dict)
    trial: optuna.Trial | None = None

    def started(self, attrs: dict[str, Any]) -> None:
        self.attrs.update(attrs)
        if self.trial is not None:
            self.attach(self.trial)

    def report(self, step: int, value: float) -> bool:
        return False

    def attach(self, trial: optuna.Trial) -> None:
        self.trial = trial
        for key, value in self.attrs.items():
            trial.set_user_attr(key, value)


@dataclass
class EarlyProbe:
    """A probe started before the study opened."""

    spec: TrialSpec
    started: float  # time.perf_counter(), as the controller counts a trial's time
    hooks: PendingHooks

    def matches(self, number: int, probe: bool, spec: TrialSpec) -> bool:
        """Whether the study's trial ``number`` (with ``spec``) is this probe."""
        return probe and number == self.spec.number and \
            (spec.learner, spec.params) == (self.spec.learner, self.spec.params)


def allowed(config: SearchConfig, problem: Problem, executor: Executor, *, resume: bool,
            owned_storage: bool) -> bool:
    """Whether the probe may start before the study opens (see the module's text)."""
    return bool(config.time_budget) and config.sampler != "grid" and not resume and \
        owned_storage and getattr(executor, "name", "") == "local" and \
        bool(problem.learners) and trainer_class(problem.learners[0]).time_share


def start(problem: Problem, config: SearchConfig, executor: Executor, budget: Budget, *,
          keep_folds: bool, model_dir: str | None) -> EarlyProbe | None:
    """Submit the probe to ``executor`` now and leave it started on ``problem``; None (and
    nothing started) when the budget has no time for a trial.

    Its configuration is the one :func:`automl.opening.enqueue_defaults` queues first; the
    controller compares the two before it adopts the child."""
    deadlines = budget.trial_deadlines(probe=True)
    if deadlines is None:
        return None
    learner = problem.learners[0]
    trainer = get_trainer(learner)
    default = dict(trainer.default(problem.info))
    # as Objective.sample reads the queued trial: every parameter of the space
    params = {name: default[name] for name in trainer.space(problem.info) if name in default}
    soft, hard = deadlines
    spec = TrialSpec(
        number=FIRST_TRIAL, learner=learner, params=params, seed=config.seed,
        n_threads=config.threads_per_trial(len(problem.y), problem.info.n_features),
        soft_s=soft, limit_s=hard, accelerator=getattr(executor, "accelerator", "cpu"),
        keep_folds=keep_folds, max_train_rows=probe_rows(problem.info.n_features), fold_s=0.0,
        model_dir=model_dir,
        prunable=False)
    hooks = PendingHooks()
    started = time.perf_counter()
    if problem.raw:
        # the whole table is cleaned after this has started: the probe's child gets only
        # its rows (the same sample), cleaned now (automl.problem)
        executor.start(problem.first_split_part(spec.max_train_rows, spec.seed))
        executor.submit(dataclasses.replace(spec, max_train_rows=None), hooks)
        executor.start(problem)
    else:
        executor.start(problem)
        executor.submit(spec, hooks)
    return EarlyProbe(spec=spec, started=started, hooks=hooks)
