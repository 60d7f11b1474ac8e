"""Hyperparameters, per learner: importances, parallel coordinates and slices.

A trial has only its own learner's hyperparameters (named ``<learner>__<name>``), so each
learner's completed trials are viewed as a study of their own, the prefix stripped
(:func:`learner_study`), and drawn with Optuna's own visualization functions.
"""

from __future__ import annotations

import math
from typing import Any

from automl.report.page import FigureWriter, Section, esc, note
from automl.study import own_params

MIN_TRIALS_IMPORTANCE = 4  # completed trials of one learner needed for hyperparameter importances


def learner_of(trial: Any) -> str:
    """The learner (model family) a trial tried; empty when it has none."""
    return str(trial.params.get("learner", trial.user_attrs.get("learner", "")))


def learner_study(study: Any, learner: str) -> Any:
    """An in-memory study of one learner's completed trials, its parameter prefix stripped;
    each trial keeps its number in the run's study as the user attribute ``number``."""
    import optuna
    from optuna.trial import TrialState

    sub = optuna.create_study(direction=study.direction, study_name=f"{study.study_name}:{learner}")
    trials = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if learner_of(t) != learner or t.value is None or not math.isfinite(t.value):
            continue
        params, dists = own_params(t.params, learner), own_params(t.distributions, learner)
        trials.append(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=t.value, params=params, distributions=dists,
            user_attrs={"number": t.number}, intermediate_values=dict(t.intermediate_values)))
    sub.add_trials(trials)
    return sub


def varying_params(sub: Any) -> list[str]:
    """Parameters that took more than one value among the study's trials."""
    values: dict[str, set[str]] = {}
    for t in sub.trials:
        for k, v in t.params.items():
            values.setdefault(k, set()).add(repr(v))
    return sorted(k for k, v in values.items() if len(v) > 1)


def _learner_figures(sec: Section, sub: Any, learner: str, metric: str, fig: FigureWriter,
                     seed: int) -> None:
    """One learner's importances, parallel coordinates and slices (Optuna's plots)."""
    import optuna.visualization as vis
    from optuna.importance import FanovaImportanceEvaluator

    n, varying = len(sub.trials), varying_params(sub)
    sec.blocks.append(f"<h3>{esc(learner)} <span class=\"dim\">({n} completed trial"
                      f"{'s' if n != 1 else ''})</span></h3>")
    if not varying:
        sec.blocks.append(note(
            f"{learner}: {'one trial' if n == 1 else 'every trial had the same configuration'}"
            " — no hyperparameter varied, so there are no importances, parallel coordinates "
            "or slices to show."))
        return

    def importance() -> None:
        if len(varying) == 1:
            sec.blocks.append(note(f"{learner}: only {varying[0]} varied, so there is no "
                                   "importance to compare; see its slice below."))
            return
        if n < MIN_TRIALS_IMPORTANCE:
            sec.blocks.append(note(f"{learner}: hyperparameter importances need at least "
                                   f"{MIN_TRIALS_IMPORTANCE} completed trials (it has {n})."))
            return
        f = vis.plot_param_importances(sub, evaluator=FanovaImportanceEvaluator(seed=seed),
                                       params=varying, target_name=metric)
        f.update_layout(title=f"Hyperparameter importances: {learner}")
        sec.blocks.append(fig(f, max(260, 80 + 32 * len(varying))))

    def parallel() -> None:
        if n < 2:
            return
        f = vis.plot_parallel_coordinate(sub, params=varying, target_name=metric)
        f.update_layout(title=f"Parallel coordinates: {learner}")
        sec.blocks.append(fig(f, 420))

    def slices() -> None:
        f = vis.plot_slice(sub, params=varying, target_name=metric)
        f.update_layout(title=f"Slices: {learner}")
        sec.blocks.append(fig(f, 420))

    sec.attempt(f"the importances of {learner}", importance)
    sec.attempt(f"the parallel coordinates of {learner}", parallel)
    sec.attempt(f"the slices of {learner}", slices)


def hyperparameter_section(study: Any, metric: str, fig: FigureWriter, seed: int) -> Section:
    """A part per learner with completed trials, most trials first."""
    from optuna.trial import TrialState

    sec = Section("hyperparameters", "Hyperparameters, per learner",
                  intro="Each learner's completed trials viewed as a study of their own (a trial "
                  "has only its own learner's hyperparameters).")
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.value is not None and math.isfinite(t.value):
            counts[learner_of(t)] = counts.get(learner_of(t), 0) + 1
    if not counts:
        sec.notes.append("No completed trial: nothing to show.")
        return sec
    learners = sorted(counts, key=lambda k: -counts[k])
    if len(learners) == 1:
        sec.notes.append(f"Only one learner ({learners[0]}) has completed trials.")
    for learner in learners:
        _learner_figures(sec, learner_study(study, learner), learner, metric, fig, seed)
    return sec
