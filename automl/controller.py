"""The controller: asks, hands each trial to the executor, tells its outcome, and stops on the
budget (the study is opened and its first configurations queued by automl.opening).

The process running the controller (the driver) owns the study: executors never touch it.
While trials run, the driver records their heartbeats, so a driver that dies leaves trials
that Optuna's stale-trial check (any host) or a resume (this host) fails and runs again.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl import interrupts
from automl import optuna_internals as internals
from automl import study as study_mod
from automl.budget import Budget  # noqa: F401 - also imported from here (tests, benchmarks)
from automl.config import SearchConfig
from automl.early_probe import EarlyProbe
from automl.executors import Executor, Outcome
from automl.fidelity import (
    GROW_FRACTION,
    RowSample,
    build_estimate,
    is_probe,
    probe_rows,
    refit_reserve,
    reserve_floor,
    saving_estimate,
    trial_share,
)
from automl.heartbeats import Heartbeats
from automl.objective import Objective, TrialSpec, first_model_path
from automl.problem import Problem
from automl.registry import get_trainer, trainer_class
from automl.trial_files import (
    candidate_numbers,
    candidate_threshold,
    prune_fold_models,
    save_fold_models,
    save_oof,
)

log = logging.getLogger("automl")
RESCUE_LEARNERS = ("logistic", "ridge")  # the cheapest, surest fit of the built-in learners
RESCUE_ROWS = 2_000
POLL_S = 0.1


class _TrialHooks:
    """An executor's view of one running trial (called in the driver)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def started(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.trial.set_user_attr(key, value)

    def report(self, step: int, value: float) -> bool:
        self.trial.report(float(value), int(step))
        return bool(self.trial.should_prune())


class Controller:
    """Runs the search of one driver: ask, submit, poll, tell, until the budget is spent."""

    def __init__(self, study: optuna.Study, problem: Problem, config: SearchConfig,
                 executor: Executor, budget: Budget, *,
                 callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
                 on_result: Callable[[Any, dict[str, Any]], None] | None = None,
                 oof_dir: str | None = None, fold_dir: str | None = None,
                 model_dir: str | None = None,
                 share: Callable[[Callable[[], None]], None] | None = None,
                 early: EarlyProbe | None = None) -> None:
        self.study, self.problem, self.config = study, problem, config
        self.executor, self.budget = executor, budget
        self.callbacks, self.on_result = list(callbacks), on_result
        self.oof_dir, self.fold_dir = oof_dir, fold_dir
        # where trials write their first split's model (TrialSpec.model_dir); a trial's file
        # that on_result did not take (or a failed, pruned or killed trial's) goes after it
        self.model_dir = model_dir
        self.objective = Objective(problem, config)
        self.running: dict[int, tuple[optuna.Trial, float]] = {}  # number -> (trial, start)
        from automl.learner_choice import LearnerChooser

        self.choose_learner = LearnerChooser(problem.learners, problem.metric.greater_is_better,
                                             seed=config.seed + len(study.trials))
        self.heartbeat_on = internals.heartbeat_enabled(study)
        self.heartbeats: Heartbeats | None = None
        # cost-aware fidelity (automl.fidelity): a time share per trial, a row sample per learner
        self.share_s: float | None = None
        self.rows: RowSample | None = None
        if budget.time_budget:
            self.share_s = trial_share(max(0.0, budget.remaining()))
            self.rows = RowSample(n_train=problem.splits.n_train_rows)
        self.n_kept = 5 if config.ensemble else 1  # trials whose first-split model is kept
        self.row_limit: int | None = None  # at most this many training rows a fold (a rescue)
        self._planned_at = -1  # finished trials when the final model was last planned
        self._plan: tuple[tuple[int, ...], float] | None = None  # (candidates, its reserve)
        # the preprocessing every trial shares (engine._shared_preprocessing), fitted before the
        # first trial that is not a probe: a probe trains on a sample and preprocesses it itself,
        # so on a large table the first result comes before the slow shared fit, not after it
        self._share = share
        self.preprocessing_s = 0.0  # how long that shared fit took
        self.early = early  # the probe, started before the study opened (automl.early_probe)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        early, self.early = self.early, None
        if early is None and not self._may_start():
            return
        self.heartbeats = heartbeats = Heartbeats(self.study) if self.heartbeat_on else None
        if heartbeats is not None:
            heartbeats.start()
        try:
            if early is not None:
                self._adopt_early(early)
            while True:
                interrupts.checkpoint()
                self._fill()
                if not self.running:
                    break
                for number, outcome in self.executor.poll(POLL_S):
                    self._tell(number, outcome)
        except BaseException as exc:
            self._stop_running(exc)
            raise
        finally:
            if heartbeats is not None:
                heartbeats.stopped.set()

    def _finished(self) -> int:
        return sum(t.state.is_finished() for t in self.study.get_trials(deepcopy=False))

    def _may_start(self) -> bool:
        if self.budget.time_budget and self.budget.remaining() <= 0.5 and not self._plan_final():
            return False
        return self.budget.n_trials is None or \
            self._finished() + len(self.running) < self.budget.n_trials

    def _fill(self) -> None:
        while self.executor.free_slots() > 0 and self._may_start():
            if self._share is not None and not self._probe_waiting():
                self._share_preprocessing()
                continue  # it took time: may a trial still start?
            trial = self._ask()
            spec = self._spec(trial)
            if spec is None:
                self._tell(trial.number, Outcome("failed", reason="no time left in the budget"))
                return
            log.debug("trial %d: %s starts, limit %.1fs", trial.number, spec.learner, spec.limit_s)
            self.executor.submit(spec, _TrialHooks(trial))

    def _ask(self) -> optuna.Trial:
        if self.heartbeat_on:
            optuna.storages.fail_stale_trials(self.study)
        self.choose_learner(self.study)
        with warnings.catch_warnings():  # heartbeats are recorded here, not by study.optimize
            warnings.filterwarnings("ignore", "Heartbeat of storage")
            trial = self.study.ask()
        self.running[trial.number] = (trial, time.perf_counter())
        if self.heartbeats is not None:
            self.heartbeats.add(internals.trial_id(trial))
        return trial

    def _adopt_early(self, early: EarlyProbe) -> None:
        """The probe the executor started while the study opened becomes the study's first
        trial (:mod:`automl.early_probe`); if that trial is not the same probe, the early
        one is stopped and the trial runs as any other."""
        trial = self._ask()
        spec = self._spec(trial)
        if spec is not None and early.matches(trial.number, is_probe(trial), spec):
            self.running[trial.number] = (trial, early.started)
            early.hooks.attach(trial)
            trial.set_user_attr("started_early_s", round(time.perf_counter() - early.started, 2))
            log.debug("trial %d: the probe started %.1fs before the study opened", trial.number,
                      time.perf_counter() - early.started)
            return
        self.executor.cancel_all()
        if spec is None:
            self._tell(trial.number, Outcome("failed", reason="no time left in the budget"))
            return
        self.executor.submit(spec, _TrialHooks(trial))

    def _probe_waiting(self) -> bool:
        return any(is_probe(t) for t in self.study.get_trials(deepcopy=False,
                                                                states=(TrialState.WAITING,)))

    def _share_preprocessing(self) -> None:
        share, self._share = self._share, None
        t0 = time.monotonic()
        assert share is not None
        share(self._tell_finished)
        self.preprocessing_s = time.monotonic() - t0
        if self.budget.time_budget:  # the time share of a trial, from what is left now
            self.share_s = trial_share(max(0.0, self.budget.remaining()))

    def _tell_finished(self) -> None:
        """Record the trials that have finished, without waiting (called while the shared
        preprocessing runs: the probe's result is recorded when it comes)."""
        for number, outcome in self.executor.poll(0):
            self._tell(number, outcome)

    def _spec(self, trial: optuna.Trial) -> TrialSpec | None:
        # (the trial's `worker` is recorded by the sampler when Optuna creates it: study.WorkerTagging)
        learner, params = self.objective.sample(trial)
        trial.set_user_attr("learner", learner)
        remaining = self.budget.remaining()
        deadlines = self.budget.trial_deadlines(probe=is_probe(trial))
        if deadlines is None:
            return None
        soft, hard = deadlines
        max_rows = fold_s = None
        if self.share_s is not None and self.rows is not None and trainer_class(learner).time_share:
            # no new fold after its share for a learner of unknown cost; one of known cost
            # runs all its folds, on as many rows as fit half the time left (a trial scored
            # on fewer folds than the others can win on one lucky fold: digits at 60 s)
            known = self.rows.known(learner)
            fold_s = None if known else self.share_s
            max_rows = self.rows.for_learner(learner, min(max(self.share_s, GROW_FRACTION * remaining),
                                                          soft))
        if is_probe(trial):  # one fold (or the holdout) on a sample, cut short
            max_rows, fold_s = probe_rows(self.problem.info.n_features), 0.0
        if self.row_limit is not None and self.row_limit < self.problem.splits.n_train_rows:
            max_rows = min(max_rows or self.row_limit, self.row_limit)
        threshold = None
        if self.fold_dir is not None:
            threshold = candidate_threshold(self.study, self.problem.metric, learner)
        return TrialSpec(
            number=trial.number, learner=learner, params=params, seed=self.config.seed,
            n_threads=self.config.threads_per_trial(len(self.problem.y),
                                                    self.problem.info.n_features),
            soft_s=soft, limit_s=hard,
            accelerator=getattr(self.executor, "accelerator", "cpu"),
            keep_model_if_better=self._keep_threshold(learner), keep_folds=self.fold_dir is not None,
            fold_threshold=threshold, max_train_rows=max_rows, fold_s=fold_s,
            model_dir=self.model_dir)

    def _keep_threshold(self, learner: str) -> float | None:
        """A trial sends its first-split model back when it beats this: the value of the
        ``n_kept``-th best trial so far (of the best one while fewer have finished), or of
        its learner's best trial, whichever is easier to beat (the final model keeps those:
        :class:`automl.final_model.FallbackModel`); None: always send it."""
        metric = self.problem.metric
        best = study_mod.best_trials(self.study, metric, self.n_kept)
        own = [t for t in study_mod.best_trials(self.study, metric, 10_000)
               if t.params.get("learner") == learner][:1]
        if not best or not own:
            return None
        overall = best[-1].value if len(best) >= self.n_kept else best[0].value
        return min(overall, own[0].value) if metric.greater_is_better else max(overall, own[0].value)

    # -- outcomes ----------------------------------------------------------------------------
    def _tell(self, number: int, outcome: Outcome) -> None:
        trial, t0 = self.running.pop(number)
        if self.heartbeats is not None:
            self.heartbeats.discard(internals.trial_id(trial))
        try:
            frozen = self._finish(trial, outcome, t0)
        except optuna.exceptions.UpdateFinishedTrialError:
            # another driver failed it as stale: this one's heartbeats were late by more
            # than the grace period (a stalled machine or storage); its result is dropped
            log.warning("trial %d was ended by another process while it ran here (its heartbeat "
                        "was late); its result is dropped", number)
            self._update_reserve()
            return
        self._update_reserve()
        for callback in self.callbacks:
            callback(self.study, frozen)

    def _finish(self, trial: optuna.Trial, outcome: Outcome, t0: float) -> FrozenTrial:
        number = trial.number
        if outcome.status == "ok":
            frozen = self.study.tell(trial, self._record(trial, outcome.value))
        else:
            trial.set_user_attr("fit_time", round(time.perf_counter() - t0, 3))
            if outcome.status == "pruned":
                frozen = self.study.tell(trial, state=TrialState.PRUNED)
            else:
                trial.set_user_attr("fail_reason", outcome.reason)
                log.debug("trial %d failed: %s", number, outcome.reason)
                frozen = self.study.tell(trial, state=TrialState.FAIL)
                if outcome.status == "lost" and study_mod.retry_once(self.study, frozen):
                    log.warning("trial %d was lost (%s); its configuration runs once more",
                                number, outcome.reason)
        if self.model_dir is not None:
            first_model_path(self.model_dir, number).unlink(missing_ok=True)
        return frozen

    def _record(self, trial: optuna.Trial, result: dict[str, Any]) -> float:
        """The trial's attributes and kept files from a result; returns its value."""
        trial.set_user_attr("fit_time", round(result["fit_time"], 3))
        trial.set_user_attr("fold_fit_time", round(result["fold_fit_time"], 3))
        trial.set_user_attr("fold_scores", [round(s, 6) for s in result["fold_scores"]])
        if result.get("folds_done", 0) < result.get("n_folds", 0):
            trial.set_user_attr("partial_folds", f"{result['folds_done']}/{result['n_folds']}")
            log.debug("trial %d: out of time after %d of %d folds; scored on those", trial.number,
                      result["folds_done"], result["n_folds"])
        if result.get("n_iterations"):
            trial.set_user_attr("n_iterations", int(result["n_iterations"]))
        rows = result.get("train_rows")
        if rows and rows < self.problem.splits.n_train_rows:
            trial.set_user_attr("train_rows", int(rows))
        if result.get("stopped_at_deadline"):
            trial.set_user_attr("stopped_at_deadline", True)
        if result.get("accelerator"):
            trial.set_user_attr("accelerator", result["accelerator"])
        if rows and self.rows is not None and trainer_class(trial.params["learner"]).time_share \
                and not is_probe(trial):
            self.rows.observe(trial.params["learner"], rows=int(rows),
                              fold_fit_s=float(result["fold_fit_time"]),
                              stopped=bool(result.get("stopped_at_deadline")))
        for key, val in (result.get("balance") or {}).items():
            trial.set_user_attr(key, round(val, 6))
        if self.oof_dir is not None and result.get("oof") is not None:
            save_oof(self.oof_dir, trial.number, result["oof"])
        if self.fold_dir is not None:
            if result.get("fold_models"):
                save_fold_models(self.fold_dir, trial.number, result["fold_models"])
            prune_fold_models(self.fold_dir, self.study, self.problem.metric)
        if self.on_result is not None:
            self.on_result(trial, result)
        return float(result["value"])

    def _update_reserve(self) -> None:
        """Keep time for the final model (:func:`automl.fidelity.refit_reserve`); other
        ensemble members are refitted when time is left, else their first-split models are
        used (the best ``n_kept`` are kept)."""
        if self.budget.time_budget:
            ranked = study_mod.best_trials(self.study, self.problem.metric, 10_000)
            self.budget.reserve = refit_reserve(ranked, self.problem, self.fold_dir,
                                                self.budget.time_budget)

    def _plan_final(self) -> bool:
        """When the search would stop for the final model: choose the ensemble now, as the
        final model will, and keep time for its members' refits only, not for every learner's
        best that might join it (ames at 60 s stopped with 11 s left for refits of which the
        ensemble then needed 2 s). True when the search may go on. At most once per finished
        trial (the next result restores the wider reserve), and the ensemble is chosen again
        only when its candidates changed (choosing took 0.45 s on a 2,400-row table)."""
        finished = self._finished()
        if not (self.config.ensemble and self.oof_dir) or finished == self._planned_at:
            return False
        self._planned_at = finished
        candidates = tuple(candidate_numbers(self.study, self.problem.metric))
        if self._plan is None or self._plan[0] != candidates:
            from automl.final_model import select_ensemble

            t0 = time.monotonic()
            try:
                trials, _, _ = select_ensemble(self.problem, self.study, self.oof_dir,
                                               announce=False)
            except Exception as exc:  # noqa: BLE001 - the wider reserve stands
                log.debug("could not plan the final model: %s", exc)
                return False
            took = time.monotonic() - t0
            # the selection runs again at the end: its time is kept as well
            est = build_estimate(trials, self.problem, self.fold_dir, self.budget.time_budget)
            self._plan = (candidates, est + saving_estimate(len(trials)) + took)
            log.debug("final model planned: trials %s, %.2fs to choose, %.1fs to build",
                      [t.number for t in trials], took, est)
        reserve = max(self._plan[1], reserve_floor(self.budget.time_budget))
        if reserve >= self.budget.reserve:
            return False
        self.budget.reserve = reserve
        return self.budget.remaining() > 0.5

    def rescue(self) -> None:
        """When the search ended with no finished trial: one more trial on at most
        ``RESCUE_ROWS`` training rows, so that a budget that can hold one model ends with
        one. It is the next queued configuration (a learner's default or portfolio entry),
        else the linear learner's default (else the first learner's); it runs in the time
        kept for the final model plus part of the final model's grace (see
        :func:`automl.final_model.build_model`)."""
        study, problem, budget = self.study, self.problem, self.budget
        if not budget.time_budget:
            return
        budget.reserve = -0.25 * max(0.1 * budget.time_budget, 5.0)
        if budget.remaining() <= 0.5:
            return
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            fixed = waiting[0].system_attrs.get("fixed_params") or {}
            learner = str(fixed.get("learner", "the next queued learner"))
        else:
            learner = next((n for n in problem.learners if n in RESCUE_LEARNERS), problem.learners[0])
            params = get_trainer(learner).default(problem.info)
            study.enqueue_trial({"learner": learner, **{study_mod.param_name(learner, k): v
                                                        for k, v in params.items()}},
                                user_attrs={"queued": "rescue"})
        log.warning("no trial finished in the search; fitting %s on at most %d rows so that the "
                    "run ends with a model", learner, RESCUE_ROWS)
        budget.n_trials = self._finished() + len(self.running) + 1
        self.share_s = max(0.5, budget.remaining() - 0.5)
        self.row_limit = RESCUE_ROWS
        self.run()

    def _stop_running(self, exc: BaseException) -> None:
        """On Ctrl-C (or any error): stop every evaluation and record its trial as interrupted
        (a resume runs its configuration again)."""
        try:
            self.executor.cancel_all()
        except Exception as err:  # noqa: BLE001 - best effort while stopping
            log.debug("could not cancel the running trials: %s", err)
        reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else \
            f"interrupted ({type(exc).__name__})"
        for trial, _ in list(self.running.values()):
            try:
                trial.set_user_attr("fail_reason", reason)
                trial.set_user_attr("interrupted", True)
                self.study.tell(trial, state=TrialState.FAIL)
            except Exception as err:  # noqa: BLE001 - a resume fails it anyway (dead worker)
                log.debug("could not mark trial %d interrupted: %s", trial.number, err)
        self.running.clear()
