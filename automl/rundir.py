"""The run folder that ``automl fit --output OUT`` writes: its layout, marker, lock and storage.

One module owns what lives in the folder, so the command line, the dashboard and the
report agree on it (they open a run with :func:`open_run` and its study with :func:`load_study`):

- ``run.json`` (written first, at the start of a fit) is automl's **run marker**: it names
  the study storage and study, the target, the data file and a fingerprint of the data.
  ``--force`` replaces only a folder that holds this marker (or a finished model's
  ``manifest.json``), or an empty one; anything else is refused, so a user's own folder is
  never deleted.
- The folder itself is locked (``flock``) by the process that writes it: a second ``fit``
  (with or without ``--force`` or ``--resume``) into a folder in use is refused.
- ``study.db`` (the Optuna study, by default), ``manifest.json`` and ``model-*.skops``
  (see :mod:`automl.persistence`), ``leaderboard.csv``, ``summary.json``, ``oof/``.

Example:
    >>> from automl.rundir import RUN_FILE, is_run_folder
    >>> RUN_FILE
    'run.json'
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl.exceptions import ConfigError, DataError, ModelFileError, OutputExistsError

log = logging.getLogger("automl")

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"
LEADERBOARD_FILE = "leaderboard.csv"
DEFAULT_DB = "study.db"
OOF_DIR = "oof"
RUN_FORMAT = "automl-run"  # run.json's "format": the marker that a folder is automl's


# --------------------------------------------------------------------------- marker and lock

def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder automl wrote (a run marker or a model manifest in it)."""
    for name, key, value in ((RUN_FILE, "format", RUN_FORMAT), (MANIFEST_FILE, "format", "automl-model")):
        data = _read_json_quiet(path / name)
        if data is not None and data.get(key) == value:
            return True
    # run.json of automl before the marker field existed: it always named a study storage
    legacy = _read_json_quiet(path / RUN_FILE)
    return legacy is not None and {"storage", "study_name", "target"} <= legacy.keys()


def _read_json_quiet(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class FolderLock:
    """An exclusive ``flock`` on the output folder itself, held while a process writes it.

    Locking the directory (not a file in it) leaves nothing behind in the folder; forked
    trial processes inherit the lock, and it goes away with the last of them, so a killed run
    never leaves a stale lock. The holder's PID is in ``run.json`` (``pid``).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = (_read_json_quiet(self.folder / RUN_FILE) or {}).get("pid")
            who = f" (PID {holder})" if holder else ""
            raise OutputExistsError(f"output folder '{self.folder}' is in use by another automl "
                                    f"process{who}; wait for it to finish, stop it, or choose "
                                    "another --output.") from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


# --------------------------------------------------------------------------- preparing OUT

@dataclass
class Output:
    """A run folder prepared for writing: locked, and what ``--force`` moved aside."""

    path: Path
    lock: FolderLock
    aside: Path | None = None  # the earlier run folder, kept until the new run is saved
    restored: bool = False

    def restore(self) -> None:
        """Put back the folder that ``--force`` moved aside (the replacing run failed)."""
        if self.aside is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self.aside.rename(self.path)
        self.aside = None
        self.restored = True
        log.info("restored the earlier contents of '%s'", self.path)

    def commit(self) -> None:
        """The new run is saved: drop the folder ``--force`` replaced."""
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def close(self) -> None:
        self.lock.release()


def prepare_output(out: Path, *, resume: bool, force: bool, shared: bool = False) -> Output:
    """Check and lock the output folder; with ``--force`` move an earlier run aside.

    ``--resume`` continues the run recorded in the folder's ``run.json``; with ``--storage``
    (``shared``) it may also join a study other processes run, from a new or empty folder.

    Raises:
        OutputExistsError: the folder holds something automl must not replace, or is in use.
        ConfigError: ``--output`` is a file, or there is nothing to resume.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output '{out}' is a file; give a folder path.")
    has_files = out.is_dir() and any(out.iterdir())
    ours = has_files and is_run_folder(out)
    if resume:
        if not (out / RUN_FILE).is_file():
            if not shared:
                raise ConfigError(f"nothing to resume in '{out}' (no {RUN_FILE}); run without "
                                  "--resume first, or pass --storage and --study-name to join a "
                                  "shared study.")
            if has_files:
                raise OutputExistsError(f"output folder '{out}' already exists and holds no automl "
                                        "run; choose an empty or new --output to join the study.")
        return Output(out, FolderLock(out).acquire())
    if has_files and not force:
        raise OutputExistsError(f"output folder '{out}' already exists; pass --resume to continue its "
                                "search, --force to replace it, or choose another --output.")
    if has_files and not ours:
        raise OutputExistsError(f"--force replaces only a folder automl wrote, and '{out}' holds other "
                                f"files (no {RUN_FILE}); choose a new or empty --output, or move its "
                                "files away first.")
    lock = FolderLock(out).acquire()  # refused while another run writes the folder
    if not has_files:
        return Output(out, lock)
    aside = out.with_name(f"{out.name}.replaced-{int(time.time())}-{os.getpid()}")
    out.rename(aside)  # locked: no other run writes it while it moves
    try:
        new_lock = FolderLock(out).acquire()
    except BaseException:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
            aside.rename(out)
        raise
    finally:
        lock.release()
    return Output(out, new_lock, aside=aside)


# --------------------------------------------------------------------------- data fingerprint

def data_fingerprint(df: Any) -> dict[str, Any]:
    """What identifies the training data: its shape, columns and a hash of every value."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return {"rows": int(len(df)), "columns": int(df.shape[1]), "sha256": h.hexdigest()}


def fingerprint_in_background(df: Any) -> Callable[[], dict[str, Any]]:
    """:func:`data_fingerprint` of ``df`` in a thread, beside the column inference (its
    hashing releases the lock for most of its 0.8 s at 2,000,000 rows); call what this
    returns to wait for it. The caller waits before it forks any process."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = data_fingerprint(df)
        except BaseException as exc:  # noqa: BLE001 - raised where it is waited for
            box["error"] = exc

    thread = threading.Thread(target=work, name="automl-fingerprint", daemon=True)
    thread.start()

    def result() -> dict[str, Any]:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]
    return result


def check_same_data(recorded: Any, current: dict[str, Any], data: str, allow: bool) -> None:
    """Refuse to resume a search on other data than it started with, unless ``allow``."""
    if not isinstance(recorded, dict) or recorded.get("sha256") == current["sha256"]:
        return
    if allow:
        log.warning("resuming on data that differs from the run's first data (%s rows, was %s); "
                    "earlier trials were scored on the old data", current["rows"], recorded.get("rows"))
        return
    what = (f"{current['rows']} rows x {current['columns']} columns, was "
            f"{recorded.get('rows')} x {recorded.get('columns')}"
            if (recorded.get("rows"), recorded.get("columns")) != (current["rows"], current["columns"])
            else "same shape, other values")
    raise DataError(f"cannot resume: '{data}' is not the data this search started with ({what}); "
                    "give the same file, or pass --allow-new-data to continue on this data.")


def text_backbone_option(value: str) -> str:
    """``--text-backbone`` as recorded in ``run.json``: a folder as its absolute path."""
    return str(Path(value).expanduser().resolve()) if Path(value).expanduser().is_dir() else value


def check_same_backbone(recorded: Any, current: str, allow: bool) -> None:
    """Refuse to resume a search with another ``--text-backbone`` than it started with
    (its trials' text features would differ), unless ``allow`` (``--allow-new-data``)."""
    if not isinstance(recorded, str) or recorded == current:
        return
    if allow:
        log.warning("resuming with --text-backbone %s (the run started with %s); earlier trials "
                    "were scored on the old text features", current, recorded)
        return
    raise ConfigError(f"cannot resume: this search started with --text-backbone {recorded}, not "
                      f"{current}; give --text-backbone {recorded}, or pass --allow-new-data to "
                      f"continue with {current}.")


# --------------------------------------------------------------------------- reading a run

@dataclass
class RunFolder:
    """An ``automl fit`` output folder: where its study lives and what the run recorded."""

    path: Path
    storage_url: str
    study_name: str
    run: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None

    @property
    def info(self) -> dict[str, Any]:
        """``summary.json`` (or the manifest's copy of it) over ``run.json``."""
        merged = dict(self.run)
        if self.manifest and isinstance(self.manifest.get("summary"), dict):
            merged.update(self.manifest["summary"])
        if self.summary:
            merged.update(self.summary)
        return merged


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from the run folder, None if absent; a one-line error if damaged."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ModelFileError(f"'{path}' is not valid JSON ({exc}); the run folder is damaged — "
                             "rerun `automl fit`.") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"'{path}' does not hold a JSON object; the run folder is damaged — "
                             "rerun `automl fit`.")
    return data


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / DEFAULT_DB).resolve()}"


def own_storage(url: Any, out: Path) -> Any:
    """A copied or moved output folder resumes its own study file, not the one it came from."""
    if isinstance(url, str) and url.startswith("sqlite:///"):
        own = out / Path(url[len("sqlite:///"):]).name
        if own.is_file():
            return f"sqlite:///{own.resolve()}"
    return url


def resolve_storage(url: str, folder: Path) -> str:
    """The run's storage URL; a file-based storage is looked for in the run folder first, so a
    copied or moved folder opens its own study, not the one it was copied from."""
    if url.startswith("sqlite:///"):
        raw = url[len("sqlite:///"):]
        if raw in ("", ":memory:"):
            raise ModelFileError(f"the run's study was kept in memory ({url!r}); nothing to open.")
        for cand in (folder / Path(raw).name, Path(raw)):
            if cand.is_file():
                return f"sqlite:///{cand.resolve()}"
        raise ModelFileError(f"the study database '{raw}' named in {RUN_FILE} is missing (and no "
                             f"{DEFAULT_DB} in '{folder}'); was it moved or deleted?")
    if "://" not in url:  # a journal file
        for cand in (folder / Path(url).name, Path(url)):
            if cand.is_file():
                return str(cand.resolve())
        raise ModelFileError(f"the study journal '{url}' named in {RUN_FILE} is missing; was it "
                             "moved or deleted?")
    return url


def open_run(folder: str | Path) -> RunFolder:
    """Read and check an ``automl fit`` output folder.

    Raises:
        ModelFileError: the folder is missing, not a run folder, or its study storage is gone.

    Example:
        >>> run = open_run("automl-out")  # doctest: +SKIP
        >>> run.storage_url, run.study_name  # doctest: +SKIP
        ('sqlite:////abs/automl-out/study.db', 'automl')
    """
    path = Path(folder)
    if not path.exists():
        raise ModelFileError(f"run folder '{path}' not found; give the --output folder of "
                             "`automl fit`.")
    if not path.is_dir():
        raise ModelFileError(f"'{path}' is a file; give the --output folder of `automl fit`.")
    run = read_json(path / RUN_FILE)
    summary = read_json(path / SUMMARY_FILE)
    manifest = read_json(path / MANIFEST_FILE)
    if run is None and summary is None:
        raise ModelFileError(f"'{path}' has no {RUN_FILE} or {SUMMARY_FILE}: it is not an output "
                             "folder of `automl fit`.")
    info = {**(summary or {}), **(run or {})}
    url = info.get("storage")
    if not url and (path / DEFAULT_DB).is_file():
        url = default_storage(path)
    if not isinstance(url, str) or not url:
        raise ModelFileError(f"'{path}/{RUN_FILE}' names no study storage; rerun `automl fit`.")
    name = info.get("study_name") or "automl"
    return RunFolder(path=path, storage_url=resolve_storage(url, path), study_name=str(name),
                     run=run or {}, summary=summary, manifest=manifest)


def load_study(run: RunFolder) -> Any:
    """Load the run's study from its storage; a one-line error when it is not there."""
    import optuna

    from automl.study import make_storage

    storage = make_storage(run.storage_url)
    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as exc:  # noqa: BLE001 - storages raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"cannot read the study storage {run.storage_url!r}: "
                             f"{first}") from None
    if run.study_name not in names:
        shown = ", ".join(repr(n) for n in names[:10]) or "none"
        raise ModelFileError(f"study '{run.study_name}' not found in {run.storage_url} (studies "
                             f"there: {shown}); is '{run.path}' the right run folder?")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=run.study_name, storage=storage)
