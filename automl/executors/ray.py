"""The Ray executor: each evaluation is a Ray task on a cluster (``--executor ray``).

The driver (this process) owns the study; Ray only runs evaluations:

- the problem goes to the object store once per run (``ray.put``), and the shared
  preprocessing is fitted once by a task whose result stays there; each worker process
  copies both once (arrays from the object store are read-only);
- a trial task reserves ``--cpus-per-trial`` CPUs and ``--gpus-per-trial`` (fractional)
  GPUs; as many run at once as the cluster offers;
- inside the task the evaluation runs in today's forked child, with its hard time limit and
  memory cap (:mod:`automl.isolation`); the driver also cancels a task that runs past its
  hard deadline;
- intermediate values go through a small async actor (:class:`_Board`) that the driver
  polls: it records them in the study and sends the pruner's answer back while the trial runs;
- each trial records its Ray node (``ray_node``) when it starts. A trial whose worker or
  node dies is failed with the node named and runs once more (``retry_of``); Ray's own task
  retries stay off (``max_retries=0``: on out-of-memory kills they never end).

Without ``--ray-address`` a local Ray instance is started for the run, listening on
127.0.0.1 only, with token authentication, and stopped at the end.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from automl.config import SearchConfig
from automl.exceptions import ConfigError, MissingDependencyError
from automl.executors import Outcome, TrialHooks, gpu_env
from automl.isolation import ask_parent, default_memory_cap_mb, run_isolated
from automl.objective import TrialReporter, TrialSpec, evaluate
from automl.problem import Problem, preprocess_folds

log = logging.getLogger("automl")
POLL_S = 0.1
RESOURCES_EVERY_S = 2.0
DRIVER_GRACE_S = 5.0  # the task kills its own child first; the driver cancels after this
ASK_TIMEOUT_S = 30.0  # a trial waits this long for the pruner's answer, then goes on
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": every listener on 127.0.0.1
MIN_STORE_MB, MAX_STORE_MB = 100, 4096


def _import_ray(local: bool) -> Any:
    """Ray, or a one-line error naming the extra. A local instance listens on loopback only:
    Ray reads that setting when it is imported, so it is set first."""
    if local:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--executor ray needs Ray, which is not installed; install it "
                                     "with `pip install 'automl[ray]'`.") from None
    if local and os.environ.get(LOOPBACK_ENV) == "0":
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # when Ray was imported before this was set
    return ray


class _Board:
    """A small async actor between running trials and the driver: trials post their start
    and their intermediate values and wait for the pruner's answer; the driver takes the
    news and answers. No CPU is reserved for it."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.waiting: dict[tuple[int, int], asyncio.Future] = {}

    async def started(self, number: int, where: dict[str, Any]) -> None:
        self.events.append(("started", number, where))

    async def ask(self, number: int, step: int, value: float) -> bool:
        future = asyncio.get_running_loop().create_future()
        self.waiting[(number, step)] = future
        self.events.append(("report", number, step, value))
        try:
            return bool(await asyncio.wait_for(future, ASK_TIMEOUT_S))
        except asyncio.TimeoutError:
            return False
        finally:
            self.waiting.pop((number, step), None)

    async def take(self) -> list[tuple]:
        events, self.events = self.events, []
        return events

    async def answer(self, replies: list[tuple[int, int, bool]]) -> None:
        for number, step, prune in replies:
            future = self.waiting.get((number, step))
            if future is not None and not future.done():
                future.set_result(prune)


# -- what runs on a Ray worker ------------------------------------------------------------------
_WORKER_CACHE: dict[str, Problem] = {}


def _worker_problem(refs: list[Any], custom: Sequence[type]) -> Problem:
    """The run's problem in this worker process, copied once from the object store."""
    import ray

    from automl.registry import register

    for cls in custom:  # trainers registered in the driver (notebooks, AUTOML_PLUGINS)
        register(cls)
    key = "/".join(r.hex() if r is not None else "-" for r in refs)
    if key not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        problem = copy.deepcopy(ray.get(refs[0]))  # writable arrays
        if refs[1] is not None:
            problem.pre_cache = copy.deepcopy(ray.get(refs[1]))
        _WORKER_CACHE[key] = problem
    return _WORKER_CACHE[key]


def _gpus_given() -> dict[str, str] | None:
    """The environment that tells a trial child how many GPUs Ray gave this task."""
    import ray

    return gpu_env([str(g) for g in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])])


def _ask_parent_report(step: int, value: float) -> bool:
    return bool(ask_parent(("report", step, value)))  # the forked child never calls Ray


def _trial_task(refs: list[Any], spec: TrialSpec, board: Any, custom: Sequence[type],
                mem_cap_mb: float | None, n_parallel: int, submitted_at: float) -> Outcome:
    import ray

    # the trial's time counts from its submission: a task that waited for a worker (or for
    # one to import automl) gets that much less, so the search still ends on time
    # (this compares the driver's and this node's wall clocks: keep them synced, e.g. NTP)
    late = min(max(0.0, time.time() - submitted_at), spec.limit_s)
    spec = dataclasses.replace(spec, soft_s=max(0.1, spec.soft_s - late),
                               limit_s=max(0.2, spec.limit_s - late))
    problem = _worker_problem(refs, custom)
    where: dict[str, Any] = {"ray_node": ray.get_runtime_context().get_node_id()}
    if ray.get_runtime_context().get_accelerator_ids().get("GPU"):
        where["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    board.started.remote(spec.number, where)
    reporter = TrialReporter(_ask_parent_report)
    child = run_isolated(lambda: evaluate(problem, spec, reporter),
                         deadline=time.monotonic() + spec.limit_s,
                         mem_cap_mb=mem_cap_mb or default_memory_cap_mb(n_parallel),
                         on_message=lambda m: ray.get(board.ask.remote(spec.number, m[1], m[2])),
                         env=_gpus_given())
    return Outcome(child.status, child.value if child.status == "ok" else None, child.reason)


def _job_task(refs: list[Any], job: Callable[[Problem, TrialSpec], Any], spec: TrialSpec,
              custom: Sequence[type], mem_cap_mb: float | None) -> Outcome:
    problem = _worker_problem(refs, custom)
    child = run_isolated(lambda: job(problem, spec), deadline=time.monotonic() + spec.limit_s,
                         mem_cap_mb=mem_cap_mb or default_memory_cap_mb(1), env=_gpus_given())
    return Outcome(child.status, child.value if child.status == "ok" else None, child.reason)


def _preprocess_task(refs: list[Any], styles: Sequence[str], seed: int, limit_s: float,
                     custom: Sequence[type], mem_cap_mb: float | None) -> tuple[str, Any]:
    problem = _worker_problem(refs, custom)
    deadline = time.monotonic() + limit_s  # (this node's clock)
    child = run_isolated(lambda: preprocess_folds(problem, styles, seed, deadline),
                         deadline=deadline,
                         mem_cap_mb=mem_cap_mb or default_memory_cap_mb(1))
    return child.reason or child.status, (child.value if child.status == "ok" else None)


# -- the driver's side ------------------------------------------------------------------------------
@dataclass
class _Running:
    ref: Any
    spec: TrialSpec
    hooks: TrialHooks
    deadline: float  # the driver's clock: cancel after this
    node: str | None = None


class RayExecutor:
    """Ray tasks on a cluster (``config.ray_address``) or on a local instance started here."""

    name = "ray"
    local_files = False  # a trial may run on another node

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.address = config.ray_address
        self._env: dict[str, str | None] = {}
        if not self.address:  # before Ray is imported: it reads these once
            self._env = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
            os.environ["RAY_AUTH_MODE"] = "token"
            if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # this run's own token
        self.ray = _import_ray(local=not self.address)
        self.cpus = float(config.cpus_per_trial or 1.0)
        self.gpus = float(config.gpus_per_trial or 0.0)
        self.accelerator = "gpu" if self.gpus > 0 else "cpu"
        self.connected_here = False
        self.running: dict[int, _Running] = {}
        self.capacity = 0
        self._resources_at = -math.inf
        self.refs: list[Any] = [None, None]

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, problem: Problem) -> None:
        ray = self.ray
        if not ray.is_initialized():  # else: the caller's own Ray session, left connected
            self._connect(problem)
            self.connected_here = True
        from automl.registry import _CUSTOM

        self.custom = [_CUSTOM[n] for n in problem.learners if n in _CUSTOM]
        # on the driver's node: it lives and dies with the driver, not with a worker node
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.board = ray.remote(num_cpus=0)(_Board).options(scheduling_strategy=here).remote()
        self.trial_fn = ray.remote(max_retries=0)(_trial_task)
        self.job_fn = ray.remote(max_retries=0)(_job_task)
        self.refs = [ray.put(dataclasses.replace(problem, pre_cache={})), None]
        self._refresh_capacity(force=True)
        if self.capacity < 1:
            raise ConfigError(self._too_small())
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        per_node = max((n["Resources"].get("CPU", 0) for n in nodes), default=1)
        self.n_parallel = max(1, int(per_node // self.cpus))
        log.info("ray: %d node(s); %g CPU%s per trial", len(nodes), self.cpus,
                 f", {self.gpus:g} GPU" if self.gpus else "")

    def _connect(self, problem: Problem) -> None:
        ray = self.ray
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING,
                         include_dashboard=False)
                return
            # a local instance for this run: token authentication (set in __init__), loopback,
            # no dashboard
            data_mb = (problem.X.memory_usage(deep=True).sum() + problem.y.nbytes) / 2**20
            store_mb = int(min(MAX_STORE_MB, max(MIN_STORE_MB, 8 * data_mb)))
            ray.init(num_cpus=os.cpu_count(), object_store_memory=store_mb * 2**20,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection errors come in many kinds
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise ConfigError(f"cannot start or reach {where}: {first}; check --ray-address and "
                              "RAY_AUTH_TOKEN (see the README's Ray section).") from None

    def _too_small(self) -> str:
        res = self.ray.cluster_resources()
        return (f"--cpus-per-trial {self.cpus:g} / --gpus-per-trial {self.gpus:g} do not fit the Ray "
                f"cluster ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs); ask for less per "
                "trial or add nodes.")

    def _refresh_capacity(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._resources_at < RESOURCES_EVERY_S:
            return
        self._resources_at = now
        res = self.ray.cluster_resources()
        cap = int(res.get("CPU", 0) // self.cpus)
        if self.gpus > 0:
            cap = min(cap, int(res.get("GPU", 0) / self.gpus + 1e-9))
        if cap != self.capacity:  # nodes joined or left
            log.info("ray: up to %d trial(s) at a time (%g CPUs, %g GPUs in the cluster)",
                     cap, res.get("CPU", 0), res.get("GPU", 0))
        self.capacity = cap

    def close(self) -> None:
        try:
            if self.ray.is_initialized():
                try:
                    self.cancel_all()
                finally:
                    if self.connected_here:  # stops the instance started here, else disconnects
                        self.ray.shutdown()
        finally:
            for key, value in self._env.items():  # this run's token settings
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._env = {}

    # -- the shared preprocessing stays in the object store ----------------------------------------
    def share_preprocessing(self, styles: Sequence[str], seed: int, limit_s: float,
                            meanwhile: Callable[[], None] | None = None) -> None:
        ray = self.ray
        fn = ray.remote(max_retries=0, num_returns=2, num_cpus=self.cpus)(_preprocess_task)
        status_ref, cache_ref = fn.remote(self.refs, list(styles), seed, limit_s, self.custom,
                                          self.config.memory_limit_mb)
        until = time.monotonic() + limit_s + DRIVER_GRACE_S
        try:
            while meanwhile is not None and time.monotonic() < until and \
                    not ray.wait([status_ref], timeout=POLL_S)[0]:
                meanwhile()
            status = ray.get(status_ref, timeout=max(0.0, until - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - trials then preprocess on their own
            ray.cancel(status_ref, force=True)
            log.debug("shared preprocessing failed on Ray: %s", exc)
            return
        if status == "ok":
            self.refs = [self.refs[0], cache_ref]
        else:
            log.debug("shared preprocessing failed on Ray (%s); trials preprocess on their own", status)

    # -- trials ----------------------------------------------------------------------------------
    def free_slots(self) -> int:
        self._refresh_capacity()
        return self.capacity - len(self.running)

    def submit(self, spec: TrialSpec, hooks: TrialHooks) -> None:
        ref = self.trial_fn.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(
            self.refs, spec, self.board, self.custom, self.config.memory_limit_mb, self.n_parallel,
            time.time())
        self.running[spec.number] = _Running(ref, spec, hooks,
                                             time.monotonic() + spec.limit_s + DRIVER_GRACE_S)

    def poll(self, timeout: float) -> list[tuple[int, Outcome]]:
        ray = self.ray
        if not self.running:
            time.sleep(min(timeout, POLL_S))
            return []
        refs = [r.ref for r in self.running.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=min(timeout, POLL_S))
        self._relay_board()
        ready_set = set(ready)
        done: list[tuple[int, Outcome]] = []
        for number, run in list(self.running.items()):
            if run.ref in ready_set:
                done.append((number, self._outcome(run)))
            elif time.monotonic() > run.deadline:
                ray.cancel(run.ref, force=True)
                done.append((number, Outcome("timeout", reason="stopped: ran past its time limit "
                                             "(the driver cancelled its Ray task)")))
            else:
                continue
            del self.running[number]
        return done

    def _relay_board(self) -> None:
        """Record the trials' starts and intermediate values; send the pruner's answers."""
        try:
            events = self.ray.get(self.board.take.remote())
        except self.ray.exceptions.RayActorError as exc:  # trials then go on without pruning
            log.warning("ray: the pruning actor is unavailable: %s", _first_line(exc))
            return
        replies = []
        for event in events:
            run = self.running.get(event[1])
            if event[0] == "started":
                if run is not None:
                    run.node = event[2].get("ray_node")
                    run.hooks.started(event[2])
            elif event[0] == "report":
                _, number, step, value = event
                replies.append((number, step, bool(run and run.hooks.report(step, value))))
        if replies:
            self.board.answer.remote(replies)

    def _outcome(self, run: _Running) -> Outcome:
        from ray import exceptions as rex

        try:
            return self.ray.get(run.ref)
        except rex.OutOfMemoryError as exc:
            return Outcome("memory", reason=f"killed by Ray for memory on node {run.node}: "
                           f"{_first_line(exc)}")
        except (rex.NodeDiedError, rex.WorkerCrashedError, rex.ObjectLostError,
                rex.LocalRayletDiedError) as exc:
            return Outcome("lost", reason=f"lost: its Ray node {run.node or '(unknown)'} or worker "
                           f"died ({type(exc).__name__}: {_first_line(exc)})")
        except rex.TaskCancelledError:
            return Outcome("timeout", reason="stopped: its Ray task was cancelled")
        except Exception as exc:  # noqa: BLE001 - one line in the trial, the search goes on
            return Outcome("failed", reason=f"{type(exc).__name__}: {_first_line(exc)}"[:1000])

    def call(self, job: Callable[[Problem, TrialSpec], Any], spec: TrialSpec) -> Outcome:
        ray = self.ray
        for attempt in range(2):  # a lost job (node death) runs once more
            ref = self.job_fn.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(
                self.refs, job, spec, self.custom, self.config.memory_limit_mb)
            ready, _ = ray.wait([ref], timeout=spec.limit_s + DRIVER_GRACE_S)
            if not ready:
                ray.cancel(ref, force=True)
                return Outcome("timeout", reason="stopped: ran past its time limit")
            outcome = self._outcome(_Running(ref, spec, None, 0.0))  # type: ignore[arg-type]
            if outcome.status != "lost" or attempt:
                return outcome
        return outcome

    def cancel_all(self) -> list[int]:
        stopped = list(self.running)
        for run in self.running.values():
            try:
                self.ray.cancel(run.ref, force=True)
            except Exception as exc:  # noqa: BLE001 - best effort while stopping
                log.debug("could not cancel trial %d: %s", run.spec.number, exc)
        self.running.clear()
        return stopped


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
