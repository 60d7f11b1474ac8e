"""The parent's objects frozen against the garbage collector while forked trial children
live (:mod:`automl.isolation` forks them), so that no full collection, the child's or the
parent's, unshares the heap they share copy-on-write (issue 12: memory)."""

from __future__ import annotations

import gc

_FROZEN_FOR: set[int] = set()  # children forked under our freeze (see freeze_for_fork)
_OWN_FREEZE = False  # the freeze is ours, not that of a process that froze objects itself


def freeze_for_fork() -> bool:
    """Put every object of this process in the collector's permanent generation before a
    fork, there while any child forked so lives: a full collection writes to the header of
    each object it walks, and copy-on-write then unshares every page of the heap (40-50 MB
    with the driver's imports; digits at 60 s: the driver's one full collection during a
    20 s trial). Frozen garbage is collected after the last child ends. A process that
    froze objects itself (a pre-forking server running the Python API): False, as is."""
    global _OWN_FREEZE
    if gc.get_freeze_count() and not _OWN_FREEZE:
        return False
    gc.freeze()
    _OWN_FREEZE = True
    return True


def thaw_after(pid: int | None) -> None:
    """Child ``pid`` has ended: unfreeze once no child forked under the freeze lives."""
    global _OWN_FREEZE
    _FROZEN_FOR.discard(pid or 0)
    if not _FROZEN_FOR and _OWN_FREEZE:
        gc.unfreeze()
        _OWN_FREEZE = False


def forked(pid: int) -> None:
    """Child ``pid`` was forked under the freeze that :func:`freeze_for_fork` made."""
    _FROZEN_FOR.add(pid)


def forget_parents_children() -> None:
    """In a forked child: the parent's bookkeeping is not its own (its inherited objects
    stay frozen: they are the parent's)."""
    global _OWN_FREEZE
    _FROZEN_FOR.clear()
    _OWN_FREEZE = False
