"""Creating and loading the Optuna study: storage, sampler, pruner, resume bookkeeping."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import psutil
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import BasePruner, HyperbandPruner
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from automl import optuna_internals as internals
from automl.exceptions import ConfigError

log = logging.getLogger("automl")
HEARTBEAT_S = 5
UNTAGGED_GRACE_S = 60.0  # a RUNNING trial without a worker tag this old was orphaned
GRACE_S = 30
GRID_POINTS = 3


def make_storage(url: str | None) -> Any:
    """An Optuna storage for ``url`` (None: in memory), with heartbeats for RDB storages."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    url = _with_installed_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S, heartbeat_stale_trial_callback=rerun_stale_trial,
            )
    except Exception as exc:  # sqlalchemy raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open --storage {url!r}: {first}; check the URL "
                          "(e.g. sqlite:///study.db or postgresql://user@host/db).") from None


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` names no driver and SQLAlchemy 2.1 picks psycopg 3 for it; use
    psycopg2 (the ``postgres`` extra) when only that one is installed."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return f"postgresql://{rest}"
    if importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    raise ConfigError(f"--storage {scheme}://... needs a PostgreSQL driver; install it with "
                      "`pip install 'automl[postgres]'`.")


def make_sampler(name: str, seed: int, n_jobs: int = 1) -> optuna.samplers.BaseSampler:
    """The sampler for ``--sampler`` (TPE is multivariate over grouped, per-learner spaces),
    wrapped so that every trial records its worker process as soon as it exists."""
    return WorkerTagging(_base_sampler(name, seed, n_jobs))


class WorkerTagging(optuna.samplers.BaseSampler):
    """Delegates to a sampler; records ``worker`` (host:pid) on a trial the moment Optuna
    creates it (``before_trial`` runs inside ``study.ask``), before anything can be sampled.

    A process killed between creating a trial and running the objective leaves a RUNNING
    trial; with its worker recorded, :func:`fail_dead_trials` finds it on resume at once
    instead of it waiting out a heartbeat grace period (or staying RUNNING).
    """

    def __init__(self, base: optuna.samplers.BaseSampler) -> None:
        self.base = base

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        internals.set_trial_user_attr(study, trial, "worker", worker_id())
        # "worker" becomes the trial's own process once it starts (the local executor's
        # child); "driver" stays the process that tells the trial's outcome
        internals.set_trial_user_attr(study, trial, "driver", worker_id())
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def __getattr__(self, name: str) -> Any:  # anything else a sampler exposes
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def _base_sampler(name: str, seed: int, n_jobs: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              constant_liar=n_jobs > 1, n_startup_trials=10)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            return optuna.samplers.BruteForceSampler(seed=seed, avoid_premature_stop=True)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=10,
                                                warn_independent_sampling=False)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"unknown sampler {name!r}")


class _LearnerView:
    """A study seen through one learner's trials, so pruners compare like with like."""

    def __init__(self, study: optuna.Study, learner: str) -> None:
        self._study = study
        self._learner = learner

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if t.params.get("learner") == self._learner]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class LearnerPruner(BasePruner):
    """Applies a base pruner among the trials of the same learner family.

    Learner families report different steps (boosting rounds, epochs, quarters of a
    forest) and reach different scores; comparing a net's epoch 3 with a forest's third
    quarter would prune for the wrong reason. (Hyperband's brackets are studies of their
    own, so it sees all learners.)
    """

    def __init__(self, base: BasePruner) -> None:
        self.base = base

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        learner = trial.params.get("learner")
        if learner is None or isinstance(self.base, HyperbandPruner):
            return self.base.prune(study, trial)
        return self.base.prune(_LearnerView(study, learner), trial)  # type: ignore[arg-type]


def make_pruner(name: str) -> BasePruner:
    if name == "median":
        return LearnerPruner(optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0))
    if name == "halving":
        return LearnerPruner(optuna.pruners.SuccessiveHalvingPruner())
    if name == "hyperband":
        return LearnerPruner(optuna.pruners.HyperbandPruner())
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}")


def grid_values(dist: BaseDistribution, k: int = GRID_POINTS) -> list[Any]:
    """A few representative values of a distribution, for the grid sampler."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        pts = np.geomspace(dist.low, dist.high, k) if dist.log else np.linspace(dist.low, dist.high, k)
        return sorted({int(round(p)) for p in pts})
    if isinstance(dist, FloatDistribution):
        pts = np.geomspace(dist.low, dist.high, k) if dist.log else np.linspace(dist.low, dist.high, k)
        return [float(f"{p:.4g}") for p in pts]
    raise TypeError(f"unsupported distribution {dist!r}")


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution, grid: bool = False,
            default: Any = None) -> Any:
    """Sample ``dist`` through the public ``suggest_*`` API.

    With ``grid``, numeric distributions become a few representative values plus the
    learner's default (so the queued default configuration is a grid point).
    """
    if grid and not isinstance(dist, CategoricalDistribution):
        values = grid_values(dist)
        if default is not None and default not in values:
            values = sorted([*values, default])
        dist = CategoricalDistribution(values)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")


def resumed_seed(seed: int, n_trials: int) -> int:
    """The sampler seed of a process continuing a study that already holds ``n_trials`` trials.

    Deterministic, but distinct from the first run's ``seed``: a resumed (or joining)
    process seeded like the first would draw the same random configurations again.
    """
    if n_trials == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**32, n_trials]).generate_state(1)[0])


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_dead_trials(study: optuna.Study, owned: bool = False) -> tuple[int, int]:
    """Fail RUNNING trials whose worker process on this host is gone; queue each once more.

    Optuna's heartbeat does this after a grace period for any host (see
    :func:`rerun_stale_trial`); on the same host we can tell at once that the process
    died, so a resumed run does not wait. A trial without its ``worker`` tag was created
    by a process killed before it could tag it (Optuna creates the trial, then calls the
    sampler's ``before_trial``): it never beats, so it is failed here too, at once where
    the study is ``owned`` (no other process uses it), else once it is older than
    :data:`UNTAGGED_GRACE_S` (a live process tags its trial within milliseconds).
    Returns (trials failed, configurations queued).
    """
    n = queued = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not owned and not _orphaned(t):
            continue
        try:
            internals.set_trial_user_attr(study, t, "fail_reason",
                                          "the worker process died (crash, kill or power loss)")
            internals.fail_trial(study, t)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process resuming the same study got there first
        queued += retry_once(study, t)
        n += 1
    return n, queued


def _driver(t: FrozenTrial) -> str:
    """The host:pid of the process that tells ``t``'s outcome (studies from before the
    ``driver`` tag have only ``worker``)."""
    return str(t.user_attrs.get("driver") or t.user_attrs.get("worker") or "")


def _orphaned(t: FrozenTrial) -> bool:
    """Whether no live process will tell this RUNNING trial's outcome, as far as this host can
    tell: its driver (on this host) is gone, or it never got a tag and is past the grace.

    The trial's own process (``worker``) may end before its driver records the result: while
    the driver lives, the trial is its to finish, not another resuming process's to fail."""
    worker = _driver(t)
    if ":" not in worker:
        start = t.datetime_start
        return start is None or (datetime.datetime.now() - start).total_seconds() > UNTAGGED_GRACE_S
    whost, pid = worker.rsplit(":", 1)
    return whost == socket.gethostname() and not _alive(int(pid))


def fail_own_running_trials(study: optuna.Study, reason: str) -> int:
    """Mark this process's RUNNING trials failed (interrupted), e.g. on Ctrl-C between
    Optuna creating a trial and the objective starting, where Optuna leaves it RUNNING."""
    me = worker_id()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _driver(t) != me:
            continue
        try:
            internals.set_trial_user_attr(study, t, "fail_reason", reason)
            internals.set_trial_user_attr(study, t, "interrupted", True)
            internals.fail_trial(study, t)
            n += 1
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return n


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue once more the configuration of every trial failed by an interruption."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(k) for t in trials for k in ("retry_of", "requeue_of")}
    retried |= {t.system_attrs.get("failed_trial") for t in trials}  # Optuna's heartbeat retries
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("interrupted") and t.number not in retried:
            n += retry_once(study, t)
    return n


def rerun_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat callback: a trial whose worker stopped beating (any host) was
    failed; queue its configuration once more, by the same rule as a dead local worker."""
    retry_once(study, trial)


def configured(t: FrozenTrial) -> bool:
    """Whether every parameter of the trial was sampled (the objective records the trial's
    ``learner`` right after sampling); a process can die between two ``suggest`` calls."""
    return "learner" in t.user_attrs


def retry_once(study: optuna.Study, t: FrozenTrial) -> bool:
    """Queue a failed trial's configuration once more; True if something was queued.

    A fully sampled configuration is retried as it was (``retry_of``). A trial that died
    before its sampling finished ran nothing: a queued one (a default or portfolio
    configuration) goes back into the queue whole (``requeue_of``); a sampled one is
    dropped, the sampler draws anew. A retry or requeue is not repeated.
    """
    if "retry_of" in t.user_attrs or "requeue_of" in t.user_attrs:
        return False
    if configured(t) and t.params:
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        return True
    fixed = t.system_attrs.get("fixed_params")
    if fixed:
        attrs = {"requeue_of": t.number}
        if "queued" in t.user_attrs:
            attrs["queued"] = t.user_attrs["queued"]
        study.enqueue_trial(dict(fixed), user_attrs=attrs, skip_if_exists=False)
        return True
    return False


def _alive(pid: int) -> bool:
    """Whether a process of this host runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # access denied: it exists
        return True


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """The study's complete trials with a finite value."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and np.isfinite(t.value)]


def best_trials(study: optuna.Study | Sequence[FrozenTrial], metric: Any, n: int = 1
                ) -> list[FrozenTrial]:
    """The ``n`` best complete trials, best first, by ``metric``'s direction (a
    :class:`~automl.metrics.Metric`, or ``"maximize"``/``"minimize"``), of a study or of
    trials already read from one; the one place a search picks its best trials.

    Example:
        >>> from optuna.trial import create_trial
        >>> failed = create_trial(state=TrialState.FAIL)
        >>> trials = [create_trial(value=v) for v in (0.3, 0.9, 0.5)] + [failed]
        >>> [t.value for t in best_trials(trials, "maximize", 2)]
        [0.9, 0.5]
    """
    if isinstance(study, optuna.Study):
        trials = completed(study)
    else:
        trials = [t for t in study if t.state == TrialState.COMPLETE and t.value is not None
                  and np.isfinite(t.value)]
    maximize = metric == "maximize" if isinstance(metric, str) else metric.greater_is_better
    trials.sort(key=lambda t: t.value, reverse=maximize)
    return trials[:n]


def param_name(learner: str, name: str) -> str:
    """The study's name of ``learner``'s parameter ``name``: every learner's parameters
    share one study, so each carries its learner's name as a prefix."""
    return f"{learner}__{name}"


def own_params(flat: Mapping[str, Any], learner: str) -> dict[str, Any]:
    """``learner``'s own entries of a trial's flat ``params`` (or ``distributions``), without
    the prefix :func:`param_name` added.

    Example:
        >>> own_params({"learner": "knn", "knn__k": 5, "ridge__alpha": 1.0}, "knn")
        {'k': 5}
    """
    prefix = param_name(learner, "")
    return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def learner_params(trial: Any) -> tuple[str, dict[str, Any]]:
    """Split a trial's flat parameters into its learner and that learner's own parameters."""
    learner = trial.params["learner"]
    return learner, own_params(trial.params, learner)
