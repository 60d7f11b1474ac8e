"""One AutoML run: prepare the problem, search, refit the winner, return the model.

Used by the command line and by the Python API alike.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from automl import study as study_mod
from automl.config import SearchConfig
from automl.contracts import DataInfo, FitData, NullReporter
from automl.data import Target
from automl.exceptions import ConfigError, DataError, SearchFailedError
from automl.isolation import default_memory_cap_mb, run_isolated
from automl.metrics import get_metric
from automl.model import AutoMLModel
from automl.registry import get_trainer, resolve_learners
from automl.schema import FeatureSchema, clean_frame, infer_schema
from automl.search import (
    Budget,
    Objective,
    Problem,
    best_trials,
    enqueue_defaults,
    learner_params,
    refit_estimate,
    run_optimize,
)
from automl.validation import make_splits

log = logging.getLogger("automl")
STUDY_FORMAT = 1


@dataclass
class FitResult:
    model: AutoMLModel
    study: optuna.Study
    problem: Problem
    summary: dict[str, Any] = field(default_factory=dict)


def prepare_problem(X_raw: pd.DataFrame, target: Target, config: SearchConfig,
                    schema: FeatureSchema | None = None) -> Problem:
    """Infer column kinds, clean the frame, choose the metric, the learners and the splits."""
    schema = schema or infer_schema(X_raw)
    for col in schema.columns:
        if col.kind in ("identifier", "constant", "empty"):
            log.info("dropping column '%s' (%s%s)", col.name, col.kind, f": {col.note}" if col.note else "")
        elif col.note:
            log.warning("column '%s': %s", col.name, col.note)
    if not schema.used:
        raise DataError("no usable feature column: every column is an identifier, constant or empty "
                        f"({', '.join(c.name + '=' + c.kind for c in schema.columns[:10])}); "
                        "add informative columns.")
    X = clean_frame(X_raw, schema)
    _warn_leaks(X, target)
    metric = get_metric(config.metric, target.task)
    splits = make_splits(target.y, target.task, seed=config.seed, cv=config.cv)
    counts = tuple(int(c) for c in np.bincount(target.y)) if target.task.is_classification else ()
    info = DataInfo(task=target.task, n_rows=len(X), n_features=len(schema.used),
                    n_classes=len(target.classes or []), class_counts=counts, schema=schema,
                    n_train_rows=splits.n_train_rows)
    learners = resolve_learners(target.task, config.include, config.exclude)
    if X.shape[1] > len(X):
        log.info("more columns (%d) than rows (%d): linear and tree models are regularised by the search",
                 X.shape[1], len(X))
    return Problem(X=X, y=target.y, info=info, metric=metric, splits=splits, learners=learners,
                   classes=target.classes)


def _warn_leaks(X: pd.DataFrame, target: Target) -> None:
    """Warn about a column that alone determines the target (known only after the outcome?)."""
    y = pd.Series(target.y)
    for col in X.columns:
        s = X[col]
        if s.isna().mean() > 0.5:
            continue
        if target.task.is_classification:
            if s.nunique() <= 1 or s.nunique() > max(50, len(s) // 2):
                continue
            purity = pd.crosstab(s.astype(str), y).max(axis=1).sum() / len(s)
            if purity >= 0.999 and s.nunique() <= 2 * len(target.classes or []):
                log.warning("column '%s' alone predicts the target almost perfectly: it may leak the "
                            "answer; drop it (--exclude-columns) if it is only known afterwards", col)
        elif pd.api.types.is_numeric_dtype(s) and s.nunique() > 2:
            corr = np.corrcoef(np.nan_to_num(s.to_numpy(dtype=float)), target.y)[0, 1]
            if np.isfinite(corr) and abs(corr) > 0.999:
                log.warning("column '%s' is almost identical to the target (correlation %.4f): it may "
                            "leak the answer; drop it if it is only known afterwards", col, corr)


def open_study(config: SearchConfig, problem: Problem, storage_url: str | None,
               study_name: str, resume: bool, target_name: str) -> optuna.Study:
    """Create the study, or load it to resume; check a resumed study matches this run."""
    storage = study_mod.make_storage(storage_url)
    sampler = study_mod.make_sampler(config.sampler, config.seed, config.n_jobs)
    pruner = study_mod.make_pruner(config.pruner)
    existing = _study_exists(storage, study_name)
    if existing and not resume:
        raise ConfigError(f"study '{study_name}' already exists in the storage; pass --resume to "
                          "continue it, or give another --study-name.")
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                study_name=study_name, direction=problem.metric.direction,
                                load_if_exists=True)
    attrs = study.user_attrs
    expected = {"task": problem.info.task.value, "metric": problem.metric.name, "target": target_name,
                "learners": problem.learners}
    if existing:
        for key, value in expected.items():
            if key in attrs and attrs[key] != value:
                raise ConfigError(f"cannot resume: the study was run with {key}={attrs[key]!r} but "
                                  f"this run has {key}={value!r}; use the same options or a new --output.")
        n_dead = study_mod.fail_dead_trials(study)
        n_retry = study_mod.requeue_interrupted(study)
        if n_dead or n_retry:
            log.info("resume: %d trial(s) of a dead process marked failed, %d configuration(s) queued again",
                     n_dead, n_dead + n_retry)
    else:
        for key, value in expected.items():
            study.set_user_attr(key, value)
        study.set_user_attr("format", STUDY_FORMAT)
        study.set_user_attr("n_rows", problem.info.n_rows)
        study.set_user_attr("validation", problem.splits.describe())
        enqueue_defaults(study, problem)
    return study


def _study_exists(storage: Any, name: str) -> bool:
    try:
        return any(s.study_name == name for s in optuna.get_all_study_summaries(storage))
    except Exception:  # noqa: BLE001 - a fresh storage may have no tables yet
        return False


def _run_worker(config: SearchConfig, problem: Problem, storage_url: str, study_name: str,
                budget: Budget) -> None:
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = study_mod.make_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=study_mod.make_sampler(config.sampler, config.seed + os.getpid(),
                                                             config.n_jobs),
                              pruner=study_mod.make_pruner(config.pruner))
    objective = Objective(problem, config, budget, storage_url)
    run_optimize(study, objective, budget)
    os._exit(0)


def search(problem: Problem, config: SearchConfig, study: optuna.Study, storage_url: str | None,
           budget: Budget, callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
           on_result: Callable[[Any, dict[str, Any]], None] | None = None) -> None:
    """Run the trials: in this process, plus ``n_jobs - 1`` forked workers on the same storage."""
    objective = Objective(problem, config, budget, storage_url, on_result=on_result)
    workers: list[Any] = []
    if config.n_jobs > 1 and storage_url is not None:
        ctx = mp.get_context("fork")
        for _ in range(config.n_jobs - 1):
            p = ctx.Process(target=_run_worker,
                            args=(config, problem, storage_url, study.study_name, budget), daemon=False)
            p.start()
            workers.append(p)
    try:
        run_optimize(study, objective, budget, callbacks)
    except BaseException:
        for p in workers:
            if p.is_alive():
                p.terminate()
        raise
    finally:
        for p in workers:
            p.join(timeout=max(5.0, budget.end - time.monotonic() + 5) if budget.time_budget else None)
            if p.is_alive():
                p.kill()
                p.join()


def refit(problem: Problem, config: SearchConfig, study: optuna.Study, budget: Budget,
          fallback: dict[int, Any] | None = None) -> AutoMLModel:
    """Refit the best configuration on all rows (in a child with a deadline when isolating)."""
    best = best_trials(study, problem.metric, 1)
    if not best:
        states: dict[str, int] = {}
        reasons: list[str] = []
        for t in study.trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
            if t.user_attrs.get("fail_reason"):
                reasons.append(t.user_attrs["fail_reason"])
        why = f"; last failure: {reasons[-1]}" if reasons else ""
        raise SearchFailedError(f"no trial succeeded ({states or 'no trials ran'}){why}; "
                                "give a larger --time-budget or check the data.")
    trial = best[0]
    learner, params = learner_params(trial)
    trainer = get_trainer(learner)
    extra: dict[str, Any] = {}
    if trial.user_attrs.get("n_iterations"):
        scale = len(problem.y) / max(1, problem.splits.n_train_rows)
        extra["n_iterations"] = max(1, int(round(trial.user_attrs["n_iterations"] * scale)))
    data = FitData(X_train=problem.X, y_train=problem.y, X_valid=None, y_valid=None,
                   info=problem.info, metric=problem.metric, seed=config.seed,
                   n_threads=config.threads_per_trial(len(problem.y)), extra=extra,
                   accelerator=config.extra.get("accelerator", "cpu"))
    end = budget.end
    if budget.time_budget:
        slack = max(0.1 * budget.time_budget, 5.0)
        deadline = end + 0.5 * slack
    else:
        deadline = time.monotonic() + max(60.0, 10 * refit_estimate(trial, problem))
    data.deadline = deadline
    estimator = None
    if config.isolate:
        outcome = run_isolated(lambda: trainer.fit(params, data, NullReporter()), deadline=deadline,
                               mem_cap_mb=config.memory_limit_mb or default_memory_cap_mb(1))
        if outcome.status == "ok":
            estimator = outcome.value
        else:
            log.warning("refit of trial %d failed (%s)", trial.number, outcome.reason)
    else:
        estimator = trainer.fit(params, data, NullReporter())
    if estimator is None:
        model = (fallback or {}).get(trial.number)
        if model is None:
            raise SearchFailedError(f"refitting the best trial ({learner}) on all rows failed and no "
                                    "fold model was kept; give a larger --time-budget.")
        log.warning("using the best trial's model trained on its first split instead of a refit")
        estimator = model
    return AutoMLModel(
        schema=problem.info.schema, task=problem.info.task, classes=problem.classes,
        metric=problem.metric.name, target="", members=[estimator], weights=[1.0],
        description=[{"trial": trial.number, "learner": learner, "params": params,
                      "score": trial.value}],
    )


def fit(X_raw: pd.DataFrame, target: Target, config: SearchConfig, *, target_name: str,
        storage_url: str | None = None, study_name: str = "automl", resume: bool = False,
        start: float | None = None, callbacks: Sequence[Callable[..., None]] = ()) -> FitResult:
    """The whole run. ``start`` (``time.monotonic()``) lets data loading count in the budget."""
    config.validate()
    start = time.monotonic() if start is None else start
    problem = prepare_problem(X_raw, target, config)
    return fit_problem(problem, config, target_name=target_name, storage_url=storage_url,
                       study_name=study_name, resume=resume, start=start, callbacks=callbacks)


def fit_problem(problem: Problem, config: SearchConfig, *, target_name: str,
                storage_url: str | None = None, study_name: str = "automl", resume: bool = False,
                start: float | None = None, callbacks: Sequence[Callable[..., None]] = ()) -> FitResult:
    """Search and refit on an already prepared :class:`Problem`."""
    start = time.monotonic() if start is None else start
    if any(getattr(get_trainer(name), "needs_accelerator", False) for name in problem.learners):
        config.extra["accelerator"] = config.resolved_accelerator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = open_study(config, problem, storage_url, study_name, resume, target_name)
        budget = Budget(start=start, time_budget=config.time_budget, n_trials=config.n_trials,
                        trial_timeout=config.trial_timeout)
        if config.time_budget:
            budget.reserve = max(1.0, 0.05 * config.time_budget)
        fallback: dict[int, Any] = {}

        def keep(trial: Any, result: dict[str, Any]) -> None:
            if result.get("model") is not None:
                fallback.clear()
                fallback[trial.number] = result["model"]

        search(problem, config, study, storage_url, budget, callbacks, on_result=keep)
        model = refit(problem, config, study, budget, fallback)
    model.target = target_name
    summary = {
        "task": problem.info.task.value, "metric": problem.metric.name,
        "validation": problem.splits.describe(), "n_rows": problem.info.n_rows,
        "n_trials": len(study.trials), "best": model.description[0],
        "elapsed_s": round(time.monotonic() - start, 2),
    }
    return FitResult(model=model, study=study, problem=problem, summary=summary)
