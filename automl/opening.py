"""Opening a search's study: create it, or load it to resume (checking that it matches this
run and keeping the validation its trials were scored with), and queue the first
configurations (each learner's default, the portfolio, on large tables a probe first)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import optuna

from automl import study as study_mod
from automl.config import SearchConfig
from automl.exceptions import ConfigError
from automl.fidelity import PROBE
from automl.problem import Problem
from automl.registry import get_trainer, trainer_class
from automl.splits import folds_of, make_splits

log = logging.getLogger("automl")
STUDY_FORMAT = 1


def open_study(config: SearchConfig, problem: Problem, storage_url: str | None,
               study_name: str, resume: bool, target_name: str, owned: bool = False) -> optuna.Study:
    """Create the study, or load it to resume; check a resumed study matches this run.
    ``owned``: no other process uses this study (a locked run folder's own storage)."""
    storage = study_mod.make_storage(storage_url)
    sampler = study_mod.make_sampler(config.sampler, config.seed, config.n_parallel())
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
        _keep_validation(study, problem, config)
        # a fresh random stream: replaying the first run's would repeat its configurations
        study.sampler = study_mod.make_sampler(
            config.sampler, study_mod.resumed_seed(config.seed, len(study.trials)), config.n_parallel())
        n_dead, n_queued = study_mod.fail_dead_trials(study, owned=owned)
        n_queued += study_mod.requeue_interrupted(study)
        if n_dead or n_queued:
            log.info("resume: %d trial(s) of a dead process marked failed, %d configuration(s) queued again",
                     n_dead, n_queued)
    else:
        for key, value in expected.items():
            study.set_user_attr(key, value)
        study.set_user_attr("format", STUDY_FORMAT)
        study.set_metric_names([problem.metric.name])  # so optuna-dashboard names the objective
        study.set_user_attr("n_rows", problem.info.n_rows)
        study.set_user_attr("validation", problem.splits.describe())
        enqueue_defaults(study, problem, portfolio=config.sampler != "grid",
                         probe=bool(config.time_budget) and config.sampler != "grid")
    return study


def _keep_validation(study: optuna.Study, problem: Problem, config: SearchConfig) -> None:
    """A resumed (or joined) study keeps the validation its trials were scored with: with
    ``--cv auto`` the choice depends on the time budget, which a resume may change."""
    recorded = study.user_attrs.get("validation")
    if config.cv != "auto" or not isinstance(recorded, str):
        return
    folds = folds_of(recorded)
    if folds is None or folds == folds_of(problem.splits.describe()):
        return
    problem.splits = make_splits(problem.y, problem.info.task, seed=config.seed, cv=folds)
    problem.info = dataclasses.replace(problem.info, n_train_rows=problem.splits.n_train_rows)
    log.info("resume: validation as the study began: %s", problem.splits.describe())


def _study_exists(storage: Any, name: str) -> bool:
    try:
        return any(s.study_name == name for s in optuna.get_all_study_summaries(storage))
    except Exception:  # noqa: BLE001 - a fresh storage may have no tables yet
        return False


def enqueue_defaults(study: optuna.Study, problem: Problem, portfolio: bool = True,
                     probe: bool = False) -> None:
    """Queue each learner's cheap default configuration, then the portfolio configurations
    (round-robin over learners), before the sampler takes over. ``probe``: first the first
    learner's default on at most ``PROBE_ROWS`` training rows, one fold, cut short (see
    :mod:`automl.fidelity`), when that learner takes a time share."""
    queue: list[tuple[str, dict[str, Any], str]] = []
    portfolios: list[list[dict[str, Any]]] = []
    for learner in problem.learners:
        trainer = get_trainer(learner)
        queue.append((learner, dict(trainer.default(problem.info)), "default"))
        portfolios.append(list(trainer.portfolio(problem.info)) if portfolio else [])
    if probe and trainer_class(problem.learners[0]).time_share:
        queue.insert(0, (queue[0][0], queue[0][1], PROBE))
    for i in range(max((len(p) for p in portfolios), default=0)):
        for learner, configs in zip(problem.learners, portfolios):
            if i < len(configs):
                queue.append((learner, configs[i], "portfolio"))
    # Optuna's skip_if_exists would drop the default as the probe's duplicate: here the probe
    # counts apart, and a configuration queued already (a portfolio entry equal to a default
    # on a small table, or one queued by a second process creating the study at once) is not
    # queued again
    def key(kind: str | None, fixed: dict[str, Any]) -> tuple[bool, str]:
        return kind == PROBE, repr(sorted(fixed.items()))

    seen = {key(t.user_attrs.get("queued"), t.system_attrs.get("fixed_params", t.params))
            for t in study.get_trials(deepcopy=False)}
    for learner, params, kind in queue:
        fixed = {"learner": learner, **{study_mod.param_name(learner, k): v for k, v in params.items()}}
        if key(kind, fixed) not in seen:
            seen.add(key(kind, fixed))
            study.enqueue_trial(fixed, user_attrs={"queued": kind}, skip_if_exists=False)
