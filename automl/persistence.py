"""Saving and loading model folders safely.

The manifest (``manifest.json``) is the commit point: model files are written under
content-addressed names first, then the manifest is atomically replaced, then stale
model files are removed. A crash while saving leaves the earlier model intact.

Loading verifies the manifest (format version, paths inside the folder, SHA-256
checksums, feature schema) *before* deserializing anything, and deserializes with skops,
which refuses any type outside an allowlist instead of running code on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from automl.contracts import Task
from automl.exceptions import ModelFileError
from automl.model import AutoMLModel
from automl.schema import FeatureSchema

MANIFEST = "manifest.json"
FORMAT = "automl-model"
FORMAT_VERSION = 1
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "lightgbm.", "catboost.", "automl.", "trainers.",
                    "collections.OrderedDict", "pandas.")
# Exact names trusted besides the prefixes. functools.partial wraps a function that skops
# audits as a node of its own, so allowing the wrapper does not allow what it wraps.
TRUSTED_NAMES = frozenset({"functools.partial"})
PACKAGES = ("automl", "scikit-learn", "lightgbm", "catboost", "numpy", "pandas", "optuna", "skops", "scipy")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    return {p: _version(p) for p in PACKAGES}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    members = []
    for i, (member, weight) in enumerate(zip(model.members, model.weights)):
        data = sio.dumps(member)
        digest = hashlib.sha256(data).hexdigest()
        name = f"model-{digest[:16]}-{i}.skops"
        atomic_write_bytes(folder / name, data)
        desc = model.description[i] if i < len(model.description) else {}
        members.append({"file": name, "sha256": digest, "weight": float(weight), **_jsonable(desc)})
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(), "packages": package_versions(),
        "task": model.task.value, "metric": model.metric, "target": model.target,
        "classes": _jsonable(model.classes), "schema": model.schema.to_dict(), "members": members,
        "validation_score": model.validation_score,
        **(extra or {}),
    }
    path = folder / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str))
    keep = {m["file"] for m in members}
    for stale in folder.glob("model-*.skops"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return path


def skops_io() -> Any:
    """``skops.io``, imported without dragging in torch.

    skops lists scikit-learn's estimators when imported, which imports every sklearn
    package, ``sklearn.externals.array_api_compat.torch`` (and so torch, seconds) included
    when torch is installed. That package is hidden for the import, then restored.
    """
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    key = "sklearn.externals.array_api_compat.torch"
    hide = key not in sys.modules
    if hide:
        sys.modules[key] = None  # type: ignore[assignment] - makes `import key` fail fast
    try:
        import skops.io
    finally:
        if hide and sys.modules.get(key, 0) is None:
            del sys.modules[key]
    return skops.io


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
    return manifest


def _member_path(folder: Path, name: Any) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelFileError(f"manifest names a model file outside the folder ({name!r}); refusing to load it.")
    path = (folder / name).resolve()
    if path.parent != folder.resolve():
        raise ModelFileError(f"manifest names a model file outside the folder ({name!r}); refusing to load it.")
    return path


def verify(folder: str | Path) -> dict[str, Any]:
    """Check the manifest and every model file's checksum without deserializing anything."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    members = manifest.get("members")
    if not isinstance(members, list) or not members:
        raise ModelFileError(f"the manifest in '{folder}' lists no model files; refit the model.")
    for m in members:
        path = _member_path(folder, m.get("file"))
        if not path.is_file():
            raise ModelFileError(f"model file '{m.get('file')}' listed in the manifest is missing; refit the model.")
        if sha256_file(path) != m.get("sha256"):
            raise ModelFileError(f"model file '{m.get('file')}' does not match its checksum (truncated or "
                                 "modified); refit the model or restore the file.")
    try:
        FeatureSchema.from_dict(manifest["schema"])
        Task(manifest["task"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"the manifest's feature schema or task is invalid ({exc}); refit the model.") from None
    return manifest


def load_model(folder: str | Path) -> AutoMLModel:
    """Verify, then load, a model folder written by :func:`save_model`."""
    sio = skops_io()

    folder = Path(folder)
    manifest = verify(folder)
    members, weights = [], []
    for m in manifest["members"]:
        data = _member_path(folder, m["file"]).read_bytes()
        untrusted = sio.get_untrusted_types(data=data)
        bad = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES) and t not in TRUSTED_NAMES]
        if bad:
            raise ModelFileError(f"model file '{m['file']}' contains types outside the allowlist "
                                 f"({', '.join(bad[:5])}); refusing to load it.")
        try:
            members.append(sio.loads(data, trusted=untrusted))
        except Exception as exc:  # noqa: BLE001 - skops raises many kinds on damaged files
            raise ModelFileError(f"model file '{m['file']}' could not be read ({type(exc).__name__}); "
                                 "refit the model.") from None
        weights.append(float(m.get("weight", 1.0)))
    desc = [{k: v for k, v in m.items() if k not in ("file", "sha256", "weight")} for m in manifest["members"]]
    return AutoMLModel(
        schema=FeatureSchema.from_dict(manifest["schema"]), task=Task(manifest["task"]),
        classes=manifest.get("classes"), metric=manifest.get("metric", ""),
        target=manifest.get("target", ""), members=members, weights=weights, description=desc,
        validation_score=manifest.get("validation_score"),
    )


def read_json_bytes(data: bytes) -> Any:
    return json.load(io.BytesIO(data))
