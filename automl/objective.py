"""The objective: sample a trial's configuration, and evaluate a configuration into a result.

No process code lives here: an executor (:mod:`automl.executors`) decides where
:func:`evaluate` runs (this process, a forked child, a Ray worker) and how a
:class:`TrialReporter` reaches the study; the controller (:mod:`automl.controller`) turns
the result into the trial's value and attributes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from automl import pickling
from automl import study as study_mod
from automl.config import SearchConfig
from automl.contracts import NullReporter, as_fitted
from automl.exceptions import TrialFailed
from automl.isolation import trim_heap
from automl.metrics import balance_report, predict_scores
from automl.problem import Problem
from automl.registry import get_trainer, trainer_class


@dataclass(frozen=True)
class TrialSpec:
    """One evaluation, as an executor receives it (small and picklable: no data, no study).

    Times are durations counted from the moment the evaluation starts where it runs, so
    machines with different clocks agree: trainers stop adding rounds after ``soft_s``;
    the executor kills the evaluation after ``limit_s``.
    """

    number: int
    learner: str
    params: dict[str, Any]
    seed: int
    n_threads: int
    soft_s: float
    limit_s: float
    accelerator: str = "cpu"
    keep_model_if_better: float | None = None
    keep_folds: bool = False  # with k-fold validation: send the fold models back (bagging)
    fold_threshold: float | None = None  # ... when the value beats this (None: always)
    n_iterations: int | None = None  # a refit: the rounds the trial's early stopping chose, scaled
    max_train_rows: int | None = None  # train each fold on a sample of its rows (automl.fidelity)
    fold_s: float | None = None  # start no new fold after this (automl.fidelity); None: soft_s
    # a folder of the driver's machine: the first split's model is pickled to a file there
    # as soon as it is fitted, not held until the last fold and sent back as bytes
    model_dir: str | None = None
    prunable: bool = True  # False: never asks the pruner (a probe started before the study)


class TrialReporter:
    """Reports intermediate values and raises ``TrialPruned`` when told to stop.

    ``ask(step, value)`` records the value with the trial and returns whether to prune;
    the executor supplies it (a direct call, a question to the parent process, a Ray actor).
    """

    def __init__(self, ask: Callable[[int, float], bool]) -> None:
        self._ask = ask

    @classmethod
    def for_trial(cls, trial: optuna.Trial) -> TrialReporter:
        """A reporter straight to an Optuna trial of this process."""
        def ask(step: int, value: float) -> bool:
            trial.report(value, step)
            return bool(trial.should_prune())

        return cls(ask)

    def report(self, step: int, value: float) -> None:
        if not np.isfinite(value):
            raise TrialFailed(f"the validation metric became {value} at step {step}")
        if self._ask(int(step), float(value)):
            raise optuna.TrialPruned(f"pruned at step {step} (value {value:.5g})")


def evaluate(problem: Problem, spec: TrialSpec, reporter: Any) -> dict[str, Any]:
    """Cross-validate ``spec``'s configuration; the deadlines start now.

    BLAS and OpenMP pools are limited to the trial's threads: on small data more threads
    only contend (a 20-component SVD ran 15x slower with two busy threads than with one).
    """
    from threadpoolctl import threadpool_limits

    accelerator = spec.accelerator
    if accelerator == "auto":  # resolved where the trial runs (a Ray worker may have a GPU)
        accelerator = SearchConfig(accelerator="auto").resolved_accelerator()
    with threadpool_limits(limits=max(1, spec.n_threads)):
        now = time.monotonic()
        result = cross_validate(problem, spec, reporter, deadline=now + spec.soft_s,
                                accelerator=accelerator,
                                fold_deadline=None if spec.fold_s is None else now + spec.fold_s)
    if trainer_class(spec.learner).needs_accelerator:
        result["accelerator"] = accelerator  # where it ran: the trial's record shows it
    return problem.widen(result)  # a part of the rows (a probe's, automl.problem): as whole


def cross_validate(problem: Problem, spec: TrialSpec, reporter: Any, *, deadline: float,
                   accelerator: str = "cpu", fold_deadline: float | None = None) -> dict[str, Any]:
    """Fit one configuration on every split; return scores, out-of-fold predictions, timings,
    the first split's model (pickled, when it beats ``keep_model_if_better``) and, when asked,
    the pickled fold models, for the final model to bag them instead of refitting.
    Trainers stop adding rounds at ``deadline``; no fold starts that would run well past
    ``fold_deadline`` (default: ``deadline``)."""
    fold_deadline = deadline if fold_deadline is None else min(deadline, fold_deadline)
    trainer = get_trainer(spec.learner)
    info, metric, y = problem.info, problem.metric, problem.y
    k = info.n_classes
    oof: np.ndarray | None = None
    fold_scores: list[float] = []
    iterations: list[int] = []
    fit_times: list[float] = []
    first_model = None
    model_file: Path | None = None
    bagging = spec.keep_folds and len(problem.splits.folds) > 1
    fold_models: list[Any] = []
    n_folds = len(problem.splits.folds)
    for i, (_, va) in enumerate(problem.splits.folds):
        data = problem.fit_data(i, seed=spec.seed, n_threads=spec.n_threads, deadline=deadline,
                                accelerator=accelerator, max_rows=spec.max_train_rows)
        t0 = time.perf_counter()
        fitted = as_fitted(trainer.fit(spec.params, data, reporter if i == 0 else NullReporter()))
        fit_times.append(time.perf_counter() - t0)
        if i == 0:
            train_rows, stopped = len(data.y_train), time.monotonic() > deadline
        model = fitted.estimator
        pred = fitted.valid_scores
        if pred is None:
            pred = predict_scores(model, data.X_valid, info.task, k)
        if oof is None:
            oof = np.full((len(y), k) if info.task.is_classification else len(y), np.nan,
                          dtype=np.float32)
        oof[va] = pred
        score = metric(y[va], pred, k)
        if not np.isfinite(score):
            raise TrialFailed(f"the validation {metric.name} is {score} on fold {i + 1}")
        fold_scores.append(score)
        if fitted.n_iterations is not None:
            iterations.append(int(fitted.n_iterations))
        if i == 0:
            first_model = model
            if spec.model_dir is not None:
                # on disk now: a forest's first-split model is tens of MB, and the trial
                # would otherwise hold it beside each later fold's model and its own pickle
                model_file = first_model_path(spec.model_dir, spec.number)
                _pickle_to_file(model, model_file)
                first_model = None
        if bagging:
            fold_models.append(model)
        del model, fitted  # before the next fold's fit: one model at a time in memory
        trim_heap()  # and what it freed goes back to the system (a forest's trees: tens of MB)
        if i + 1 < n_folds and time.monotonic() + 0.5 * np.mean(fit_times) > fold_deadline:
            # out of time (the next fold would run well past the trial's share): the folds
            # done so far are a usable, lower-fidelity result (their mean), not a failure;
            # its out-of-fold predictions have gaps, so ensemble selection leaves it out
            break
    value = float(np.mean(fold_scores))
    result: dict[str, Any] = {
        "value": value, "fold_scores": fold_scores, "fit_time": float(np.sum(fit_times)),
        "fold_fit_time": float(np.mean(fit_times)), "oof": oof,
        "n_iterations": int(np.median(iterations)) if iterations else None,
        "folds_done": len(fold_scores), "n_folds": n_folds,
        "train_rows": train_rows, "stopped_at_deadline": stopped,
    }
    if info.task.is_classification and oof is not None:
        valid = ~np.isnan(oof).any(axis=1)
        result["balance"] = balance_report(y[valid], oof[valid].astype(float), k)
    wanted = spec.keep_model_if_better is None or metric.better(value, spec.keep_model_if_better)
    if model_file is not None:
        if wanted:
            result["model_file"] = str(model_file)
        else:
            model_file.unlink(missing_ok=True)
    elif wanted:
        # Sent as bytes and unpickled by the driver only if it is used: unpickling LightGBM
        # runs OpenMP, and a process that ran OpenMP must not fork trial children any more.
        result["model"] = pickling.dumps(first_model)
    if bagging and (spec.fold_threshold is None or metric.better(value, spec.fold_threshold)):
        result["fold_models"] = pickling.dumps(fold_models)
    return result


def first_model_path(folder: str, number: int) -> Path:
    """Where trial ``number`` pickles its first split's model in ``folder``."""
    return Path(folder) / f"trial-{number}.first.pkl"


def _pickle_to_file(obj: Any, path: Path) -> None:
    """Pickle ``obj`` straight into ``path`` (through a temporary name, so a trial killed
    while writing leaves no half file under it); no copy of its bytes in memory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pickling.dump(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def refit(problem: Problem, spec: TrialSpec) -> bytes | str:
    """Fit ``spec``'s configuration on all rows; the estimator comes back pickled (the
    driver unpickles it after the last fork, see :mod:`automl.final_model`): as bytes, or
    with ``spec.model_dir``, in a file there, whose path comes back."""
    from threadpoolctl import threadpool_limits

    accelerator = spec.accelerator
    if accelerator == "auto":
        accelerator = SearchConfig(accelerator="auto").resolved_accelerator()
    data = problem.fit_data(None, seed=spec.seed, n_threads=spec.n_threads, accelerator=accelerator,
                            deadline=time.monotonic() + spec.soft_s,
                            n_iterations=spec.n_iterations or None)
    with threadpool_limits(limits=max(1, spec.n_threads)):
        fitted = as_fitted(get_trainer(spec.learner).fit(spec.params, data, NullReporter()))
    if spec.model_dir is not None:
        path = Path(spec.model_dir) / f"trial-{spec.number}.refit.pkl"
        _pickle_to_file(fitted.estimator, path)
        return str(path)
    return pickling.dumps(fitted.estimator)


@dataclass
class Objective:
    """Samples a learner and its space for an Optuna trial (the spaces are read once)."""

    problem: Problem
    config: SearchConfig
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def sample(self, trial: optuna.Trial) -> tuple[str, dict[str, Any]]:
        learner = trial.suggest_categorical("learner", self.problem.learners)
        if learner not in self.spaces:
            trainer = get_trainer(learner)
            self.spaces[learner] = dict(trainer.space(self.problem.info))
            self.defaults[learner] = dict(trainer.default(self.problem.info))
        grid = self.config.sampler == "grid"
        params = {name: study_mod.suggest(trial, study_mod.param_name(learner, name), dist, grid,
                                          self.defaults[learner].get(name))
                  for name, dist in self.spaces[learner].items()}
        return learner, params

