"""The trainer contract's checks, for plugin authors and for the project's own trainers.

:func:`check_trainer` fits a trainer for real, on tiny real data, the way a search does
(the split, the shared preprocessing, an Optuna trial's reporter, a refit on all rows, a
saved model folder), and raises :class:`TrainerCheckError` naming the trainer, the task,
the configuration and what failed.

Example:
    >>> from automl.testing import check_trainer  # doctest: +SKIP
    >>> check_trainer(MyTrainer())                 # doctest: +SKIP

Not imported by ``import automl`` (it loads scikit-learn's bundled datasets).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution

from automl import optuna_internals as internals
from automl import registry
from automl import study as study_mod
from automl.config import SearchConfig
from automl.contracts import Fitted, NullReporter, Task, Trainer
from automl.data import prepare_target
from automl.metrics import predict_scores
from automl.model import AutoMLModel
from automl.objective import TrialReporter
from automl.preprocessing import styles
from automl.problem import Problem, preprocess_folds

ROWS = 120  # rows of each tiny data set: enough for two folds of every class
# how far the final score may lie from the nearest value reported during the fit, as a
# fraction of the final score's size (a forest's last report is at three quarters of its
# trees; a loss reported where the metric is an AUC lies far off)
REPORT_TOLERANCE = 0.15


class TrainerCheckError(AssertionError):
    """A trainer broke its contract (the message names the trainer and what failed)."""


@dataclass
class CheckReport:
    """What :func:`check_trainer` ran: per task, the configurations fitted and the
    intermediate values each reported."""

    trainer: str
    fits: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> config -> reports

    def __str__(self) -> str:
        parts = [f"{task}: {', '.join(f'{c} ({n} reports)' for c, n in configs.items())}"
                 for task, configs in self.fits.items()]
        return f"{self.trainer} passed: " + "; ".join(parts)


def tiny_frame(task: Task, rows: int = ROWS, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """A tiny real table for ``task`` from scikit-learn's bundled data sets (breast cancer,
    iris, diabetes), subsampled, with a categorical column and a few missing values added so
    preprocessing has work to do; returns the frame and its target column."""
    from sklearn import datasets

    load = {Task.BINARY: datasets.load_breast_cancer, Task.MULTICLASS: datasets.load_iris,
            Task.REGRESSION: datasets.load_diabetes}[task]
    bunch = load(as_frame=True)
    frame = bunch.frame.sample(n=min(rows, len(bunch.frame)), random_state=seed)
    frame = frame.reset_index(drop=True).rename(columns=lambda c: str(c).replace(" ", "_"))
    first = frame.columns[0]
    frame["band"] = pd.qcut(frame[first], 3, labels=["low", "mid", "high"]).astype(str)
    frame.loc[frame.index % 17 == 3, first] = np.nan
    if task.is_classification:
        frame["target"] = np.asarray(bunch.target_names)[frame["target"].to_numpy()]
    return frame, "target"


def check_trainer(trainer: Trainer, *, frames: Mapping[Task, tuple[pd.DataFrame, str]] | None = None,
                  n_sampled: int = 2, overrides: Mapping[str, Any] | None = None, seed: int = 0,
                  time_limit_s: float = 60.0) -> CheckReport:
    """Run the trainer contract's checks on ``trainer`` for every task it claims.

    Per task: the declaration (name, tasks, hooks, a space of Optuna distributions whose
    default and portfolio configurations lie inside it); then the default configuration and
    ``n_sampled`` configurations sampled from the space (through an Optuna study, as a
    search samples them), each fitted on a split's training part with a real trial's
    reporter: ``fit`` returns a :class:`~automl.contracts.Fitted`, leaves its input as it
    was, predicts every row (probabilities over every class), and reports increasing
    steps whose values are in the trial's metric (the final score lies near one of them);
    then a refit on all rows with the iterations found, saved to a model folder and loaded
    back with equal predictions.

    ``frames`` replaces the bundled data per task (a learner of images or texts needs its
    columns); ``overrides`` is merged into every configuration (e.g. few epochs, to keep a
    check short); ``time_limit_s`` is each fit's soft deadline.

    Raises:
        TrainerCheckError: naming the trainer, task, configuration and what failed.
    """
    name = getattr(trainer, "name", None)
    if not isinstance(name, str) or not name:
        raise _fail(f"trainer {type(trainer).__name__}", "needs a non-empty string class attribute `name`")
    report = CheckReport(name)
    from threadpoolctl import threadpool_limits

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per in-memory study
    try:  # one BLAS/OpenMP thread, as a search's trial on small data has
        with threadpool_limits(limits=1):
            _check_tasks(trainer, report, frames or {},
                         _Options(n_sampled, dict(overrides or {}), seed, time_limit_s))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return report


@dataclass(frozen=True)
class _Options:
    n_sampled: int
    overrides: dict[str, Any]
    seed: int
    time_limit_s: float


def _check_tasks(trainer: Any, report: CheckReport,
                 frames: Mapping[Task, tuple[pd.DataFrame, str]], opts: _Options) -> None:
    # registered while checked: its hooks get their defaults, and the model-folder check
    # allows the types it declares
    with registry.registered(type(trainer)):
        _check_declaration(trainer, report.trainer)
        for task in sorted(trainer.tasks, key=lambda t: t.value):
            frame, target = frames.get(task) or tiny_frame(task, seed=opts.seed)
            problem = _problem(frame, target, task, trainer, opts.seed)
            where = f"trainer {report.trainer!r} on {task.value} data"
            configs = _configs(trainer, problem, opts.n_sampled, opts.seed, opts.overrides, where)
            report.fits[task.value] = {}
            for label, params in configs.items():
                fitted, n_reports = _check_fit(trainer, problem, params, opts.seed,
                                               opts.time_limit_s, f"{where}, {label} configuration")
                report.fits[task.value][label] = n_reports
                if label == "default":
                    _check_refit_and_folder(trainer, problem, params, fitted, opts.seed,
                                            opts.time_limit_s, f"{where}, {label} configuration")


def _fail(where: str, what: str) -> TrainerCheckError:
    return TrainerCheckError(f"{where}: {what}")


def _check_declaration(trainer: Any, name: str) -> None:
    where = f"trainer {name!r}"
    tasks = getattr(trainer, "tasks", None)
    if not isinstance(tasks, frozenset) or not tasks or not all(isinstance(t, Task) for t in tasks):
        raise _fail(where, f"`tasks` must be a non-empty frozenset of automl.contracts.Task, got {tasks!r}")
    for method in ("space", "default", "fit"):
        if not callable(getattr(trainer, method, None)):
            raise _fail(where, f"has no method `{method}`")
    style = trainer.style
    if style is not None and style not in styles():
        raise _fail(where, f"declares style {style!r}, which is not registered "
                           f"({', '.join(styles())}); add it with automl.preprocessing.register_style")
    for hook in ("saved_types", "saved_functions", "input_kinds", "auto_kinds"):
        value = getattr(trainer, hook)
        if not isinstance(value, frozenset) or not all(isinstance(v, str) for v in value):
            raise _fail(where, f"`{hook}` must be a frozenset of strings, got {value!r}")


def _problem(frame: pd.DataFrame, target: str, task: Task, trainer: Any, seed: int) -> Problem:
    from automl.engine import prepare_problem

    X, t = prepare_target(frame, target, task.value)
    problem = prepare_problem(X, t, SearchConfig(task=task.value, cv=2, seed=seed, n_trials=1).validate())
    if trainer.style is not None:  # as the search shares it among trials
        problem.pre_cache = preprocess_folds(problem, [trainer.style], seed)
    return problem


def _configs(trainer: Any, problem: Problem, n_sampled: int, seed: int,
             overrides: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The default, the first portfolio configuration and ``n_sampled`` sampled ones."""
    space = dict(trainer.space(problem.info))
    bad = [k for k, d in space.items() if not isinstance(d, BaseDistribution)]
    if bad:
        raise _fail(where, f"space entries {bad} are not Optuna distributions")
    default = dict(trainer.default(problem.info))
    portfolio = [dict(p) for p in trainer.portfolio(problem.info)]
    for label, config in [("default", default)] + [(f"portfolio {i}", p) for i, p in enumerate(portfolio)]:
        if set(config) != set(space):
            raise _fail(where, f"the {label} configuration sets {sorted(config)}, the space "
                               f"searches {sorted(space)}: they must be the same parameters")
        for key, dist in space.items():
            if not internals.contains(dist, config[key]):
                raise _fail(where, f"the {label} configuration's {key}={config[key]!r} lies "
                                   f"outside its distribution {dist!r}")
    configs = {"default": default}
    if portfolio:
        configs["portfolio 0"] = portfolio[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for i in range(n_sampled):  # sampled as a search samples them (learner-prefixed names)
        trial = study.ask()
        flat = {study_mod.param_name(trainer.name, k): study_mod.suggest(
            trial, study_mod.param_name(trainer.name, k), d) for k, d in space.items()}
        configs[f"sampled {i}"] = study_mod.own_params(flat, trainer.name)
        study.tell(trial, 0.0)
    return {label: {**params, **overrides} for label, params in configs.items()}


def _check_fit(trainer: Any, problem: Problem, params: dict[str, Any], seed: int,
               time_limit_s: float, where: str) -> tuple[Fitted, int]:
    info, metric = problem.info, problem.metric
    data = problem.fit_data(0, seed=seed, n_threads=1, deadline=time.monotonic() + time_limit_s)
    before = (data.X_train.copy(), data.y_train.copy(), dict(data.extra), data.n_iterations)
    study = optuna.create_study(direction=metric.direction, pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    try:
        result = trainer.fit(dict(params), data, TrialReporter.for_trial(trial))
    except Exception as exc:
        raise _fail(where, f"fit raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Fitted):
        raise _fail(where, f"fit returned {type(result).__name__}, not automl.contracts.Fitted "
                           "(return Fitted(estimator, n_iterations))")
    if result.n_iterations is not None and (not isinstance(result.n_iterations, (int, np.integer))
                                            or result.n_iterations < 1):
        raise _fail(where, f"Fitted.n_iterations must be None or a positive int, got "
                           f"{result.n_iterations!r}")
    if not (before[0].equals(data.X_train) and np.array_equal(before[1], data.y_train)
            and before[2] == data.extra and before[3] == data.n_iterations):
        raise _fail(where, "fit changed its input FitData; return what it learned in Fitted")
    pred = _predictions(result.estimator, data.X_valid, problem, where)
    score = metric(data.y_valid, pred, info.n_classes)
    if not math.isfinite(score):
        raise _fail(where, f"the validation {metric.name} is {score}")
    reports = study.trials[0].intermediate_values
    steps = list(reports)
    if steps != sorted(set(steps)) or not all(isinstance(s, int) for s in steps):
        raise _fail(where, f"reported steps must be increasing integers, got {steps}")
    values = np.asarray(list(reports.values()), dtype=float)
    if len(values) and not np.isfinite(values).all():
        raise _fail(where, f"reported non-finite values {values.tolist()}")
    if len(values):
        nearest = float(values[np.argmin(np.abs(values - score))])
        if abs(nearest - score) > REPORT_TOLERANCE * max(abs(score), 1e-2):
            raise _fail(where, f"the values reported during the fit ({_short(values)}) are not in "
                               f"the trial's metric: the final {metric.name} is {score:.4g}, the "
                               f"nearest report {nearest:.4g}; report data.metric on the "
                               "validation part, the same metric and scale as the final score")
    return result, len(values)


def _predictions(estimator: Any, X: pd.DataFrame, problem: Problem, where: str) -> np.ndarray:
    info = problem.info
    try:
        pred = predict_scores(estimator, X, info.task, info.n_classes)
    except Exception as exc:
        raise _fail(where, f"the fitted estimator cannot predict the raw frame: "
                           f"{type(exc).__name__}: {exc}") from exc
    expected = (len(X), info.n_classes) if info.task.is_classification else (len(X),)
    if pred.shape != expected:
        raise _fail(where, f"predictions have shape {pred.shape}, expected {expected}")
    if not np.isfinite(pred).all():
        raise _fail(where, "predictions are not all finite")
    if info.task.is_classification and not np.allclose(pred.sum(axis=1), 1.0, atol=1e-4):
        raise _fail(where, "class probabilities do not sum to 1 on every row")
    return pred


def _check_refit_and_folder(trainer: Any, problem: Problem, params: dict[str, Any], fitted: Fitted,
                            seed: int, time_limit_s: float, where: str) -> None:
    from automl.persistence import load_model, save_model

    data = problem.fit_data(None, seed=seed, n_threads=1, n_iterations=fitted.n_iterations,
                            deadline=time.monotonic() + time_limit_s)
    result = trainer.fit(dict(params), data, NullReporter())
    if not isinstance(result, Fitted):
        raise _fail(f"{where}, refit", f"fit returned {type(result).__name__}, not Fitted")
    X = problem.X.head(20)
    _predictions(result.estimator, X, problem, f"{where}, refit")
    info = problem.info
    model = AutoMLModel(schema=info.schema, task=info.task, classes=problem.classes,
                        metric=problem.metric.name, target="target", members=[result.estimator],
                        weights=[1.0], description=[{"learner": trainer.name, "params": params}])
    with tempfile.TemporaryDirectory(prefix="automl-check-") as folder:
        try:
            save_model(model, Path(folder) / "model")
            loaded = load_model(Path(folder) / "model")
        except Exception as exc:
            raise _fail(f"{where}, model folder", f"{type(exc).__name__}: {exc} (declare the "
                        "classes the estimator holds in `saved_types`)") from exc
        if not np.allclose(loaded.predict_scores(X), model.predict_scores(X), atol=1e-5):
            raise _fail(f"{where}, model folder", "predictions changed after saving and loading")


def _short(values: np.ndarray, n: int = 4) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:n])
    return shown + (", ..." if len(values) > n else "")
