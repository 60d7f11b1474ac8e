"""Running one job in a forked child process with a hard time limit and a memory cap.

The parent keeps the Optuna study; the child fits and sends back a small result. A
child that hangs, runs past its deadline or grows past its memory cap is killed, and
the parent records why and goes on. Fork is used (not spawn) so the child shares the
prepared data copy-on-write and starts in milliseconds.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import pickle
import resource
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil

from automl import child_messages, gc_freeze, interrupts, scratch

log = logging.getLogger("automl")

POLL_S = 0.1

# GNU OpenMP (libgomp; torch and LightGBM load the same one) keeps its worker pool's
# bookkeeping across a fork but not the workers: a forked child that runs a parallel region
# with several threads then waits for them forever. So once a process has run work with
# several threads itself (an in-process fit, the API's default), the processes it forks use
# one thread each. The pid of the process that did is inherited by its forks.
_THREADED_PID: int | None = None
_WARNED = False


def openmp_threads(n: int) -> int:
    """How many threads a fit that asks for ``n`` may use in this process (the one place
    that decides it: :meth:`automl.problem.Problem.fit_data` and the torch thread scopes).

    Example:
        >>> openmp_threads(1)
        1
    """
    global _THREADED_PID
    n = max(1, int(n))
    if _THREADED_PID is not None and _THREADED_PID != os.getpid():
        return 1  # a process this one was forked from ran threaded work
    if n > 1:
        _THREADED_PID = os.getpid()
    return n


@contextmanager
def torch_threads(n: int, extra: str = "deep") -> Iterator[None]:
    """Run torch with ``n`` intra-op threads (as :func:`openmp_threads` allows), then restore
    the previous number: the one scope every torch fit, prediction and text embedding uses.
    ``extra``: the optional dependency named when torch is missing.

    A process whose OpenMP pool has run with several threads cannot fork a child that uses
    torch with several threads (the child hangs), and trials run in forks: so the search
    process runs torch with one thread (predicting, embedding), and fits use the trial's
    ``n_threads`` in the forked trial and refit children.
    """
    from automl.exceptions import require

    torch: Any = require("torch", extra)
    previous = torch.get_num_threads()
    torch.set_num_threads(openmp_threads(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class ChildOutcome:
    status: str  # "ok", "pruned", "failed", "timeout", "memory", "crashed"
    value: Any = None
    reason: str = ""


class _Pruned(Exception):
    pass


def default_memory_cap_mb(n_parallel: int = 1, fraction: float = 0.7) -> float:
    """A fraction of the memory available now, shared between parallel trials."""
    return fraction * psutil.virtual_memory().available / 2**20 / max(1, n_parallel)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask Linux to SIGKILL this (forked) process when its parent dies.

    A parent killed with SIGKILL cannot stop its trial children or workers itself; without
    this they would run on, orphaned, until their own deadline. A no-op elsewhere.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # it died before prctl
        os._exit(1)


@functools.cache
def _libc() -> Any:
    import ctypes

    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def trim_heap() -> None:
    """Give the memory freed by big objects back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere). glibc raises its mmap threshold each time a large block is freed, so
    the next ones of that size come from the heap, and freeing them leaves the heap's RSS
    as it was: a forest unpickled (65 MB live) kept the process 128 MB larger until trimmed."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


_HELD = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while forking; any that came meanwhile arrive at the end.

    A forked child starts with its parent's handlers and runs the at-fork hooks (logging's
    lock release) before it can set its own: a Ctrl-C to the whole process group landing
    then raises inside a hook, and Python prints an "Exception ignored ... Traceback".
    The child inherits the held mask and calls :func:`release_signals` once its own
    handlers are set (a signal it ignores is then discarded).
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def release_signals() -> None:
    """In a child forked under :func:`signals_held`: take Ctrl-C and SIGTERM again."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


_CHANNEL: Any = None  # in a child: its end of the pipe to the parent


def ask_parent(message: Any) -> Any:
    """From inside a child: send ``message`` to the parent's ``on_message`` and return its answer.

    Trials report intermediate values this way instead of opening the study's storage
    themselves: a child forked while a parent thread (Optuna's heartbeat) held SQLite's
    allocator lock would deadlock on its first connection.
    """
    if _CHANNEL is None:
        raise RuntimeError("ask_parent() called outside an isolated child")
    _CHANNEL.send_bytes(pickle.dumps(("ask", message), protocol=pickle.HIGHEST_PROTOCOL))
    kind, answer = pickle.loads(_CHANNEL.recv_bytes())
    if kind == "error":
        raise RuntimeError(f"the parent could not answer: {answer}")
    return answer


def _child_main(conn: Any, fn: Callable[[], Any], mem_cap_mb: float | None,
                parent_pid: int | None = None, env: dict[str, str] | None = None) -> None:
    global _CHANNEL
    _CHANNEL = conn
    gc_freeze.forget_parents_children()  # what this process inherited stays frozen
    os.environ.update(env or {})
    tempfile.tempdir = None  # read TMPDIR again (the parent's choice was inherited)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    release_signals()
    die_with_parent(parent_pid)
    if mem_cap_mb:
        # A backstop beside the parent's RSS watch: address space = now + 2 x cap.
        vms = psutil.Process().memory_info().vms
        limit = int(vms + 2 * mem_cap_mb * 2**20)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):
            pass
    try:
        result: tuple[str, Any] = ("ok", fn())
    except MemoryError:
        result = ("memory", "MemoryError: the trial ran out of its memory cap")
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        import optuna

        if isinstance(exc, optuna.TrialPruned):
            result = ("pruned", str(exc))
        else:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            result = ("failed", (str(reason)[:1000], traceback.format_exc(limit=20)))
    sent = False
    try:
        messages = child_messages.result_messages(*result)
        del result  # the messages hold the large parts alone now: each goes once it is sent
        sent = True
        child_messages.send(conn, messages)
    except Exception as exc:  # noqa: BLE001
        if not sent:  # once sending began, the parent is reading: it sees the pipe close instead
            conn.send_bytes(pickle.dumps(("failed", (f"result could not be sent: {exc}", "")),
                                         protocol=4))
    finally:
        conn.close()
        os._exit(0)


def _private_bytes(proc: psutil.Process) -> int:
    """Anonymous resident memory (heap, arrays) of ``proc``, which a forked child starts out
    sharing with its parent page for page; its RSS does not compare, since fork leaves the
    parent's file-backed pages (libraries) out of the child's until it touches them."""
    try:
        with open(f"/proc/{proc.pid}/status", "rb") as fh:
            fields = dict(line.split(b":", 1) for line in fh if line.startswith(b"Rss"))
        return sum(int(fields[key].split()[0]) for key in (b"RssAnon", b"RssShmem")) * 1024
    except (OSError, KeyError, ValueError):
        return proc.memory_info().rss


class IsolatedChild:
    """One job in a forked child, watched without blocking: :meth:`poll` answers the child's
    questions, enforces the deadline and the memory cap, and returns the outcome once known.

    Several children can be watched by one parent (the local executor runs ``--n-jobs`` of
    them at once); :func:`run_isolated` watches one until it ends.
    """

    def __init__(self, fn: Callable[[], Any], *, deadline: float, mem_cap_mb: float | None,
                 on_message: Callable[[Any], Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        global _WARNED
        if _THREADED_PID == os.getpid() and not _WARNED:
            _WARNED = True
            log.warning("this process already ran multi-threaded work (an earlier in-process "
                        "fit), so the trials it forks use one thread each (forked OpenMP "
                        "thread pools hang); run the fit in a fresh process for full speed")
        ctx = mp.get_context("fork")
        self.deadline = deadline
        self.mem_cap_mb = mem_cap_mb
        self.on_message = on_message
        self.conn, send = ctx.Pipe(duplex=True)
        # the child's own temporary folder (its TMPDIR), removed when it ends, even when it
        # was killed at its deadline: what the libraries it runs leave there goes with it
        self.tmp_dir = scratch.make("trial")
        env = {**(env or {}), "TMPDIR": self.tmp_dir}
        self.proc = ctx.Process(target=_child_main, args=(send, fn, mem_cap_mb, os.getpid(), env),
                                daemon=False)
        # The child starts out sharing this process's anonymous pages (counted as its own): the
        # cap is on what the trial adds to them.
        self._base = _private_bytes(psutil.Process())
        self.peak_mb = 0.0
        try:
            frozen = gc_freeze.freeze_for_fork()
            with signals_held():
                self.proc.start()
            if frozen:
                gc_freeze.forked(self.pid)
        except BaseException:
            gc_freeze.thaw_after(self.proc.pid)
            scratch.remove(self.tmp_dir)
            raise
        finally:
            send.close()
        self._ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return int(self.proc.pid or 0)

    def poll(self, timeout: float = 0.0) -> ChildOutcome | None:
        """Wait up to ``timeout`` seconds for news; the outcome once the child is done."""
        try:
            if self.conn.poll(timeout):
                try:
                    status, payload = child_messages.receive(self.conn)
                except EOFError:
                    status, payload = "crashed", None
                if status == "ask":
                    _answer(self.conn, self.on_message, payload)
                    return None
                return self._finish(status, payload)
            if not self.proc.is_alive():
                return self._finish("crashed", None)
            if time.monotonic() > self.deadline:
                self.kill()
                return ChildOutcome("timeout", reason="stopped: ran past its time limit")
            if self.mem_cap_mb:
                try:
                    own = max(0, _private_bytes(self._ps) - self._base)
                    rss = (own + sum(p.memory_info().rss
                                     for p in self._ps.children(recursive=True))) / 2**20
                except psutil.Error:
                    rss = 0.0
                self.peak_mb = max(self.peak_mb, rss)
                if rss > self.mem_cap_mb:
                    self.kill()
                    return ChildOutcome("memory", reason=f"stopped: memory {rss:.0f} MB over the cap "
                                        f"of {self.mem_cap_mb:.0f} MB")
        except BaseException:
            self.kill()
            raise
        return None

    def _finish(self, status: str, payload: Any) -> ChildOutcome:
        proc = self.proc
        proc.join(timeout=5)
        self.kill()  # a no-op for a child that ended; closes the pipe
        if status == "crashed":
            code = proc.exitcode
            sig = -code if code is not None and code < 0 else None
            why = f"killed by signal {signal.Signals(sig).name}" if sig else f"exit status {code}"
            hint = (" (likely over its memory cap)" if self.mem_cap_mb
                    and sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGKILL) else "")
            return ChildOutcome("crashed", reason=f"the trial process died: {why}{hint}")
        if status == "ok":
            return ChildOutcome("ok", value=payload)
        if status in ("pruned", "memory"):
            return ChildOutcome(status, reason=str(payload))
        reason, tb = payload
        return ChildOutcome("failed", value=tb, reason=reason)

    def kill(self) -> None:
        gc_freeze.thaw_after(self.proc.pid)
        _kill(self.proc)
        self.conn.close()
        scratch.remove(self.tmp_dir)


def run_isolated(fn: Callable[[], Any], *, deadline: float, mem_cap_mb: float | None,
                 on_message: Callable[[Any], Any] | None = None,
                 env: dict[str, str] | None = None,
                 meanwhile: Callable[[], None] | None = None) -> ChildOutcome:
    """Run ``fn`` in a forked child; kill it at ``deadline`` (``time.monotonic``) or over the cap.

    ``on_message`` answers the child's :func:`ask_parent` calls (e.g. pruning decisions);
    ``env`` is set in the child's environment before ``fn`` runs; ``meanwhile`` is called
    after the child has started and at every poll until it ends (the caller's own work).
    """
    child = IsolatedChild(fn, deadline=deadline, mem_cap_mb=mem_cap_mb, on_message=on_message,
                          env=env)
    try:
        while True:
            interrupts.checkpoint()
            if meanwhile is not None:
                meanwhile()
            outcome = child.poll(POLL_S)
            if outcome is not None:
                return outcome
    except BaseException:  # Ctrl-C: the child goes now, not when this process exits
        child.kill()
        raise


def _answer(conn: Any, on_message: Callable[[Any], Any] | None, message: Any) -> None:
    try:
        if on_message is None:
            raise RuntimeError("no handler for messages from the child")
        reply: tuple[str, Any] = ("ok", on_message(message))
    except Exception as exc:  # noqa: BLE001 - the child gets the reason, the parent goes on
        reply = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, OSError):
        pass


def _kill(proc: Any) -> None:
    if proc.pid is None:  # never started (psutil.Process(None) would be this process)
        return
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
    except psutil.Error:
        pass
    if proc.is_alive():
        proc.kill()
    proc.join(timeout=5)
