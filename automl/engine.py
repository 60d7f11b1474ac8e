"""One AutoML run: prepare the problem, search, refit the winner, return the model.

Used by the command line and by the Python API alike.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import pickle
import shutil
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
from optuna.trial import FrozenTrial

from automl import study as study_mod
from automl.config import SearchConfig
from automl.contracts import DataInfo, FitData, NullReporter
from automl.data import Target
from automl.exceptions import ConfigError, DataError, SearchFailedError
from automl.isolation import (
    default_memory_cap_mb,
    die_with_parent,
    release_signals,
    run_isolated,
    signals_held,
)
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
KNN_MAX_ROWS = 100_000


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
    if not config.include and len(X) > KNN_MAX_ROWS and "knn" in learners and len(learners) > 1:
        log.info("leaving out knn: %d rows make nearest-neighbour search too slow (--include knn "
                 "to force it)", len(X))
        learners.remove("knn")
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
                            "answer; drop it (--ignore-columns) if it is only known afterwards", col)
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
        # a fresh random stream: replaying the first run's would repeat its configurations
        study.sampler = study_mod.make_sampler(
            config.sampler, study_mod.resumed_seed(config.seed, len(study.trials)), config.n_jobs)
        n_dead, n_queued = study_mod.fail_dead_trials(study)
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
        enqueue_defaults(study, problem, portfolio=config.sampler != "grid")
    return study


def _study_exists(storage: Any, name: str) -> bool:
    try:
        return any(s.study_name == name for s in optuna.get_all_study_summaries(storage))
    except Exception:  # noqa: BLE001 - a fresh storage may have no tables yet
        return False


def _run_worker(config: SearchConfig, problem: Problem, storage_url: str, study_name: str,
                budget: Budget, oof_dir: str | None = None, fold_dir: str | None = None) -> None:
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # (with SIGTERM): trial "interrupted"
    release_signals()  # held while the parent forked us
    parent = mp.parent_process()
    die_with_parent(parent.pid if parent is not None else None)  # and dies with it
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = study_mod.make_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=study_mod.make_sampler(config.sampler, config.seed + os.getpid(),
                                                             config.n_jobs),
                              pruner=study_mod.make_pruner(config.pruner))
    objective = Objective(problem, config, budget, storage_url, oof_dir=oof_dir, fold_dir=fold_dir)
    try:
        run_optimize(study, objective, budget)
    except KeyboardInterrupt:
        _fail_own_trials(study)
        os._exit(130)
    except BaseException as exc:  # noqa: BLE001 - one line, not a traceback from a worker
        log.warning("worker %d stopped: %s: %s", os.getpid(), type(exc).__name__, exc)
        os._exit(1)
    os._exit(0)


def _fail_own_trials(study: optuna.Study) -> None:
    """On an interruption: a trial Optuna created but whose objective had not started yet
    is still RUNNING; record it as interrupted (a resume runs its configuration again)."""
    try:
        study_mod.fail_own_running_trials(study, "interrupted (Ctrl-C)")
    except Exception as exc:  # noqa: BLE001 - best effort while stopping; a resume fails it anyway
        log.debug("could not mark this process's running trials: %s", exc)


def search(problem: Problem, config: SearchConfig, study: optuna.Study, storage_url: str | None,
           budget: Budget, callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
           on_result: Callable[[Any, dict[str, Any]], None] | None = None,
           oof_dir: str | None = None, fold_dir: str | None = None) -> None:
    """Run the trials: in this process, plus ``n_jobs - 1`` forked workers on the same storage."""
    objective = Objective(problem, config, budget, storage_url, on_result=on_result, oof_dir=oof_dir,
                          fold_dir=fold_dir)
    workers: list[Any] = []
    try:
        if config.n_jobs > 1 and storage_url is not None:
            ctx = mp.get_context("fork")
            for _ in range(config.n_jobs - 1):
                p = ctx.Process(target=_run_worker,
                                args=(config, problem, storage_url, study.study_name, budget, oof_dir,
                                      fold_dir),
                                daemon=False)
                with signals_held():  # a Ctrl-C now arrives once the worker is on the list
                    p.start()
                    workers.append(p)
        run_optimize(study, objective, budget, callbacks)
    except BaseException:
        for p in workers:
            if p.is_alive():
                p.terminate()  # the worker records its running trial as interrupted
        _fail_own_trials(study)
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        raise
    finally:
        for p in workers:
            p.join(timeout=max(5.0, budget.end - time.monotonic() + 5) if budget.time_budget else None)
            if p.is_alive():
                p.kill()
                p.join()


def _no_success_error(study: optuna.Study) -> SearchFailedError:
    states: dict[str, int] = {}
    reasons: list[str] = []
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if t.user_attrs.get("fail_reason"):
            reasons.append(t.user_attrs["fail_reason"])
    why = f"; last failure: {reasons[-1]}" if reasons else ""
    return SearchFailedError(f"no trial succeeded ({states or 'no trials ran'}){why}; "
                             "give a larger --time-budget or check the data.")


def refit_trial(problem: Problem, config: SearchConfig, trial: FrozenTrial,
                deadline: float) -> Any | None:
    """Refit one trial's configuration on all rows; None if it fails or runs out of time."""
    learner, params = learner_params(trial)
    trainer = get_trainer(learner)
    extra: dict[str, Any] = {}
    if trial.user_attrs.get("n_iterations"):
        scale = len(problem.y) / max(1, problem.splits.n_train_rows)
        extra["n_iterations"] = max(1, int(round(trial.user_attrs["n_iterations"] * scale)))
    data = FitData(X_train=problem.X, y_train=problem.y, X_valid=None, y_valid=None,
                   info=problem.info, metric=problem.metric, seed=config.seed,
                   n_threads=config.threads_per_trial(len(problem.y)), extra=extra,
                   accelerator=config.extra.get("accelerator", "cpu"), deadline=deadline)
    def fit_limited() -> Any:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=data.n_threads):
            return trainer.fit(params, data, NullReporter())

    if not config.isolate:
        try:
            return fit_limited()
        except Exception as exc:  # noqa: BLE001 - a failed refit falls back, it does not crash
            log.warning("refit of trial %d (%s) failed: %s", trial.number, learner, exc)
            return None
    # the model comes back as bytes, unpickled after the last fork (see build_model)
    outcome = run_isolated(
        lambda: pickle.dumps(fit_limited(), protocol=pickle.HIGHEST_PROTOCOL),
        deadline=deadline, mem_cap_mb=config.memory_limit_mb or default_memory_cap_mb(1))
    if outcome.status == "ok":
        return outcome.value
    log.warning("refit of trial %d (%s) failed (%s)", trial.number, learner, outcome.reason)
    return None


def select_ensemble(problem: Problem, study: optuna.Study,
                    oof_dir: str | None) -> tuple[list[FrozenTrial], list[float], float | None]:
    """Caruana selection over the best trials' out-of-fold predictions (best single if none
    helps): the best trials and, for diversity, the best of every learner family."""
    from automl.ensemble import caruana
    from automl.search import candidate_numbers, load_oof

    ranked = best_trials(study, problem.metric, 10_000)
    if not ranked:
        raise _no_success_error(study)
    by_number = {t.number: t for t in ranked}
    candidates = [by_number[n] for n in candidate_numbers(study, problem.metric)]
    oof = load_oof(oof_dir, [t.number for t in candidates]) if oof_dir else {}
    if len(oof) < 2 or ranked[0].number not in oof:
        return [ranked[0]], [1.0], None
    k = problem.info.n_classes
    folds = np.full(len(problem.y), -1)
    for i, (_, va) in enumerate(problem.splits.folds):
        folds[va] = i
    t0 = time.monotonic()
    sel = caruana(oof, problem.y, problem.metric, k, folds=folds)
    log.debug("ensemble selection took %.2fs", time.monotonic() - t0)
    if not sel.improves or not problem.metric.better(sel.score, sel.single_score):
        return [ranked[0]], [1.0], None
    members = sorted(zip(sel.trials, sel.weights), key=lambda tw: -tw[1])
    log.info("ensemble of %d trials: validation %s %.5g (best single %.5g)", len(members),
             problem.metric.name, sel.score, sel.single_score)
    return [by_number[n] for n, _ in members], [w for _, w in members], sel.score


def build_model(problem: Problem, config: SearchConfig, study: optuna.Study, budget: Budget,
                fallback: dict[int, Any] | None = None, oof_dir: str | None = None,
                fold_dir: str | None = None) -> AutoMLModel:
    """The final model: the winner (an ensemble of trials, or the best trial), each member
    its trial's fold models bagged (when kept, see ``FoldBag``) or refitted on all rows."""
    if config.ensemble:
        trials, weights, ens_score = select_ensemble(problem, study, oof_dir)
    else:
        best = best_trials(study, problem.metric, 1)
        if not best:
            raise _no_success_error(study)
        trials, weights, ens_score = best, [1.0], None
    bags = _kept_fold_models(fold_dir, trials)
    if budget.time_budget:
        hard = budget.end + 0.5 * max(0.1 * budget.time_budget, 5.0)
    else:
        hard = time.monotonic() + max(60.0, 10 * sum(refit_estimate(t, problem) for t in trials))
    members, kept_w, desc = [], [], []
    for i, (trial, w) in enumerate(zip(trials, weights)):
        learner, params = learner_params(trial)
        if trial.number in bags:
            members.append(bags[trial.number])
            kept_w.append(w)
            desc.append({"trial": trial.number, "learner": learner, "params": params,
                         "score": trial.value, "weight": w, "bagged_folds": len(problem.splits.folds)})
            continue
        # the first (heaviest) member may use the slack; the others must fit in the budget
        deadline = hard if i == 0 else min(hard, budget.end if budget.time_budget else hard)
        if i > 0 and time.monotonic() + refit_estimate(trial, problem) > deadline:
            log.info("no time left to refit ensemble member trial %d; leaving it out", trial.number)
            continue
        kept = (fallback or {}).get(trial.number) if i == 0 else None
        if kept is not None and time.monotonic() + refit_estimate(trial, problem) > deadline:
            log.info("no time to refit trial %d on all rows; keeping its model trained on the "
                     "first split", trial.number)
            est = kept
        else:
            est = refit_trial(problem, config, trial, deadline)
        if est is None and kept is not None:
            log.warning("using trial %d's model trained on its first split instead of a refit",
                        trial.number)
            est = fallback[trial.number]
        if est is None:
            continue
        members.append(est)
        kept_w.append(w)
        desc.append({"trial": trial.number, "learner": learner, "params": params,
                     "score": trial.value, "weight": w})
    # models kept as bytes are unpickled only now, after the last forked refit
    members = [_unpickle_member(m, problem) for m in members]
    if not members:
        raise SearchFailedError(f"refitting the best trial ({trials[0].params.get('learner')}) on all "
                                "rows failed and no fold model was kept; give a larger --time-budget.")
    total = sum(kept_w)
    kept_w = [w / total for w in kept_w]
    for d, w in zip(desc, kept_w):
        d["weight"] = w
    model = AutoMLModel(
        schema=problem.info.schema, task=problem.info.task, classes=problem.classes,
        metric=problem.metric.name, target="", members=members, weights=kept_w, description=desc,
    )
    model.validation_score = ens_score if (ens_score is not None and len(members) == len(trials)) \
        else trials[0].value
    return model


MAX_BAGGED_BYTES = 512 * 2**20  # fold models beyond this in one final model are refitted instead


def _kept_fold_models(fold_dir: str | None, trials: Sequence[FrozenTrial]) -> dict[int, tuple[str, bytes]]:
    """The pickled fold models kept for these trials (read, not unpickled), within a size cap."""
    from automl.search import fold_models_path

    bags: dict[int, tuple[str, bytes]] = {}
    if fold_dir is None:
        return bags
    total = 0
    for trial in trials:
        path = fold_models_path(fold_dir, trial.number)
        try:
            blob = path.read_bytes()
        except OSError:
            continue
        if total + len(blob) > MAX_BAGGED_BYTES:
            continue
        total += len(blob)
        bags[trial.number] = ("folds", blob)
    return bags


def _unpickle_member(member: Any, problem: Problem) -> Any:
    from automl.ensemble import FoldBag

    if isinstance(member, tuple) and member[0] == "folds":
        return FoldBag(pickle.loads(member[1]), problem.info.task, problem.info.n_classes)
    return pickle.loads(member) if isinstance(member, bytes) else member


def _shared_preprocessing(problem: Problem, config: SearchConfig, budget: Budget) -> dict:
    """Fit every preprocessing style once per fold (in a child when isolating), so trials
    share it instead of refitting encoders and text vectorizers each time."""
    from automl.search import preprocess_folds

    styles = sorted({s for name in problem.learners
                     if isinstance(s := getattr(get_trainer(name), "style", None), str)})
    if not styles:
        return {}
    t0 = time.monotonic()
    if not config.isolate:  # trials run in this process (in-memory study)
        try:
            return preprocess_folds(problem, styles, config.seed)
        except Exception as exc:  # noqa: BLE001 - trials then preprocess on their own
            log.debug("shared preprocessing failed: %s", exc)
            return {}
    deadline = time.monotonic() + (0.25 * budget.time_budget if budget.time_budget else 600.0)
    outcome = run_isolated(lambda: preprocess_folds(problem, styles, config.seed),
                           deadline=deadline,
                           mem_cap_mb=config.memory_limit_mb or default_memory_cap_mb(1))
    if outcome.status != "ok":
        log.debug("shared preprocessing failed (%s); trials preprocess on their own", outcome.reason)
        return {}
    log.debug("shared preprocessing of %s took %.2fs", styles, time.monotonic() - t0)
    return outcome.value


def _prune_oof(folder: str, study: optuna.Study, problem: Problem, keep: int = 30) -> None:
    """Keep the out-of-fold predictions of the best trials only (a resume ensembles those)."""
    kept = {f"trial-{t.number}.npy" for t in best_trials(study, problem.metric, keep)}
    for path in Path(folder).glob("trial-*.npy"):
        if path.name not in kept:
            path.unlink(missing_ok=True)


def _best_summary(study: optuna.Study, problem: Problem) -> dict[str, Any]:
    """The study's best single trial (the final model may be an ensemble including it)."""
    best = best_trials(study, problem.metric, 1)[0]
    learner, params = learner_params(best)
    return {"trial": best.number, "learner": learner, "params": params, "score": best.value}


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
    if storage_url is None and config.isolate:
        # An in-memory study cannot be reached from a child process, so trials run here; the
        # refit must then run here too: forking after OpenMP ran in this process can hang.
        config = dataclasses.replace(config, isolate=False)
    if any(getattr(get_trainer(name), "needs_accelerator", False) for name in problem.learners):
        config.extra["accelerator"] = config.resolved_accelerator()
    from automl.text_embeddings import prepare_text

    prepare_text(problem, config, start)  # embeds text columns once, before anything forks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = open_study(config, problem, storage_url, study_name, resume, target_name)
        if problem.info.text_backbone:  # the report rebuilds text features with it
            study.set_user_attr("text_backbone", problem.info.text_backbone)
        budget = Budget(start=start, time_budget=config.time_budget, n_trials=config.n_trials,
                        trial_timeout=config.trial_timeout)
        if config.time_budget:
            budget.reserve = max(1.0, 0.05 * config.time_budget)
        fallback: dict[int, Any] = {}

        def keep(trial: Any, result: dict[str, Any]) -> None:
            if result.get("model") is not None:
                fallback.clear()
                fallback[trial.number] = result["model"]

        problem.pre_cache = _shared_preprocessing(problem, config, budget)
        oof_dir = config.extra.get("oof_dir")
        tmp_dir = None
        if config.ensemble and not oof_dir:
            tmp_dir = tempfile.mkdtemp(prefix="automl-oof-")
            oof_dir = tmp_dir
        elif oof_dir:
            Path(oof_dir).mkdir(parents=True, exist_ok=True)
        # Fold models are pickles: they live in a private temporary folder for this run only,
        # never in the output folder a later --resume would read.
        fold_dir = (tempfile.mkdtemp(prefix="automl-folds-")
                    if config.bagging and problem.splits.kind == "cv" else None)
        try:
            search(problem, config, study, storage_url, budget, callbacks, on_result=keep,
                   oof_dir=oof_dir, fold_dir=fold_dir)
            model = build_model(problem, config, study, budget, fallback, oof_dir, fold_dir)
            if oof_dir and not tmp_dir:
                _prune_oof(oof_dir, study, problem)
        finally:
            for folder in (tmp_dir, fold_dir):
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
    model.target = target_name
    summary = {
        "task": problem.info.task.value, "metric": problem.metric.name,
        "validation": problem.splits.describe(), "n_rows": problem.info.n_rows,
        "n_trials": sum(t.state.is_finished() for t in study.trials), "best": _best_summary(study, problem),
        "ensemble": model.description if len(model.members) > 1 else None,
        "validation_score": getattr(model, "validation_score", None),
        "elapsed_s": round(time.monotonic() - start, 2),
    }
    return FitResult(model=model, study=study, problem=problem, summary=summary)
