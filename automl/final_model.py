"""The final model: the ensemble (or the best trial) chosen from the study, each member its
trial's bagged fold models or a refit on all rows, run through the search's executor.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from automl.calibration import choose_temperature
from automl.config import SearchConfig
from automl.budget import Budget
from automl.exceptions import SearchFailedError
from automl.executors import Executor
from automl.fidelity import refit_estimate
from automl.model import AutoMLModel, Deferred
from automl.objective import TrialSpec, refit
from automl.problem import Problem
from automl.study import best_trials, learner_params
from automl.trial_files import KeptModels, candidate_numbers, fold_models_path, load_oof

log = logging.getLogger("automl")
MAX_BAGGED_BYTES = 512 * 2**20  # fold models beyond this in one final model are refitted instead


def no_success_error(study: optuna.Study, budget: Budget | None = None,
                      search_start: float | None = None) -> SearchFailedError:
    """Why no model: the trials' states, the last failure and, for a time budget, how long the
    preparation and the trials took and what budget would do."""
    states: dict[str, int] = {}
    reasons: list[str] = []
    longest = 0.0
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if t.user_attrs.get("fail_reason"):
            reasons.append(t.user_attrs["fail_reason"])
        if t.datetime_start and t.datetime_complete:
            longest = max(longest, (t.datetime_complete - t.datetime_start).total_seconds())
    why = f"; last failure: {reasons[-1]}" if reasons else ""
    shown = ", ".join(f"{n} {s.lower()}" for s, n in states.items()) or "no trials ran"
    if budget is None or not budget.time_budget or search_start is None:
        return SearchFailedError(f"no trial succeeded ({shown}){why}; give a larger --time-budget "
                                 "or check the data.")
    prep = max(0.0, search_start - budget.start)
    started = sum(n for s, n in states.items() if s != "WAITING")
    if not started:
        need = math.ceil(2 * prep + 10)
        return SearchFailedError(f"the {budget.time_budget:g} s budget ran out before the first trial "
                                 f"started: reading and preparing the data took {prep:.1f} s; give "
                                 f"--time-budget {need} or more.")
    need = math.ceil(prep + 3 * max(longest, 1.0) + 5)
    return SearchFailedError(f"no trial finished within the {budget.time_budget:g} s budget "
                             f"({shown}): preparing the data took {prep:.1f} s and a trial ran up to "
                             f"{longest:.1f} s{why}; give --time-budget {need} or more, or check "
                             "the data.")


def refit_trial(problem: Problem, config: SearchConfig, trial: FrozenTrial, deadline: float,
                executor: Executor, model_dir: str | None = None) -> bytes | str | None:
    """Refit one trial's configuration on all rows, where trials run; the pickled estimator
    (with ``model_dir``: the path of the file in it that holds it), or None if it fails or
    runs out of time."""
    learner, params = learner_params(trial)
    n_iterations = None
    if trial.user_attrs.get("n_iterations"):
        scale = len(problem.y) / max(1, problem.splits.n_train_rows)
        n_iterations = max(1, int(round(trial.user_attrs["n_iterations"] * scale)))
    limit = max(0.1, deadline - time.monotonic())
    spec = TrialSpec(number=trial.number, learner=learner, params=params, seed=config.seed,
                     n_threads=config.threads_per_trial(len(problem.y), problem.info.n_features),
                     soft_s=limit, limit_s=limit,
                     accelerator=getattr(executor, "accelerator", "cpu"), n_iterations=n_iterations,
                     model_dir=model_dir)
    outcome = executor.call(refit, spec)
    if outcome.status == "ok":
        return outcome.value
    log.warning("refit of trial %d (%s) failed (%s)", trial.number, learner, outcome.reason)
    return None


def select_ensemble(problem: Problem, study: optuna.Study, oof_dir: str | None,
                    announce: bool = True) -> tuple[list[FrozenTrial], list[float], float | None]:
    """Caruana selection over the best trials' out-of-fold predictions (best single if none
    helps): the best trials and, for diversity, the best of every learner family.
    ``announce``: log the ensemble chosen (the search's own plans do not)."""
    from automl.ensemble import caruana, wins_on_its_rows

    ranked = best_trials(study, problem.metric, 10_000)
    if not ranked:
        raise no_success_error(study)
    by_number = {t.number: t for t in ranked}
    candidates = [by_number[n] for n in candidate_numbers(study, problem.metric)]
    oof = load_oof(oof_dir, [t.number for t in candidates]) if oof_dir else {}
    # trials stopped after some folds have gaps in their out-of-fold predictions: the
    # ensemble is chosen on all rows from the trials validated on all of them when there
    # are two; else on the rows the best trial was validated on, from the trials validated
    # on all of those (when every trial stopped after the first fold: that fold). A best
    # trial scored on fewer folds would narrow the choice to its rows (ames at 60 s: two
    # folds of five, and the ensemble chosen there scored RMSE 26,590 on test against
    # LightGBM's defaults' 25,230)
    if ranked[0].number not in oof:
        return [ranked[0]], [1.0], None
    n = len(problem.y)
    best, own = ranked[0].number, oof[ranked[0].number]
    complete = {num: a for num, a in oof.items() if not np.isnan(a).any()}
    if len(complete) >= 2:
        oof = complete
    else:
        covered = ~np.isnan(own.reshape(n, -1)).any(axis=1)
        oof = {num: a for num, a in oof.items() if not np.isnan(a.reshape(n, -1)[covered]).any()}
    if len(oof) < 2:
        return [ranked[0]], [1.0], None
    k = problem.info.n_classes
    folds = np.full(len(problem.y), -1)
    for i, (_, va) in enumerate(problem.splits.folds):
        folds[va] = i
    t0 = time.monotonic()
    sel = caruana(oof, problem.y, problem.metric, k, folds=folds)
    log.debug("ensemble selection took %.2fs", time.monotonic() - t0)
    ensemble = sel.improves and problem.metric.better(sel.score, sel.single_score)
    members = sorted(zip(sel.trials, sel.weights), key=lambda tw: -tw[1])  # or the best single
    if best not in oof:
        # The best trial stopped after some folds (its share of the budget ran out), so it
        # was left out of the choice above, and its value comes from other rows than theirs
        # (digits at 60 s: LightGBM at log loss 0.028 on its one fold, a fold on which the
        # ensemble chosen scored 0.038, against 0.080 on all rows). It is the model only
        # where it clearly beats that choice on its own rows; else the choice stands (before,
        # it was the model whenever the complete trials formed no ensemble).
        if wins_on_its_rows(own, oof, dict(members), problem.y, problem.metric, k):
            log.log(logging.INFO if announce else logging.DEBUG,
                    "using trial %d alone: validated on %s folds, it beats the %s of the trials "
                    "validated on all folds on those rows", best,
                    ranked[0].user_attrs.get("partial_folds", "some"),
                    "ensemble" if ensemble else "best")
            return [ranked[0]], [1.0], None
        if not ensemble:
            return [by_number[members[0][0]]], [1.0], None
    if not ensemble:
        return [ranked[0]], [1.0], None
    log.log(logging.INFO if announce else logging.DEBUG,
            "ensemble of %d trials: validation %s %.5g (best single %.5g)", len(members),
            problem.metric.name, sel.score, sel.single_score)
    return [by_number[n] for n, _ in members], [w for _, w in members], sel.score


class FallbackModel:
    """The best trials' own models (each trained on its trial's first split, pickled), kept
    so that a failed or unaffordable refit still ends with a model: the best trial's model
    stands in for its refit, and an ensemble member with no time left for its refit joins
    with its kept model instead of being left out. Kept: the ``keep`` best and the best of
    each learner (ensemble selection's candidates).

    Trials that run concurrently (``--n-jobs``, Ray) send their model while others run, so
    results arrive in any order: the ``keep`` best are kept, not the last ones; kept bytes
    beyond ``max_bytes`` drop the worst.

    With a ``folder`` (the engine gives a private temporary one) the bytes wait there, not in
    the driver's memory: forked trials and refits would otherwise each start out holding
    them, and a few forests' first-split models came to hundreds of MB. ``models`` reads a
    kept model's bytes when asked.

    Example:
        >>> from automl.contracts import Task
        >>> from automl.metrics import get_metric
        >>> keep = FallbackModel(get_metric("auto", Task.BINARY), keep=2)  # ROC AUC: higher is better
        >>> for number, value in ((1, 0.80), (0, 0.90), (2, 0.85), (3, 0.70)):
        ...     keep.offer(type("T", (), {"number": number})(), {"value": value, "model": b"m"})
        >>> sorted(keep.models)
        [0, 2]
    """

    def __init__(self, metric: Any, keep: int = 1, max_bytes: int = 256 * 2**20,
                 folder: str | None = None) -> None:
        self.metric, self.keep, self.max_bytes = metric, keep, max_bytes
        self.models: KeptModels = KeptModels(folder)
        self.values: dict[int, float] = {}
        self.learners: dict[int, Any] = {}

    def offer(self, trial: Any, result: dict[str, Any]) -> None:
        if result.get("model_file"):  # the trial pickled it into a file (spec.model_dir)
            if not self.models.put_file(trial.number, Path(result["model_file"])):
                return
        elif result.get("model") is not None:
            self.models.put(trial.number, result["model"])
        else:
            return
        self.values[trial.number] = float(result["value"])
        self.learners[trial.number] = (getattr(trial, "params", None) or {}).get("learner")
        ranked = sorted(self.values, key=self.values.__getitem__,
                        reverse=self.metric.greater_is_better)
        # the best ones, and the best of each learner (ensembles pick those for diversity)
        wanted = set(ranked[:self.keep])
        seen: set[Any] = set()
        for number in ranked:
            if self.learners[number] not in seen:
                seen.add(self.learners[number])
                wanted.add(number)
        kept, total = [], 0
        for number in (n for n in ranked if n in wanted):
            size = self.models.size(number)
            if kept and total + size > self.max_bytes:
                continue
            kept.append(number)
            total += size
        self.models.keep_only(kept)
        self.values = {n: self.values[n] for n in kept}
        self.learners = {n: self.learners[n] for n in kept}


def build_model(problem: Problem, config: SearchConfig, study: optuna.Study, budget: Budget,
                executor: Executor, fallback: Mapping[int, Any] | None = None,
                oof_dir: str | None = None, fold_dir: str | None = None,
                model_dir: str | None = None, lazy: bool = False) -> AutoMLModel:
    """The final model: the winner (an ensemble of trials, or the best trial), each member
    its trial's fold models bagged (when kept, see ``FoldBag``) or refitted on all rows.
    ``model_dir``: a folder of this machine where refits leave their pickled models (for
    an executor whose trials run here), read back one at a time rather than all held.
    ``lazy``: members stay pickled (in their files, where they have one) as
    :class:`~automl.model.Deferred`, for a caller that saves the model before those files go."""
    if config.ensemble:
        trials, weights, ens_score = select_ensemble(problem, study, oof_dir)
    else:
        best = best_trials(study, problem.metric, 1)
        if not best:
            raise no_success_error(study)
        trials, weights, ens_score = best, [1.0], None
    bags = _kept_fold_models(fold_dir, trials)
    if budget.time_budget:
        hard = budget.end + 0.5 * max(0.1 * budget.time_budget, 5.0)
    else:
        hard = time.monotonic() + max(60.0, 10 * sum(refit_estimate(t, problem) for t in trials))
    members: list[Any] = []
    kept_w, desc = [], []
    for i, (trial, w) in enumerate(zip(trials, weights)):
        learner, params = learner_params(trial)
        if trial.number in bags:
            members.append(bags[trial.number])
            kept_w.append(w)
            desc.append({"trial": trial.number, "learner": learner, "params": params,
                         "score": trial.value, "weight": w, "bagged_folds": len(problem.splits.folds)})
            continue
        # the first (heaviest) member may use the slack; the others a quarter of it: the
        # search ran until the best trial's refit, so a member with neither time nor a kept
        # model would otherwise be left out (arrhythmia at 60 s lost its random forest
        # member so and scored 1.009 instead of 0.826), but all of it overran (digits: 66 s)
        deadline = hard if i == 0 or not budget.time_budget else \
            min(hard, budget.end + 0.25 * (hard - budget.end))
        kept = _kept_source(fallback, trial.number)
        t0, guess = time.monotonic(), refit_estimate(trial, problem)
        if i > 0 and kept is None and t0 + guess > deadline:
            log.info("no time left to refit ensemble member trial %d; leaving it out", trial.number)
            continue
        est: Any
        if kept is not None and t0 + guess > deadline:
            log.info("no time to refit trial %d on all rows; using its model trained on the "
                     "first split", trial.number)
            est = kept
        else:
            est = refit_trial(problem, config, trial, deadline, executor, model_dir)
            log.debug("refit of trial %d took %.2fs (%.2fs expected)", trial.number,
                      time.monotonic() - t0, guess)
        if est is None and kept is not None:
            log.warning("using trial %d's model trained on its first split instead of a refit",
                        trial.number)
            est = kept
        if est is None:
            continue
        members.append(est)
        kept_w.append(w)
        desc.append({"trial": trial.number, "learner": learner, "params": params,
                     "score": trial.value, "weight": w})
    # models kept as bytes are unpickled only now, after the last forked refit; one at a
    # time, each member's bytes let go as it is built (a forest's are tens of MB)
    bags.clear()
    est = kept = None  # the loop's last references to a member's bytes
    for i in range(len(members)):
        members[i] = (Deferred(functools.partial(_unpickle_member, members[i], problem, False))
                      if lazy else _unpickle_member(members[i], problem))
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
    model.validation_score = ens_score if (ens_score is None or len(members) == len(trials)) \
        else kept_blend_score(problem, oof_dir, desc, trials)
    if model.validation_score is None:
        model.validation_score = trials[0].value
    if problem.info.task.is_classification:
        model.temperature = choose_temperature(problem.y, oof_dir, [d["trial"] for d in desc],
                                               kept_w, problem.metric.name)
    return model


def kept_blend_score(problem: Problem, oof_dir: str | None, desc: Sequence[Mapping[str, Any]],
                     trials: Sequence[FrozenTrial]) -> float | None:
    """The validation score of an ensemble some members were left out of (no time to refit
    them): its kept members' out-of-fold blend with their renormalized weights, scored as
    the ensemble was chosen; else the best kept member's own value. (It said the heaviest
    chosen member's value instead: wine_quality at 60 s reported log loss 1.018 for an
    ensemble whose blend validated at about 0.81.)"""
    from automl.ensemble import blend_score

    weights = {int(d["trial"]): float(d["weight"]) for d in desc}
    oof = load_oof(oof_dir, list(weights)) if oof_dir else {}
    if weights and len(oof) == len(weights):
        folds = np.full(len(problem.y), -1)
        for i, (_, va) in enumerate(problem.splits.folds):
            folds[va] = i
        score = blend_score(oof, weights, problem.y, problem.metric, problem.info.n_classes, folds)
        if np.isfinite(score):
            return score
    values = [t.value for t in trials if t.number in weights and t.value is not None]
    if not values:
        return None
    return max(values) if problem.metric.greater_is_better else min(values)


def _kept_fold_models(fold_dir: str | None, trials: Sequence[FrozenTrial]) -> dict[int, tuple[str, bytes]]:
    """The pickled fold models kept for these trials (read, not unpickled), within a size cap."""
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


def _unpickle_member(member: Any, problem: Problem, consume: bool = True) -> Any:
    """Build a member from its pickle: bytes, fold models' bytes, or a file (removed once
    read when ``consume``; a deferred member's file stays until its run folder goes)."""
    from automl.ensemble import FoldBag

    if isinstance(member, tuple) and member[0] == "folds":
        return FoldBag(pickle.loads(member[1]), problem.info.task, problem.info.n_classes)
    if isinstance(member, str):  # a refit's or a kept model's file: streamed
        with open(member, "rb") as fh:
            model = pickle.load(fh)
        if consume:
            os.unlink(member)
        return model
    return pickle.loads(member) if isinstance(member, bytes) else member


def _kept_source(fallback: Mapping[int, Any] | None, number: int) -> bytes | str | None:
    """A trial's kept first-split model: the path of its file where there is one (read only
    when the member is built), else its bytes; None if none was kept."""
    if isinstance(fallback, KeptModels):
        path = fallback.file(number)
        if path is not None:
            return str(path)
    return (fallback or {}).get(number)
