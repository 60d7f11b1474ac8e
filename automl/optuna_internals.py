"""The few private Optuna attributes the engine needs, in one place, each with its reason.

Optuna's public API covers a study's own loop (``ask``, ``tell``, ``Trial.set_user_attr``).
The engine also edits trials it did not ask for in this process, beats the heartbeat of
trials it runs itself, reads a stop request and tests a value against a distribution; Optuna offers no public call for these, so
they go through the study's storage, which takes a trial's storage id (not its number).
Upgrading Optuna: check these functions first (tested with Optuna 4).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


def storage_of(study: optuna.Study) -> Any:
    """The study's storage (``study._storage``): the only handle that edits a trial this
    process did not ``ask`` for (a dead worker's trial on resume, a trial being created in
    the sampler's ``before_trial``) and records heartbeats of trials run by an executor."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's storage id (``trial._trial_id``): storage calls take it, not the number."""
    return int(trial._trial_id)


def study_id(study: optuna.Study) -> int:
    """The study's storage id (``study._study_id``), for storage calls about the study."""
    return int(study._study_id)


def stop_requested(study: optuna.Study) -> bool:
    """Whether ``study.stop()`` was called (``study._stop_flag``; Optuna has no getter)."""
    return bool(getattr(study, "_stop_flag", False))


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the storage records heartbeats: the engine asks trials itself, outside
    ``study.optimize``, so it must beat them itself (``optuna.storages._heartbeat``)."""
    return bool(optuna.storages._heartbeat.is_heartbeat_enabled(study._storage))


def set_trial_user_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str,
                        value: Any) -> None:
    """Set a user attribute of any unfinished trial of the study, by its storage id."""
    storage_of(study).set_trial_user_attr(trial_id(trial), key, value)


def fail_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Mark a RUNNING trial that no process will tell any more failed (raises Optuna's
    ``UpdateFinishedTrialError`` when another process finished it first)."""
    storage_of(study).set_trial_state_values(trial_id(trial), state=TrialState.FAIL)


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` lies inside ``dist`` (``dist._contains``: Optuna checks this only
    inside ``suggest_*``, and has no public test of a value it did not sample)."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):  # not even of the distribution's type
        return False
