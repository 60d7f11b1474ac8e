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
    cpu_s: float  # CPU seconds of the reaped process tree
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


def _tree_memory(root: psutil.Process) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) over ``root`` and its descendants, in bytes."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    rss = pss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
    return rss, pss


def _watch(popen: subprocess.Popen, start: float, timeout_s: float) -> tuple[int, int, bool]:
    """Poll until the process exits or the limit passes; return (peak RSS, peak PSS, timed out)."""
    root = psutil.Process(popen.pid)
    peak_rss = peak_pss = 0
    while True:
        rss, pss = _tree_memory(root)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        try:
            popen.wait(timeout=POLL_SECONDS)
            return peak_rss, peak_pss, False
        except subprocess.TimeoutExpired:
            if time.monotonic() - start > timeout_s:
                return peak_rss, peak_pss, True


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
        try:
            peak, peak_pss, timed_out = _watch(popen, start, timeout_s)
        except BaseException:  # Ctrl-C: the child is in its own session, so stop it here
            _kill_group(popen.pid)
            raise
        wall = time.monotonic() - start
        if timed_out:
            _kill_group(popen.pid)
        popen.wait()
        _kill_group(popen.pid)  # stragglers the finished process left in its group
    tree_cpu = _rusage_seconds(resource.RUSAGE_CHILDREN) - children0
    runner_cpu = _rusage_seconds(resource.RUSAGE_SELF) - self0
    other = max(0.0, _busy_seconds() - busy0 - tree_cpu - runner_cpu)
    capacity = max(wall, 1e-9) * (os.cpu_count() or 1)
    return ProcResult(
        returncode=None if timed_out else popen.returncode, wall_s=wall,
        peak_rss_mb=peak / 2**20, timed_out=timed_out, stderr_tail=_tail(err_path),
        cpu_s=tree_cpu,
        other_cpu_frac=min(1.0, other / capacity), peak_pss_mb=peak_pss / 2**20,
    )
