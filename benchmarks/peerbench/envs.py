"""Per-peer virtual environments under benchmarks/.venvs/<system>, installed on first use."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
VENVS_DIR = BENCH_DIR / ".venvs"
REQUIREMENTS_DIR = BENCH_DIR / "peers" / "requirements"
MARKER = ".peerbench-installed.json"
INSTALL_TIMEOUT_S = 3600


@dataclass(frozen=True)
class PeerEnvSpec:
    system: str
    pre_install: tuple[str, ...]  # installed (with dependencies) before the lock
    import_check: str  # module that must import after installation
    main_package: str  # distribution whose version names the peer


PEER_ENVS = {
    "lightgbm": PeerEnvSpec("lightgbm", (), "lightgbm", "lightgbm"),
    "flaml": PeerEnvSpec("flaml", (), "flaml.automl", "FLAML"),
    # torch first: a pinned 2.13.0 takes the CPU wheel from local disk; an unpinned
    # torch (asked for by a dependency) would pull a multi-GB CUDA build.
    "autogluon": PeerEnvSpec("autogluon", ("torch==2.13.0",), "autogluon.tabular", "autogluon.tabular"),
}


class EnvError(RuntimeError):
    """A peer venv could not be created or installed."""


def lock_file(system: str) -> Path:
    return REQUIREMENTS_DIR / f"{system}.txt"


def venv_python(system: str) -> Path:
    return VENVS_DIR / system / "bin" / "python"


def _fingerprint(spec: PeerEnvSpec) -> str:
    payload = json.dumps([spec.pre_install, lock_file(spec.system).read_text()])
    return hashlib.sha256(payload.encode()).hexdigest()


def _run_logged(cmd: list[str], log: Path) -> None:
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)
    if proc.returncode != 0:
        raise EnvError(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def _base_python() -> str:
    """The interpreter the project venv was made from (a venv made from a venv nests badly)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_env(system: str, rebuild: bool = False, log=print) -> Path:
    """Create/install the peer venv when missing or out of date; return its python."""
    spec = PEER_ENVS[system]
    root = VENVS_DIR / system
    marker = root / MARKER
    fingerprint = _fingerprint(spec)
    if rebuild and root.exists():
        shutil.rmtree(root)
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        return venv_python(system)
    install_log = VENVS_DIR / f"{system}-install.log"
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    log(f"[env] installing {system} venv in {root} (log: {install_log}); this can take minutes")
    if not venv_python(system).is_file():
        _run_logged([_base_python(), "-m", "venv", str(root)], install_log)
    pip = [str(venv_python(system)), "-m", "pip", "install", "--disable-pip-version-check"]
    if spec.pre_install:
        _run_logged([*pip, *spec.pre_install], install_log)
    _run_logged([*pip, "--no-deps", "-r", str(lock_file(system))], install_log)
    _run_logged([str(venv_python(system)), "-c", f"import {spec.import_check}"], install_log)
    marker.write_text(json.dumps({"fingerprint": fingerprint, "versions": env_versions(system)}))
    return venv_python(system)


def env_versions(system: str) -> dict[str, str]:
    """{distribution: version} for everything installed in the peer venv."""
    code = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(venv_python(system)), "-c", code], capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def peer_version(system: str) -> str:
    versions = {k.lower(): v for k, v in env_versions(system).items()}
    return versions.get(PEER_ENVS[system].main_package.lower(), "unknown")
