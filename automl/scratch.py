"""Private temporary folders of a run, named after the process that owns them, so that the
next run can remove what a killed one left behind.

A run keeps pickled trial models and out-of-fold predictions in a temporary folder, and each
forked trial gets a temporary folder of its own (its ``TMPDIR``: Lightning's roots, torch's
error files of spawned workers). The owner removes them when it ends; a process killed with
SIGKILL (the out-of-memory killer, ``kill -9``, a trial at its hard time limit) cannot, and a
folder of hundreds of MB of pickles stayed in ``/tmp`` for good. Every folder here is named
``automl-<kind>-<pid>-<random>``: :func:`sweep_stale` removes those whose process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger("automl")

_NAME = re.compile(r"^automl-(run|trial)-(\d+)-")
STALE_AFTER_S = 600.0  # a folder changed more recently is left alone, its owner's pid or not


def make(kind: str, root: str | None = None) -> str:
    """A new private folder ``automl-<kind>-<this pid>-<random>`` in ``root`` (default: the
    system's temporary folder)."""
    return tempfile.mkdtemp(prefix=f"automl-{kind}-{os.getpid()}-", dir=root)


def remove(folder: str | Path | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def sweep_stale(root: str | None = None, stale_after_s: float = STALE_AFTER_S) -> int:
    """Remove this user's ``automl-run-*`` and ``automl-trial-*`` folders in ``root`` whose
    owning process is no longer running and which have not changed for ``stale_after_s``
    (the age guards against a process of another PID namespace sharing the folder); returns
    how many were removed."""
    root = root or tempfile.gettempdir()
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match or int(match.group(2)) == os.getpid():
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid():
                continue
        except OSError:
            continue
        if now - st.st_mtime < stale_after_s or _alive(int(match.group(2))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += not os.path.exists(entry.path)
    if removed:
        log.debug("removed %d temporary folder(s) left by killed runs in %s", removed, root)
    return removed
