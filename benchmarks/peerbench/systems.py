"""The benchmarked systems: how each one is prepared and which commands a run executes."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import envs

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
ALL_SYSTEMS = ("automl", "lightgbm", "flaml", "autogluon")
# Variants of this repo's CLI, run only when named: the same flags, these in place of --n-jobs.
AUTOML_N_JOBS = 1
AUTOML_VARIANTS = {
    "automl-ray": ["--executor", "ray"],
    # issue 12 item 2: does CatBoost pay in the default set (measured on both dataset folders)
    "automl-catboost": ["--n-jobs", str(AUTOML_N_JOBS), "--include", "default,catboost"],
}
# Variants of a peer, run only when named: (the peer whose venv and adapter they use, its
# extra adapter flags). Issue 12 compares with AutoGluon's medium and best_quality at 300 s.
PEER_VARIANTS = {"autogluon-best": ("autogluon", ["--presets", "best_quality"])}
KNOWN_SYSTEMS = ALL_SYSTEMS + tuple(AUTOML_VARIANTS) + tuple(PEER_VARIANTS)
PEER_N_JOBS = 2

NOTES = {
    "automl": f"this repo's `automl fit/predict` CLI, --task given, --n-jobs {AUTOML_N_JOBS}",
    "lightgbm": "LightGBM library defaults, no tuning, budget ignored",
    "flaml": "FLAML AutoML, time_budget=B, metric as ours",
    "autogluon": "AutoGluon TabularPredictor, default presets (medium_quality), time_limit=B",
    "automl-ray": "this repo's CLI as `automl`, but `--executor ray` (a local Ray instance, trials as Ray tasks)",
    "automl-catboost": "this repo's CLI as `automl`, with CatBoost added to the default learners (`--include default,catboost`)",
    "autogluon-best": "AutoGluon TabularPredictor, presets=best_quality (bagging, stacking), time_limit=B",
}


def is_automl(system: str) -> bool:
    return system == "automl" or system in AUTOML_VARIANTS


def peer_base(system: str) -> str:
    """The peer whose venv and adapter a system uses (itself, or a variant's base)."""
    return PEER_VARIANTS[system][0] if system in PEER_VARIANTS else system


@dataclass(frozen=True)
class RunSpec:
    """Everything a system needs for one (dataset, budget) run."""

    train: Path
    test_features: Path
    target: str
    task: str
    budget: int
    seed: int
    run_dir: Path


@dataclass(frozen=True)
class Step:
    name: str
    cmd: list[str]


def automl_cli() -> Path:
    return REPO_DIR / ".venv" / "bin" / "automl"


def prepare(system: str, rebuild_env: bool = False, log=print) -> None:
    """Make the system runnable: install a peer's venv, or check the automl CLI exists."""
    if is_automl(system):
        if not automl_cli().is_file():
            raise envs.EnvError(f"automl CLI not found at {automl_cli()} (install the project first)")
        return
    envs.ensure_env(peer_base(system), rebuild=rebuild_env, log=log)


def steps(system: str, run: RunSpec) -> list[Step]:
    preds = run.run_dir / "preds.csv"
    work = run.run_dir / "work"
    if is_automl(system):
        cli = str(automl_cli())
        executor = AUTOML_VARIANTS.get(system) or ["--n-jobs", str(AUTOML_N_JOBS)]
        return [
            Step("fit", [
                cli, "fit", str(run.train), "--target", run.target, "--task", run.task,
                "--time-budget", str(run.budget),
                "--output", str(work), "--seed", str(run.seed), *executor,
            ]),
            Step("predict", [cli, "predict", str(work), str(run.test_features), "--output", str(preds)]),
        ]
    base = peer_base(system)
    script = PEERS_DIR / f"{base}_runner.py"
    extra = PEER_VARIANTS[system][1] if system in PEER_VARIANTS else []
    return [Step("fit_predict", [
        str(envs.venv_python(base)), str(script), *extra,
        "--train", str(run.train), "--test", str(run.test_features), "--target", run.target,
        "--task", run.task, "--budget", str(run.budget), "--seed", str(run.seed),
        "--n-jobs", str(PEER_N_JOBS), "--workdir", str(work), "--output", str(preds),
    ])]


def version(system: str) -> str:
    if is_automl(system):
        return automl_version()
    return envs.peer_version(peer_base(system))


# What decides how `automl fit/predict` behaves; commits touching nothing else (docs, tests,
# benchmark results) leave the version, so they do not invalidate the automl runs `--resume` keeps.
CODE_PATHS = ("automl", "trainers", "search_spaces", "pyproject.toml")


def automl_version() -> str:
    """Package version plus the last commit that changed the code (read-only git calls)."""
    python = REPO_DIR / ".venv" / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('automl'))"
    pkg = _quiet([str(python), "-c", code]) or "unknown"
    commit = _quiet(["git", "-C", str(REPO_DIR), "log", "-1", "--format=%h", "--", *CODE_PATHS])
    dirty = _quiet(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", *CODE_PATHS])
    return f"{pkg} (git {commit or 'no-commit'}{'+dirty' if dirty else ''})"


def _quiet(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def read_info(run_dir: Path) -> dict:
    path = run_dir / "info.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}
