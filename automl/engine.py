"""One AutoML run: prepare the problem, search, build the final model, return it.

Used by the command line and by the Python API alike. The parts live in their own modules:
the problem (:mod:`automl.problem`), the objective (:mod:`automl.objective`), where trials
run (:mod:`automl.executors`), the search loop (:mod:`automl.controller`) and the final
model (:mod:`automl.final_model`).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from automl import early_probe, interrupts, scratch
from automl.config import SearchConfig
from automl.contracts import DataInfo
from automl.budget import Budget
from automl.controller import Controller
from automl.data import Target
from automl.exceptions import DataError
from automl.executors import Executor, make_executor
from automl.fidelity import reserve_floor
from automl.final_model import FallbackModel, build_model, no_success_error
from automl.leaks import LEAK_SAMPLE_ROWS, warn_leaks
from automl.metrics import get_metric
from automl.model import AutoMLModel
from automl.opening import open_study
from automl.problem import Problem
from automl.registry import resolve_learners, trainer_class
from automl.schema import USED_KINDS, FeatureSchema, clean_frame, infer_schema
from automl.splits import make_splits
from automl.study import best_trials, learner_params
from automl.trial_files import prune_oof

log = logging.getLogger("automl")
KNN_MAX_ROWS = 100_000
# rows x used columns from which the clean of the whole table waits for the probe to start
# (2,000,000 rows x 18: 1.4 s; 500,000 x 18: 0.35 s)
DEFER_CLEAN_CELLS = 2_000_000


@dataclass
class FitResult:
    model: AutoMLModel
    study: optuna.Study
    problem: Problem
    summary: dict[str, Any] = field(default_factory=dict)
    scratch_dir: str | None = None  # holds the model's deferred members until close()

    def close(self) -> None:
        """Remove the files the model's deferred members wait in (``lazy_members``)."""
        scratch.remove(self.scratch_dir)
        self.scratch_dir = None


def prepare_problem(X_raw: pd.DataFrame, target: Target, config: SearchConfig,
                    schema: FeatureSchema | None = None) -> Problem:
    """Infer column kinds, clean the frame, choose the metric, the learners and the splits.

    With a time budget, a table of at least :data:`DEFER_CLEAN_CELLS` is left raw: it is
    cleaned after the probe has started (see :mod:`automl.problem`)."""
    schema = schema or infer_schema(X_raw, config.extra.get("column_kinds"))
    _report_columns(schema)
    if not schema.used:
        raise DataError("no usable feature column: every column is an identifier, constant or empty "
                        f"({', '.join(c.name + '=' + c.kind for c in schema.columns[:10])}); "
                        "add informative columns.")
    # (the leak check cleans the rows it looks at: all of them up to LEAK_SAMPLE_ROWS)
    defer = bool(config.time_budget) and len(X_raw) > LEAK_SAMPLE_ROWS and \
        len(X_raw) * len(schema.used) >= DEFER_CLEAN_CELLS
    X = X_raw if defer else clean_frame(X_raw, schema)
    # (on a sample of the rows, cleaned alone where the whole table is not clean yet)
    warn_leaks(X, target, clean=(lambda part: clean_frame(part, schema, quiet=True)) if defer else None,
               n_unique={c.name: c.n_unique for c in schema.columns})
    metric = get_metric(config.metric, target.task)
    splits = make_splits(target.y, target.task, seed=config.seed, cv=config.cv,
                         n_features=len(schema.used), time_budget=config.time_budget)
    counts = tuple(int(c) for c in np.bincount(target.y)) if target.task.is_classification else ()
    info = DataInfo(task=target.task, n_rows=len(X), n_features=len(schema.used),
                    n_classes=len(target.classes or []), class_counts=counts, schema=schema,
                    n_train_rows=splits.n_train_rows)
    learners = resolve_learners(target.task, config.include, config.exclude,
                                kinds={c.kind for c in schema.columns if c.kind in USED_KINDS})
    if not config.include and len(X) > KNN_MAX_ROWS and "knn" in learners and len(learners) > 1:
        log.info("leaving out knn: %d rows make nearest-neighbour search too slow (--include knn "
                 "to force it)", len(X))
        learners.remove("knn")
    if len(schema.used) > len(X):
        log.info("more columns (%d) than rows (%d): linear and tree models are regularised by the search",
                 len(schema.used), len(X))
    return Problem(X=X, y=target.y, info=info, metric=metric, splits=splits, learners=learners,
                   classes=target.classes, raw=defer)


def _report_columns(schema: FeatureSchema, shown: int = 4) -> None:
    """Say once which columns are left out, as a count per reason with a few names, and
    warn about columns with a note (one line each: they change what the model sees)."""
    dropped: dict[str, list[str]] = {}
    for col in schema.columns:
        if col.kind in ("identifier", "constant", "empty"):
            dropped.setdefault(col.kind, []).append(col.name)
        elif col.note:
            log.warning("column '%s': %s", col.name, col.note)
    if dropped:
        parts = []
        for kind, names in dropped.items():
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            parts.append(f"{len(names)} {kind} ({', '.join(repr(n) for n in names[:shown])}{more})")
        total = sum(len(v) for v in dropped.values())
        log.info("dropping %d column(s): %s; --debug lists them all", total, "; ".join(parts))
        for kind, names in dropped.items():
            for name in names:
                note = next((c.note for c in schema.columns if c.name == name), "")
                log.debug("dropping column '%s' (%s%s)", name, kind, f": {note}" if note else "")


def _shared_preprocessing(problem: Problem, executor: Executor, config: SearchConfig,
                          budget: Budget, warm_up: Sequence[Callable[[], Any]] = (),
                          between: Callable[[], None] | None = None) -> None:
    """Clean the table if it is still raw, then fit every preprocessing style once per fold,
    where trials run, so trials share it
    instead of refitting encoders and text vectorizers each time. Meanwhile, in this
    process: ``warm_up`` (work the final model needs, such as importing the model file
    writer: after the first trial has started, not before it), then ``between`` at every
    poll (the controller tells the trials that finished: the probe's result is recorded
    when it comes, not after the shared fit)."""
    pending = list(warm_up)

    def meanwhile() -> None:
        while pending:
            pending.pop(0)()
        if between is not None:
            between()

    problem.clean(between)  # a large table, left raw until the probe started (automl.problem)

    styles = sorted({style for name in problem.learners
                     if (style := trainer_class(name).style) is not None})
    if styles:
        t0 = time.monotonic()
        executor.share_preprocessing(styles, config.seed,
                                     0.25 * budget.time_budget if budget.time_budget else 600.0,
                                     meanwhile)
        log.debug("shared preprocessing of %s took %.2fs", styles, time.monotonic() - t0)
    meanwhile()  # where the executor did not call it


def _best_summary(study: optuna.Study, problem: Problem) -> dict[str, Any]:
    """The study's best single trial (the final model may be an ensemble including it)."""
    best = best_trials(study, problem.metric, 1)[0]
    learner, params = learner_params(best)
    return {"trial": best.number, "learner": learner, "params": params, "score": best.value}


def fit(X_raw: pd.DataFrame, target: Target, config: SearchConfig, *, target_name: str,
        storage_url: str | None = None, study_name: str = "automl", resume: bool = False,
        start: float | None = None, callbacks: Sequence[Callable[..., None]] = (),
        owned_storage: bool = False) -> FitResult:
    """The whole run. ``start`` (``time.monotonic()``) lets data loading count in the budget;
    ``owned_storage``: no other process uses the study (the CLI's own, locked run folder)."""
    config.validate()
    start = time.monotonic() if start is None else start
    problem = prepare_problem(X_raw, target, config)
    return fit_problem(problem, config, target_name=target_name, storage_url=storage_url,
                       study_name=study_name, resume=resume, start=start, callbacks=callbacks,
                       owned_storage=owned_storage)


def fit_problem(problem: Problem, config: SearchConfig, *, target_name: str,
                storage_url: str | None = None, study_name: str = "automl", resume: bool = False,
                start: float | None = None, callbacks: Sequence[Callable[..., None]] = (),
                owned_storage: bool = False, lazy_members: bool = False,
                warm_up: Sequence[Callable[[], Any]] = ()) -> FitResult:
    """Search and build the final model on an already prepared :class:`Problem`.
    ``lazy_members``: the model's members stay in files until used or saved (see
    :class:`~automl.model.Deferred`); the caller saves the model, then calls
    :meth:`FitResult.close`. ``warm_up``: steps run once the first trial (the probe) has
    been started, before the second one; they count in the budget."""
    start = time.monotonic() if start is None else start
    if config.executor != "ray" and any(trainer_class(name).needs_accelerator
                                        for name in problem.learners):
        config.extra["accelerator"] = config.resolved_accelerator()
    from automl.text_embeddings import prepare_text

    # embeds text columns once, before anything forks (and before Ray starts: forking after
    # ray.init is unsafe)
    prepare_text(problem, config, start)
    executor = make_executor(config, storage_url)  # refuses what it cannot honour, before the study
    budget = Budget(start=start, time_budget=config.time_budget, n_trials=config.n_trials,
                    trial_timeout=config.trial_timeout)
    if config.time_budget:
        budget.reserve = reserve_floor(config.time_budget)
    # pickles and scratch arrays: in a private temporary folder of this run, named after
    # this process so that a later run removes it if this one is killed (automl.scratch)
    scratch.sweep_stale()
    run_dir = scratch.make("run")
    keep_scratch = False  # the model's deferred members wait there (lazy_members)
    # from here Ctrl-C stops the search between storage calls (automl.interrupts)
    with interrupts.deferred(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            # in case a refit fails or has no time left
            kept_dir = tempfile.mkdtemp(prefix="kept-", dir=run_dir)
            fallback = FallbackModel(problem.metric, keep=5 if config.ensemble else 1, folder=kept_dir)
            keep = fallback.offer

            oof_dir = config.extra.get("oof_dir")
            tmp_dir = None
            if config.ensemble and not oof_dir:
                tmp_dir = tempfile.mkdtemp(prefix="oof-", dir=run_dir)
                oof_dir = tmp_dir
            elif oof_dir:
                Path(oof_dir).mkdir(parents=True, exist_ok=True)
            # Fold models are pickles: they live in a private temporary folder for this run only,
            # never in the output folder a later --resume would read.
            fold_dir = (tempfile.mkdtemp(prefix="folds-", dir=run_dir)
                        if config.bagging and problem.splits.kind == "cv" else None)
            # trials and refits on this machine leave their models' pickles here, not in memory
            model_dir = kept_dir if getattr(executor, "local_files", False) else None
            early = None  # the probe runs while the study opens (automl.early_probe)
            probe_early = early_probe.allowed(config, problem, executor, resume=resume,
                                              owned_storage=owned_storage)
            if probe_early:  # (starts the executor; a large table is cleaned after it)
                early = early_probe.start(problem, config, executor, budget,
                                          keep_folds=fold_dir is not None, model_dir=model_dir)
            study = open_study(config, problem, storage_url, study_name, resume, target_name,
                               owned=owned_storage)
            if early is None:  # no probe started early: the table is cleaned first
                problem.clean()
                executor.start(problem)
            if problem.info.text_backbone:  # the report rebuilds text features with it
                study.set_user_attr("text_backbone", problem.info.text_backbone)
            search_start = time.monotonic()
            controller = Controller(
                study, problem, config, executor, budget, callbacks=callbacks, on_result=keep,
                oof_dir=oof_dir, fold_dir=fold_dir,
                model_dir=model_dir,
                share=lambda between: _shared_preprocessing(problem, executor, config, budget, warm_up,
                                                              between),
                early=early)
            controller.run()
            if not best_trials(study, problem.metric, 1):
                controller.rescue()
            if not best_trials(study, problem.metric, 1):  # (the shared fit was preparation too)
                raise no_success_error(study, budget, search_start + controller.preprocessing_s)
            model = build_model(problem, config, study, budget, executor, fallback.models, oof_dir,
                                fold_dir, model_dir, lazy=lazy_members)
            log.debug("final model built, %.1fs before the budget's end", budget.end - time.monotonic())
            if oof_dir and not tmp_dir:
                prune_oof(oof_dir, study, problem.metric)
            keep_scratch = lazy_members
        finally:
            executor.close()
            if not keep_scratch:
                scratch.remove(run_dir)
    model.target = target_name
    summary = {
        "task": problem.info.task.value, "metric": problem.metric.name,
        "validation": problem.splits.describe(), "n_rows": problem.info.n_rows,
        "n_trials": sum(t.state.is_finished() for t in study.trials), "best": _best_summary(study, problem),
        "ensemble": model.description if len(model.members) > 1 else None,
        "validation_score": getattr(model, "validation_score", None),
        "elapsed_s": round(time.monotonic() - start, 2),
        "executor": executor.name,
    }
    return FitResult(model=model, study=study, problem=problem, summary=summary,
                     scratch_dir=run_dir if lazy_members else None)
