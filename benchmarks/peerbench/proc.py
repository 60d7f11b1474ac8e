"""Run one command as a process group with a hard time limit, measuring wall time and the
process tree's peak memory: the sum of RSS (each process's resident pages, so pages that
forked processes share count once per process) and the sum of PSS (shared pages divided
among the processes sharing them: the memory the tree takes from the machine)."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

POLL_SECONDS = 0.25
THREAD_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "BLIS_NUM_THREADS", "RAYON_NUM_THREADS",
)


@dataclass
class ProcResult:
    returncode: int | None  # None when killed for the time limit
    wall_s: float
    peak_rss_mb: float
    timed_out: bool
    stderr_tail: str
    cpu_s: float  # CPU seconds of the process tree (reaped, or seen while it ran: see _Tree)
    other_cpu_frac: float  # share of the machine's CPU used by anything else meanwhile
    peak_pss_mb: float = 0.0  # 0 where the system does not report PSS


def limited_env(cores: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a benchmarked process: thread pools capped at `cores`."""
    env = dict(os.environ)
    for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(var, None)
    for var in THREAD_VARS:
        env[var] = str(cores)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def _rusage_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _affinity(cores: int) -> list[int]:
    available = sorted(os.sched_getaffinity(0))
    return available[:cores]


class _Tree:
    """What the process and its descendants use, sampled while they run.

    CPU: the kernel's RUSAGE_CHILDREN counts only descendants that were reaped; a process
    tree that leaves its workers to be reaped by init (Ray's raylet and workers, which
    AutoGluon's best_quality starts) would otherwise count as "other" load. So the CPU
    time of every descendant seen is kept, and the run's CPU is the larger of the two.
    """

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.peak_rss = self.peak_pss = 0
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds seen

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    info = proc.memory_full_info()
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", 0)
            self.cpu[key] = times.user + times.system
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu.values())


def _watch(popen: subprocess.Popen, start: float, timeout_s: float, tree: _Tree) -> bool:
    """Sample ``tree`` until the process exits or the limit passes; True when it timed out."""
    while True:
        tree.sample()
        try:
            popen.wait(timeout=POLL_SECONDS)
            return False
        except subprocess.TimeoutExpired:
            if time.monotonic() - start > timeout_s:
                return True


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(2.0 if sig == signal.SIGTERM else 0.0)


def _tail(path: Path, n_chars: int = 2000) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - n_chars))
        return fh.read().decode("utf-8", errors="replace")


def run_limited(
    cmd: list[str], *, cwd: Path, log_prefix: Path, timeout_s: float, cores: int,
    env_extra: dict[str, str] | None = None,
) -> ProcResult:
    """Run `cmd` in its own session; kill the whole group after `timeout_s`.

    stdout/stderr go to `<log_prefix>.stdout.log` / `.stderr.log`. Peak memory is the
    largest sum of RSS (and of PSS) over the process and its descendants seen while polling.
    """
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    out_path = log_prefix.with_name(log_prefix.name + ".stdout.log")
    err_path = log_prefix.with_name(log_prefix.name + ".stderr.log")
    cpus = _affinity(cores)
    busy0 = _busy_seconds()
    children0 = _rusage_seconds(resource.RUSAGE_CHILDREN)
    self0 = _rusage_seconds(resource.RUSAGE_SELF)
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.monotonic()
        popen = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            env=limited_env(cores, env_extra), start_new_session=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        tree = _Tree(psutil.Process(popen.pid))
        try:
            timed_out = _watch(popen, start, timeout_s, tree)
        except BaseException:  # Ctrl-C: the child is in its own session, so stop it here
            _kill_group(popen.pid)
            raise
        wall = time.monotonic() - start
        if timed_out:
            _kill_group(popen.pid)
        popen.wait()
        _kill_group(popen.pid)  # stragglers the finished process left in its group
    tree_cpu = max(_rusage_seconds(resource.RUSAGE_CHILDREN) - children0, tree.cpu_s)
    runner_cpu = _rusage_seconds(resource.RUSAGE_SELF) - self0
    other = max(0.0, _busy_seconds() - busy0 - tree_cpu - runner_cpu)
    capacity = max(wall, 1e-9) * (os.cpu_count() or 1)
    return ProcResult(
        returncode=None if timed_out else popen.returncode, wall_s=wall,
        peak_rss_mb=tree.peak_rss / 2**20, timed_out=timed_out, stderr_tail=_tail(err_path),
        cpu_s=tree_cpu,
        other_cpu_frac=min(1.0, other / capacity), peak_pss_mb=tree.peak_pss / 2**20,
    )
