"""Saving and loading model folders safely.

The manifest (``manifest.json``) is the commit point: model files are written under
content-addressed names first, then the manifest is atomically replaced, then stale
model files are removed. A crash while saving leaves the earlier model intact.

Each model file is a skops file plus a header (``automl-header.json`` inside its zip)
that repeats what the manifest says about the model: task, target, metric, class order,
schema, and the member's weight and description. Loading checks, *before* deserializing
anything: the manifest (format version, paths inside the folder), each file's SHA-256,
that its header agrees with the manifest (a hand-edited manifest, e.g. a reversed class
order, is refused), and that every node of its skops tree is an exact, allowed type or
function (:mod:`automl.allowlist`). Only then does skops build the objects.
The checksums and headers guard against accidents and hand edits; the allowlist is what
stops a folder from running code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from automl.allowlist import NotAllowed, audit, trainer_allowlist
from automl.contracts import Task
from automl.exceptions import ConfigError, ModelFileError
from automl.isolation import trim_heap
from automl.model import AutoMLModel, Deferred
from automl.schema import FeatureSchema

MANIFEST = "manifest.json"
FORMAT = "automl-model"
FORMAT_VERSION = 2  # 2: a header in each model file, exact allowlist (1 trusted name prefixes)
HEADER = "automl-header.json"  # inside each model file's zip, beside skops' schema.json
MODEL_KEYS = ("task", "target", "metric", "classes", "schema", "validation_score", "temperature")
_FILE_KEYS = ("file", "sha256", "weight")  # a member's entry in the manifest, beside its description
PACKAGES = ("automl", "scikit-learn", "lightgbm", "catboost", "numpy", "pandas", "optuna", "skops", "scipy")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    return {p: _version(p) for p in PACKAGES}


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (no race with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The file gets the mode a plain ``open`` would give it (0666 less the umask), not the
    0600 of the temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_model(model: AutoMLModel, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` into ``folder`` (created if needed) and return the manifest path."""
    sio = skops_io()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    about = _jsonable({
        "task": model.task.value, "metric": model.metric, "target": model.target,
        "classes": model.classes, "schema": model.schema.to_dict(),
        "validation_score": model.validation_score, "temperature": float(model.temperature),
    })
    members = []
    n = len(model.members)
    allow = trainer_allowlist()
    for i, (member, weight) in enumerate(zip(model.members, model.weights)):
        desc = _jsonable(model.description[i] if i < len(model.description) else {})
        desc = {k: v for k, v in desc.items() if k not in _FILE_KEYS}
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "member": i, "members": n,
                  "model": about, "weight": float(weight), "description": desc}
        deferred = isinstance(member, Deferred)
        if deferred:  # built now, written, and let go before the next one is built
            member = member.load()
            trim_heap()  # what unpickling freed, before the write needs more
        name, digest = _write_member(folder, i, member, header, sio, allow)
        if deferred:
            member = None
            trim_heap()
        members.append({"file": name, "sha256": digest, "weight": float(weight), **desc})
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(), "packages": package_versions(),
        **about, "members": members,
        **(extra or {}),
    }
    path = folder / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str))
    keep = {m["file"] for m in members}
    for stale in folder.glob("model-*.skops"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return path


def _write_member(folder: Path, i: int, member: Any, header: dict[str, Any], sio: Any,
                  allow: Any) -> tuple[str, str]:
    """Write one member's model file into ``folder``: its skops file, with ``header`` added
    to the zip (skops ignores the entry), under its content-addressed name; returns the name
    and SHA-256. Written into a temporary file and renamed into place (as
    :func:`atomic_write_bytes`), and built there rather than in memory: a forest's skops
    bytes, copied for the header and again for the write, were three times its size."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".model-{i}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            sio.dump(member, fh)
        try:  # refuse to write what could not be loaded
            audit(tmp, allow)
        except NotAllowed as exc:
            raise ConfigError(f"the model of learner '{header['description'].get('learner', '?')}' "
                              f"cannot be saved: {exc.reason}; its trainer must declare the exact "
                              "names in `saved_types` (classes) or `saved_functions` (see "
                              "automl/contracts.py).") from None
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(HEADER, json.dumps(header, sort_keys=True))
        with open(tmp, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            os.fsync(fh.fileno())
        name = f"model-{digest[:16]}-{i}.skops"
        os.replace(tmp, folder / name)
        return name, digest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_header(name: str, data: bytes) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            header = json.loads(zf.read(HEADER))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"model file '{name}' has no automl header: it was not written by "
                             "`automl fit`; refit the model or restore the folder.")
    return header


def skops_io() -> Any:
    """``skops.io``, imported without its list of scikit-learn's estimators.

    skops builds its default trusted types when imported, with
    ``sklearn.utils.all_estimators()``: that imports every sklearn module, pytest and
    (through ``sklearn.externals.array_api_compat.torch``) torch when installed, seconds
    and about 190 MB in every ``fit`` and ``predict``. automl trusts nothing by default: a
    file's every type is checked against :mod:`automl.allowlist` before skops loads it, and
    skops is given those names. So skops gets an empty list for the import.
    """
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils

    real = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *args, **kwargs: []  # type: ignore[assignment]
    try:
        import skops.io
    finally:
        sklearn.utils.all_estimators = real
    _index_array_names()
    return skops.io


class _NameIndexedZip:
    """A zip being written whose ``namelist()`` is its index of names (a dict), not a new
    list of every name: skops asks it whether each array it writes is there already."""

    def __init__(self, zip_file: zipfile.ZipFile) -> None:
        self._zip_file = zip_file

    def namelist(self) -> Any:
        return self._zip_file.NameToInfo

    def __getattr__(self, name: str) -> Any:
        return getattr(self._zip_file, name)


def _index_array_names() -> None:
    """Have skops check an array's name in the zip it writes by the zip's index of names.

    skops writes every array as its own entry, first asking whether its name is in
    ``zip_file.namelist()``, which lists every name written so far: quadratic in the
    arrays. A 1,280-round HistGradientBoosting model of 4 classes (15,381 arrays) took
    5.5 s to save so, at the end of a 60 s fit. The file written is the same."""
    import numpy as np
    from skops.io import _numpy, _utils

    def indexed(handler: Any) -> Any:
        def get_state(obj: Any, save_context: Any) -> Any:
            if not isinstance(save_context.zip_file, _NameIndexedZip):  # (a frozen dataclass)
                object.__setattr__(save_context, "zip_file", _NameIndexedZip(save_context.zip_file))
            return handler(obj, save_context)
        return get_state

    for kind in (np.ndarray, np.generic):
        _utils._get_state.register(kind)(indexed(_numpy.ndarray_get_state))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.exists():
        raise ModelFileError(f"model folder '{folder}' not found; give the --output folder of `automl fit`.")
    if not folder.is_dir():
        raise ModelFileError(f"'{folder}' is a file; give the model folder written by `automl fit`.")
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"'{folder}' has no {MANIFEST}: it is not a finished automl model folder "
                             "(was the run interrupted? resume it with `automl fit ... --resume`).")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"'{path}' is not valid JSON ({exc}); the folder is damaged — refit the model.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"'{path}' is not an automl model manifest; give a folder written by `automl fit`.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"the model was written by a newer automl (model format {version!r}, this "
                             f"automl reads up to {FORMAT_VERSION}); upgrade automl to load it.")
    if version < FORMAT_VERSION:
        raise ModelFileError(f"the model was written by an older automl (model format {version}, this "
                             f"automl reads {FORMAT_VERSION}, which checks each file's types exactly); "
                             "refit the model with this automl.")
    return manifest


def _member_path(folder: Path, name: Any) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelFileError(f"manifest names a model file outside the folder ({name!r}); refusing to load it.")
    path = (folder / name).resolve()
    if path.parent != folder.resolve():
        raise ModelFileError(f"manifest names a model file outside the folder ({name!r}); refusing to load it.")
    return path


def _member_bytes(folder: Path, member: Any) -> bytes:
    """A listed model file's bytes, once its name and checksum are checked."""
    if not isinstance(member, dict):
        raise ModelFileError(f"the manifest in '{folder}' lists a model file as {member!r}; "
                             "refit the model.")
    path = _member_path(folder, member.get("file"))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"model file '{member.get('file')}' listed in the manifest is missing; "
                             "refit the model.") from None
    if hashlib.sha256(data).hexdigest() != member.get("sha256"):
        raise ModelFileError(f"model file '{member.get('file')}' does not match its checksum (truncated or "
                             "modified); refit the model or restore the file.")
    return data


def _check_header(manifest: dict[str, Any], i: int, data: bytes) -> None:
    """Refuse a manifest that says something else about the model than its model files do."""
    member = manifest["members"][i]
    header = _read_header(member["file"], data)
    listed = {"model": {k: manifest.get(k) for k in MODEL_KEYS}, "member": i,
              "members": len(manifest["members"]), "weight": member.get("weight"),
              "description": {k: v for k, v in member.items() if k not in _FILE_KEYS}}
    differ = []
    for key, value in listed.items():
        saved = header.get(key)
        if key == "model" and isinstance(saved, dict):
            differ += [k for k in MODEL_KEYS if _canonical(saved.get(k)) != _canonical(value.get(k))]
        elif _canonical(saved) != _canonical(value):
            differ.append({"member": "member order", "members": "member count"}.get(key, key))
    if differ:
        raise ModelFileError("the manifest does not match the model files (it differs in: "
                             f"{', '.join(differ)}); refit the model or restore the folder.")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # NaN equals NaN here


def verify(folder: str | Path) -> tuple[dict[str, Any], list[frozenset[str]]]:
    """Check a model folder without building anything from it.

    Returns the manifest and the names each model file uses (all on the allowlist). Checks:
    the manifest's format, paths and schema; each file's checksum; that each file's header
    agrees with the manifest; that each file holds only allowed types.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    members = manifest.get("members")
    if not isinstance(members, list) or not members:
        raise ModelFileError(f"the manifest in '{folder}' lists no model files; refit the model.")
    try:
        FeatureSchema.from_dict(manifest["schema"])
        Task(manifest["task"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"the manifest's feature schema or task is invalid ({exc}); refit the model.") from None
    allow = trainer_allowlist()
    used = []
    for i, m in enumerate(members):  # one file's bytes at a time: a model may be large
        data = _member_bytes(folder, m)
        _check_header(manifest, i, data)
        used.append(audit(data, allow))
    return manifest, used


def load_model(folder: str | Path) -> AutoMLModel:
    """Verify, then load, a model folder written by :func:`save_model`.

    Example:
        >>> model = load_model("out")  # doctest: +SKIP
        >>> model.predict(frame)  # doctest: +SKIP
    """
    sio = skops_io()

    folder = Path(folder)
    manifest, used = verify(folder)
    members, weights = [], []
    for m, names in zip(manifest["members"], used):
        # read again, one file at a time (rather than all held since the check): the same
        # checksum means the same bytes as those checked
        members.append(_build(sio, m["file"], _member_bytes(folder, m), names))
        weights.append(float(m.get("weight", 1.0)))
    desc = [{k: v for k, v in m.items() if k not in _FILE_KEYS} for m in manifest["members"]]
    return AutoMLModel(
        schema=FeatureSchema.from_dict(manifest["schema"]), task=Task(manifest["task"]),
        classes=manifest.get("classes"), metric=manifest.get("metric", ""),
        target=manifest.get("target", ""), members=members, weights=weights, description=desc,
        validation_score=manifest.get("validation_score"), temperature=_temperature(manifest),
    )


def _temperature(manifest: dict[str, Any]) -> float:
    value = manifest.get("temperature", 1.0)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ModelFileError(f"the manifest's temperature {value!r} is not a positive number; refit "
                             "the model or restore the folder.")
    return float(value)


def _build(sio: Any, name: str, data: bytes, names: frozenset[str]) -> Any:
    """Deserialize a model file that passed the allowlist check (``names``: what it uses)."""
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - skops raises many kinds on damaged files
        raise ModelFileError(f"model file '{name}' could not be read ({type(exc).__name__}); "
                             "refit the model.") from None
    # skops audits the tree too: whatever it would refuse must be a name the allowlist
    # check accepted, or the two disagree and nothing is built
    unseen = sorted(set(untrusted) - names)
    if unseen:
        raise ModelFileError(f"model file '{name}' holds types the allowlist check did not "
                             f"see ({', '.join(unseen[:5])}); refusing to load it.")
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"model file '{name}' could not be read ({type(exc).__name__}); "
                             "refit the model.") from None
