"""Ctrl-C (and the CLI's SIGTERM) stop a search at a safe point, not inside the study's storage.

Python raises ``KeyboardInterrupt`` at whatever line the main thread runs when the signal
comes. Inside Optuna's storage that can leave a SQLite connection with its transaction open
and out of the pool; the search's clean-up then waits for that lock (120 s: the storage's
busy timeout) while the heartbeat thread waits for the clean-up's, and the interrupted run
hangs instead of exiting with status 130 (1 run in 20 under load:
benchmarks/interrupt_stress.py).

Inside :func:`deferred` the signal is only recorded; the search loop and the child watches
call :func:`checkpoint` between storage calls (every 0.1 s or so), which raises it there. A
second Ctrl-C before that raises at once, as a way out of anything that does not reach a
checkpoint.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_DEFERRED = (signal.SIGINT, signal.SIGTERM)
_pending: int | None = None  # the signal recorded and not yet raised


def _record(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _pending is not None:  # asked twice: stop now, wherever that is
        _pending = None
        raise KeyboardInterrupt
    _pending = signum


def checkpoint() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C (or SIGTERM) came since the last checkpoint."""
    global _pending
    if _pending is not None:
        _pending = None
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM raise only at a :func:`checkpoint` (or at the
    block's end). Only signals whose handler raises ``KeyboardInterrupt`` (Python's default
    for Ctrl-C; the CLI's for SIGTERM) are deferred: a handler of the caller's own is left
    alone, as is everything off the main thread, where Python delivers no signals."""
    global _pending
    swapped: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _DEFERRED:
            if signal.getsignal(sig) is signal.default_int_handler:
                swapped[sig] = signal.signal(sig, _record)
    if not swapped:  # off the main thread, a caller's own handler, or inside another deferred()
        yield
        return
    try:
        yield
    finally:
        for sig, old in swapped.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        pending, _pending = _pending, None
    if pending is not None:  # it came after the last checkpoint: raise it now
        raise KeyboardInterrupt
