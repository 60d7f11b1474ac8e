"""The search controller: from prepared data to a finished Optuna study.

The loop is Optuna's (ask, run, tell, through ``study.optimize``); a trial samples a
learner and its space in the parent, then fits and validates in a forked child with a
hard time limit and a memory cap (see :mod:`automl.isolation`). The study is the single
source of truth: leaderboard, report, dashboard and a resumed search all read it.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from automl import study as study_mod
from automl.config import SMALL_DATA_ROWS, SearchConfig
from automl.contracts import DataInfo, FitData, NullReporter, Task
from automl.evaluation import predict_scores
from automl.exceptions import TrialFailed
from automl.isolation import default_memory_cap_mb, run_isolated
from automl.metrics import Metric, balance_report
from automl.registry import get_trainer
from automl.validation import Splits

log = logging.getLogger("automl")
HARD_KILL_GRACE_S = 2.0
ENSEMBLE_CANDIDATES = 10  # the best trials ensemble selection looks at (plus each learner's best)
MAX_FOLD_MODELS_BYTES = 256 * 2**20  # a trial's pickled fold models larger than this are not kept


@dataclass
class Problem:
    """The prepared data of one search: cleaned features, encoded target, splits."""

    X: pd.DataFrame
    y: np.ndarray
    info: DataInfo
    metric: Metric
    splits: Splits
    learners: list[str]
    classes: list | None = None
    # fold index -> style -> (fitted preprocessor, transformed training part, validation part);
    # shared by every trial, since preprocessing depends only on the fold and the style
    pre_cache: dict[int, dict[str, tuple[Any, Any, Any]]] = field(default_factory=dict)


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


class TrialReporter:
    """Reports intermediate values to the trial and raises ``TrialPruned`` when told to stop.

    In an isolated child it asks the parent (which holds the trial) through the pipe; the
    child never opens the storage itself.
    """

    def __init__(self, trial: optuna.Trial, *, in_child: bool) -> None:
        self._trial = trial
        self._in_child = in_child

    def handle(self, message: Any) -> bool:
        """In the parent: record a child's report and say whether to prune."""
        _, step, value = message
        self._trial.report(float(value), int(step))
        return bool(self._trial.should_prune())

    def report(self, step: int, value: float) -> None:
        if not np.isfinite(value):
            raise TrialFailed(f"the validation metric became {value} at step {step}")
        if self._in_child:
            from automl.isolation import ask_parent

            prune = ask_parent(("report", int(step), float(value)))
        else:
            self._trial.report(float(value), int(step))
            prune = self._trial.should_prune()
        if prune:
            raise optuna.TrialPruned(f"pruned at step {step} (value {value:.5g})")


def cross_validate(problem: Problem, learner: str, params: dict[str, Any], reporter: Any,
                   *, seed: int, n_threads: int, deadline: float, accelerator: str = "cpu",
                   keep_model_if_better: float | None = None,
                   keep_folds: tuple[str, float | None] | None = None) -> dict[str, Any]:
    """Fit one configuration on every split; return scores, out-of-fold predictions, timings.

    ``keep_folds`` is ``(path, threshold)``: with k-fold validation, the fold models are
    pickled to ``path`` when the trial's value is better than ``threshold`` (``None``:
    always), for the final model to bag them instead of refitting (see ``FoldBag``).

    BLAS and OpenMP pools are limited to the trial's threads: on small data more threads
    only contend (a 20-component SVD ran 15x slower with two busy threads than with one).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, n_threads)):
        return _cross_validate(problem, learner, params, reporter, seed=seed, n_threads=n_threads,
                               deadline=deadline, accelerator=accelerator,
                               keep_model_if_better=keep_model_if_better, keep_folds=keep_folds)


def _cross_validate(problem: Problem, learner: str, params: dict[str, Any], reporter: Any,
                    *, seed: int, n_threads: int, deadline: float, accelerator: str,
                    keep_model_if_better: float | None,
                    keep_folds: tuple[str, float | None] | None) -> dict[str, Any]:
    trainer = get_trainer(learner)
    info, metric, y = problem.info, problem.metric, problem.y
    k = info.n_classes
    oof: np.ndarray | None = None
    fold_scores: list[float] = []
    iterations: list[int] = []
    fit_times: list[float] = []
    first_model = None
    bagging = keep_folds is not None and len(problem.splits.folds) > 1
    fold_models: list[Any] = []
    for i, (tr, va) in enumerate(problem.splits.folds):
        data = FitData(
            X_train=problem.X.iloc[tr], y_train=y[tr], X_valid=problem.X.iloc[va], y_valid=y[va],
            info=info, metric=metric, seed=seed, n_threads=n_threads, deadline=deadline,
            accelerator=accelerator, extra={"preprocessed": problem.pre_cache.get(i, {})},
        )
        t0 = time.perf_counter()
        model = trainer.fit(params, data, reporter if i == 0 else NullReporter())
        fit_times.append(time.perf_counter() - t0)
        pred = predict_scores(model, data.X_valid, info.task, k)
        if oof is None:
            oof = np.full((len(y), k) if info.task.is_classification else len(y), np.nan,
                          dtype=np.float32)
        oof[va] = pred
        score = metric(y[va], pred, k)
        if not np.isfinite(score):
            raise TrialFailed(f"the validation {metric.name} is {score} on fold {i + 1}")
        fold_scores.append(score)
        if "n_iterations" in data.extra:
            iterations.append(int(data.extra["n_iterations"]))
        if i == 0:
            first_model = model
        if bagging:
            fold_models.append(model)
        n_folds = len(problem.splits.folds)
        if time.monotonic() > deadline and i + 1 < n_folds:
            raise TrialFailed(f"ran past its time limit after fold {i + 1} of {n_folds}")
    value = float(np.mean(fold_scores))
    result: dict[str, Any] = {
        "value": value, "fold_scores": fold_scores, "fit_time": float(np.sum(fit_times)),
        "fold_fit_time": float(np.mean(fit_times)), "oof": oof,
        "n_iterations": int(np.median(iterations)) if iterations else None,
    }
    if info.task.is_classification and oof is not None:
        valid = ~np.isnan(oof).any(axis=1)
        result["balance"] = balance_report(y[valid], oof[valid].astype(float), k)
    if keep_model_if_better is None or metric.better(value, keep_model_if_better):
        # Sent as bytes and unpickled by the parent only if it is used: unpickling LightGBM
        # runs OpenMP, and a process that ran OpenMP must not fork trial children any more.
        result["model"] = pickle.dumps(first_model, protocol=pickle.HIGHEST_PROTOCOL)
    if bagging and keep_folds is not None and (keep_folds[1] is None or metric.better(value, keep_folds[1])):
        blob = pickle.dumps(fold_models, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) <= MAX_FOLD_MODELS_BYTES:
            from automl.persistence import atomic_write_bytes

            atomic_write_bytes(Path(keep_folds[0]), blob)
    return result


@dataclass
class Objective:
    """The Optuna objective: sample a learner and its space, then cross-validate it."""

    problem: Problem
    config: SearchConfig
    budget: Budget
    storage_url: str | None
    on_result: Callable[[FrozenTrial | optuna.Trial, dict[str, Any]], None] | None = None
    best_so_far: float | None = None
    oof_dir: str | None = None
    fold_dir: str | None = None  # where candidate trials keep their fold models (bagging)
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def sample(self, trial: optuna.Trial) -> tuple[str, dict[str, Any]]:
        learner = trial.suggest_categorical("learner", self.problem.learners)
        if learner not in self.spaces:
            trainer = get_trainer(learner)
            self.spaces[learner] = dict(trainer.space(self.problem.info))
            self.defaults[learner] = dict(trainer.default(self.problem.info))
        grid = self.config.sampler == "grid"
        params = {name: study_mod.suggest(trial, f"{learner}__{name}", dist, grid,
                                          self.defaults[learner].get(name))
                  for name, dist in self.spaces[learner].items()}
        return learner, params

    def __call__(self, trial: optuna.Trial) -> float:
        # (the trial's `worker` is recorded by the sampler when Optuna creates it: study.WorkerTagging)
        learner, params = self.sample(trial)
        trial.set_user_attr("learner", learner)
        remaining = self.budget.remaining()
        if remaining <= 0.5:
            trial.set_user_attr("fail_reason", "no time left in the budget")
            raise TrialFailed("no time left in the budget")
        limit = remaining
        if self.budget.trial_timeout:
            limit = min(limit, self.budget.trial_timeout)
        # Trainers stop adding rounds at the soft deadline; the rest of the limit is for
        # predicting the validation rows, scoring and sending the result back.
        wrap_up = min(max(1.0, 0.15 * limit), 15.0)
        deadline = time.monotonic() + max(0.5 * limit, limit - wrap_up)
        hard_end = time.monotonic() + limit
        isolate = self.config.isolate and self.storage_url is not None
        reporter = TrialReporter(trial, in_child=isolate)
        keep_folds = None
        if self.fold_dir is not None:
            keep_folds = (str(fold_models_path(self.fold_dir, trial.number)),
                          candidate_threshold(trial.study, self.problem.metric, learner))
        job = lambda: cross_validate(  # noqa: E731
            self.problem, learner, params, reporter, seed=self.config.seed,
            n_threads=self.config.threads_per_trial(len(self.problem.y)), deadline=deadline,
            accelerator=self.config.extra.get("accelerator", "cpu"),
            keep_model_if_better=self.best_so_far, keep_folds=keep_folds,
        )
        t0 = time.perf_counter()
        log.debug("trial %d: %s starts, limit %.1fs", trial.number, learner, limit)
        try:
            if isolate:
                cap = self.config.memory_limit_mb or default_memory_cap_mb(self.config.n_jobs)
                # the grace never eats into the time kept for the refit and saving
                hard = min(hard_end + HARD_KILL_GRACE_S, self.budget.search_end() + 0.5)
                outcome = run_isolated(job, deadline=hard, mem_cap_mb=cap, on_message=reporter.handle)
                if outcome.status == "pruned":
                    raise optuna.TrialPruned(outcome.reason)
                if outcome.status != "ok":
                    raise TrialFailed(outcome.reason)
                result = outcome.value
            else:
                try:
                    result = job()
                except optuna.TrialPruned:
                    raise
                except TrialFailed:
                    raise
                except MemoryError:
                    raise TrialFailed("MemoryError: the trial ran out of memory") from None
                except Exception as exc:  # noqa: BLE001 - a failing learner must not stop the search
                    raise TrialFailed(f"{type(exc).__name__}: {exc}"[:1000]) from None
        except optuna.TrialPruned:
            trial.set_user_attr("fit_time", round(time.perf_counter() - t0, 3))
            raise
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", exc.reason)
            trial.set_user_attr("fit_time", round(time.perf_counter() - t0, 3))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            trial.set_user_attr("interrupted", True)
            raise
        trial.set_user_attr("fit_time", round(result["fit_time"], 3))
        trial.set_user_attr("fold_fit_time", round(result["fold_fit_time"], 3))
        trial.set_user_attr("fold_scores", [round(s, 6) for s in result["fold_scores"]])
        if result.get("n_iterations"):
            trial.set_user_attr("n_iterations", int(result["n_iterations"]))
        for key, val in (result.get("balance") or {}).items():
            trial.set_user_attr(key, round(val, 6))
        if self.oof_dir is not None and result.get("oof") is not None:
            save_oof(self.oof_dir, trial.number, result["oof"])
        if self.fold_dir is not None:
            prune_fold_models(self.fold_dir, trial.study, self.problem.metric)
        if self.on_result is not None:
            self.on_result(trial, result)
        value = result["value"]
        if self.best_so_far is None or self.problem.metric.better(value, self.best_so_far):
            self.best_so_far = value
        return value


def learner_params(trial: FrozenTrial) -> tuple[str, dict[str, Any]]:
    """Split a trial's flat parameters into its learner and that learner's own parameters."""
    learner = trial.params["learner"]
    prefix = f"{learner}__"
    return learner, {k[len(prefix):]: v for k, v in trial.params.items() if k.startswith(prefix)}


def enqueue_defaults(study: optuna.Study, problem: Problem, portfolio: bool = True) -> None:
    """Queue each learner's cheap default configuration, then the portfolio configurations
    (round-robin over learners), before the sampler takes over."""
    queue: list[tuple[str, dict[str, Any], str]] = []
    portfolios: list[list[dict[str, Any]]] = []
    for learner in problem.learners:
        trainer = get_trainer(learner)
        queue.append((learner, dict(trainer.default(problem.info)), "default"))
        extra = getattr(trainer, "portfolio", None)
        portfolios.append(list(extra(problem.info)) if (extra and portfolio) else [])
    for i in range(max((len(p) for p in portfolios), default=0)):
        for learner, configs in zip(problem.learners, portfolios):
            if i < len(configs):
                queue.append((learner, configs[i], "portfolio"))
    for learner, params, kind in queue:
        study.enqueue_trial({"learner": learner, **{f"{learner}__{k}": v for k, v in params.items()}},
                            user_attrs={"queued": kind}, skip_if_exists=True)


def save_oof(folder: str, number: int, oof: np.ndarray) -> None:
    """Keep a trial's out-of-fold predictions for ensemble selection (atomic write)."""
    import os

    path = Path(folder) / f"trial-{number}.npy"
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(oof, dtype=np.float32))
    os.replace(tmp, path)


def load_oof(folder: str, numbers: Sequence[int]) -> dict[int, np.ndarray]:
    out = {}
    for n in numbers:
        path = Path(folder) / f"trial-{n}.npy"
        if path.is_file():
            try:
                out[n] = np.load(path)
            except (OSError, ValueError):
                continue
    return out


def fold_models_path(folder: str, number: int) -> Path:
    return Path(folder) / f"trial-{number}.folds.pkl"


def candidate_numbers(study: optuna.Study, metric: Metric,
                      n: int = ENSEMBLE_CANDIDATES) -> list[int]:
    """The trials ensemble selection looks at: the ``n`` best, then each learner's best."""
    ranked = best_trials(study, metric, 10**9)
    numbers = [t.number for t in ranked[:n]]
    seen = {t.params.get("learner") for t in ranked[:n]}
    for t in ranked[n:]:
        if t.params.get("learner") not in seen:
            seen.add(t.params.get("learner"))
            numbers.append(t.number)
    return numbers


def candidate_threshold(study: optuna.Study, metric: Metric, learner: str,
                        n: int = ENSEMBLE_CANDIDATES) -> float | None:
    """The value a new ``learner`` trial must beat to become an ensemble candidate (None:
    any value does): the n-th best overall or that learner's best, whichever is worse."""
    ranked = best_trials(study, metric, 10**9)
    own = next((t.value for t in ranked if t.params.get("learner") == learner), None)
    if own is None or len(ranked) < n:
        return None
    nth = ranked[n - 1].value
    return nth if metric.better(own, nth) else own


def prune_fold_models(folder: str, study: optuna.Study, metric: Metric) -> None:
    """Delete the fold models of finished trials that are no longer ensemble candidates
    (running trials' files are left alone: another worker may be writing them)."""
    keep = set(candidate_numbers(study, metric))
    finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    for path in Path(folder).glob("trial-*.folds.pkl"):
        try:
            number = int(path.name.split("-", 1)[1].split(".", 1)[0])
        except ValueError:
            continue
        if number in finished and number not in keep:
            path.unlink(missing_ok=True)


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and np.isfinite(t.value)]


def best_trials(study: optuna.Study, metric: Metric, n: int = 1) -> list[FrozenTrial]:
    trials = completed(study)
    trials.sort(key=lambda t: t.value, reverse=metric.greater_is_better)
    return trials[:n]


SAVE_BYTES_PER_S = 50 * 2**20  # skops writes ~100 MB/s; half that, with the checksum and the disk


def final_member_estimate(trial: FrozenTrial, problem: Problem, fold_dir: str | None) -> float:
    """Seconds the final model will spend on this trial: saving its bagged fold models when
    they were kept, else refitting it on all rows."""
    if fold_dir is not None:
        try:
            return fold_models_path(fold_dir, trial.number).stat().st_size / SAVE_BYTES_PER_S + 0.2
        except OSError:
            pass
    return refit_estimate(trial, problem)


def refit_estimate(trial: FrozenTrial, problem: Problem) -> float:
    """Seconds a refit on all rows is expected to take, from the trial's fold fit time."""
    per_fold = float(trial.user_attrs.get("fold_fit_time", trial.user_attrs.get("fit_time", 1.0)))
    scale = len(problem.y) / max(1, problem.splits.n_train_rows)
    return per_fold * scale * 1.3 + 0.5


def run_optimize(study: optuna.Study, objective: Objective, budget: Budget,
                 callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
    """Run trials in this process until the budget (time or number of trials) is spent."""
    problem = objective.problem

    n_refit = 3 if objective.config.ensemble else 1

    def stop_when_spent(st: optuna.Study, trial: FrozenTrial) -> None:
        best = best_trials(st, problem.metric, n_refit)
        if budget.time_budget:
            est = sum(final_member_estimate(t, problem, objective.fold_dir) for t in best)
            floor = max(1.0, 0.05 * budget.time_budget)
            budget.reserve = min(max(floor, est + 1.0), 0.4 * budget.time_budget)
        if budget.time_budget and budget.remaining() <= 0.5:
            st.stop()
        if budget.n_trials is not None:
            done = [t for t in st.get_trials(deepcopy=False)
                    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
            if len(done) >= budget.n_trials:
                st.stop()

    if budget.n_trials is not None:
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        if len(done) >= budget.n_trials:
            return
    if budget.time_budget and budget.remaining() <= 0.5:
        return
    from automl.scheduler import LearnerScheduler

    schedule = LearnerScheduler(problem.learners, problem.metric.greater_is_better,
                                seed=objective.config.seed + len(study.trials))
    schedule(study)
    study.optimize(objective, catch=(TrialFailed,),
                   callbacks=[stop_when_spent, schedule, *callbacks], gc_after_trial=False)


def preprocess_folds(problem: Problem, styles: Sequence[str], seed: int) -> dict[int, dict[str, Any]]:
    """Fit each preprocessing style once per fold, for every trial to share."""
    from automl.preprocessing import make_preprocessor, preprocess_key, text_variants

    from threadpoolctl import threadpool_limits

    cache: dict[int, dict[str, Any]] = {}
    limits = threadpool_limits(limits=1 if len(problem.y) < SMALL_DATA_ROWS else None)
    for i, (tr, va) in enumerate(problem.splits.folds):
        cache[i] = {}
        for style in styles:
            for text in text_variants(problem.info):
                pre = make_preprocessor(problem.info.schema, style, seed=seed,  # type: ignore[arg-type]
                                        n_rows=len(tr), task=problem.info.task, text=text,
                                        backbone=problem.info.text_backbone)
                Xt = pre.fit_transform(problem.X.iloc[tr], problem.y[tr])
                Xv = pre.transform(problem.X.iloc[va])
                cache[i][preprocess_key(style, text)] = (pre, Xt, Xv)
    limits.restore_original_limits()
    return cache
