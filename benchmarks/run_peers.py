#!/usr/bin/env python
"""Benchmark `automl` against peer AutoML systems on the shared datasets.

Every system runs as its own subprocess on the same cached 80/20 split, with the
same time budget and cores; each is scored on the test split, normalized against a
constant predictor, and ranked. See benchmarks/README.md.

    .venv/bin/python benchmarks/run_peers.py --budgets 60 --systems automl,lightgbm,flaml,autogluon
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from peerbench import data, report, scoring, systems
from peerbench.envs import EnvError, env_versions
from peerbench.proc import run_limited

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_DATASETS_DIR = REPO_DIR.parent / "shared" / "datasets"
CACHE_DIR = BENCH_DIR / ".cache" / "splits"


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=csv_list, default=None, help="comma list (default: all tabular)")
    parser.add_argument("--budgets", type=csv_list, default=["60"], help="comma list of seconds (default 60)")
    parser.add_argument("--systems", type=csv_list, default=list(systems.ALL_SYSTEMS),
                        help=f"comma list from {','.join(systems.KNOWN_SYSTEMS)} "
                        f"(default: {','.join(systems.ALL_SYSTEMS)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="output dir (default benchmarks/results/<timestamp>)")
    parser.add_argument("--max-rows", type=int, default=None, help="cap training rows (fixed-seed subsample)")
    parser.add_argument("--seed", type=int, default=0, help="seed given to every system (default 0)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split (default 0)")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores / thread cap per run (default 2)")
    parser.add_argument("--datasets-dir", type=Path, action="append", default=None, metavar="DIR",
                        help="a folder with a MANIFEST.tsv (repeatable: shared and corpus in one "
                             f"table; default {DEFAULT_DATASETS_DIR})")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs found in --out (its runs/ folder or its results.json) "
                             "made by the same system version with the same seed, split, cores and rows")
    parser.add_argument("--compare-with", type=Path, action="append", default=[], metavar="DIR",
                        help="also show the finished runs of the systems NOT run here from an earlier "
                             "table (DIR/results.json), e.g. the peers of benchmarks/results/b60-fb9af5c, "
                             "so that a rerun of automl alone is compared with them (repeatable)")
    parser.add_argument("--keep-models", action="store_true", help="keep each run's model/work dir")
    parser.add_argument("--rebuild-venvs", action="store_true", help="wipe and reinstall peer venvs")
    args = parser.parse_args(argv)
    unknown = [s for s in args.systems if s not in systems.KNOWN_SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; choose from {','.join(systems.KNOWN_SYSTEMS)}")
    try:
        args.budgets = [int(b) for b in args.budgets]
    except ValueError:
        parser.error("--budgets must be whole seconds, e.g. 60,300")
    if any(b <= 0 for b in args.budgets) or (args.max_rows is not None and args.max_rows <= 0):
        parser.error("--budgets and --max-rows must be positive")
    args.out = (args.out or BENCH_DIR / "results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def command_line() -> str:
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    for i, part in enumerate(argv[:2]):
        try:
            argv[i] = os.path.relpath(part) if Path(part).resolve().is_relative_to(REPO_DIR) else part
        except ValueError:
            pass
    return shlex.join(argv)


def machine_info(cores: int) -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((l.split(":", 1)[1].strip() for l in cpuinfo.read_text().splitlines()
                      if l.startswith("model name")), "")
    total_gib = psutil.virtual_memory().total / 2**30
    return {
        "cpu_count": os.cpu_count(), "cores_per_run": cores, "cpu_model": model,
        "ram_gib": round(total_gib, 1), "platform": platform.platform(), "python": platform.python_version(),
        "description": (f"{os.cpu_count()} cores ({cores} per run), {total_gib:.0f} GiB RAM, "
                        f"{model or platform.machine()}, {platform.system()}"),
    }


def prepare_dataset(spec: data.DatasetSpec, args: argparse.Namespace) -> dict[str, Any]:
    split = data.prepare_split(spec, CACHE_DIR, args.split_seed)
    train_path, n_train = data.capped_train(split, args.max_rows, args.split_seed)
    metric = scoring.METRICS[spec.task]
    classes = sorted({scoring.label_key(c) for c in split.classes})
    truth = scoring.read_truth(split.test, spec.target, spec.task)
    baseline = scoring.constant_score(train_path, spec.target, spec.task, truth, classes)
    return {
        "task": spec.task, "target": spec.target, "metric": metric.name,
        "higher_is_better": metric.higher_is_better, "n_train": n_train, "n_test": split.n_test,
        "classes": classes, "constant_score": baseline, "train_csv": str(train_path),
        "test_features_csv": str(split.test_features), "_truth": truth,
    }


def failed(record: dict[str, Any], kind: str, reason: str) -> dict[str, Any]:
    record.update(status="failed", failure_kind=kind, failure=reason, score=None)
    return record


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no stderr)"


def reuse_key(system: str, version: str, args: argparse.Namespace) -> dict[str, Any]:
    """What must match for ``--resume`` to reuse a finished run instead of running it again."""
    return {"system": system, "version": version, "seed": args.seed, "split_seed": args.split_seed,
            "max_rows": args.max_rows, "cores": args.cores}


def earlier_runs(out: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Finished runs recorded in ``out/results.json`` (committed, unlike ``runs/``), by
    (dataset, system, budget)."""
    path = out / "results.json"
    try:
        runs = json.loads(path.read_text()).get("runs", []) if path.is_file() else []
    except (json.JSONDecodeError, OSError):
        return {}
    return {(r["dataset"], r["system"], int(r["budget"])): r for r in runs if "reuse_key" in r}


def compared_runs(args: argparse.Namespace) -> tuple[dict[tuple[str, str, int], dict[str, Any]], list[str]]:
    """The finished runs of systems not run here from the ``--compare-with`` tables, by
    (dataset, system, budget), and those systems in the order first seen."""
    imported: dict[tuple[str, str, int], dict[str, Any]] = {}
    shown: list[str] = []
    for source in args.compare_with:
        path = source / "results.json"
        if not path.is_file():
            raise SystemExit(f"--compare-with {source}: no results.json there")
        for run in json.loads(path.read_text()).get("runs", []):
            system = run["system"]
            if system in args.systems:
                continue
            key = (run["dataset"], system, int(run["budget"]))
            imported.setdefault(key, {**run, "compared_from": source.name})
            if system not in shown:
                shown.append(system)
    return imported, shown


def reusable(system: str, name: str, budget: int, key: dict[str, Any],
             args: argparse.Namespace) -> dict[str, Any] | None:
    """A finished run of the same work (see :func:`reuse_key`) from an earlier invocation."""
    run_json = args.out / "runs" / str(budget) / name / system / "run.json"
    found = []
    if run_json.is_file():
        try:
            found.append(json.loads(run_json.read_text()))
        except json.JSONDecodeError:
            pass
    if (name, system, budget) in args.earlier:
        found.append(args.earlier[(name, system, budget)])
    for record in found:
        if record.get("reuse_key") == key:
            return record
    if found:
        log(f"[{budget}s] {name}/{system}: earlier run was made with "
            f"{found[0].get('reuse_key', {}).get('version', 'unknown settings')}; running again")
    return None


def execute(system: str, name: str, meta: dict[str, Any], budget: int, args: argparse.Namespace,
            version: str = "") -> dict[str, Any]:
    """Run one system on one dataset at one budget; return its record (not yet normalized)."""
    run_dir = args.out / "runs" / str(budget) / name / system
    key = reuse_key(system, version, args)
    if args.resume and (earlier := reusable(system, name, budget, key, args)) is not None:
        return {**earlier, "reused": True}
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    limit = budget * 1.5 + 60
    record: dict[str, Any] = {
        "dataset": name, "task": meta["task"], "metric": meta["metric"], "budget": budget,
        "system": system, "status": "ok", "failure_kind": None, "failure": None, "score": None,
        "wall_s": 0.0, "peak_mem_mb": 0.0, "time_limit_s": limit, "steps": {}, "run_dir": str(run_dir),
        "cpu_s": 0.0, "other_cpu_frac": 0.0, "reuse_key": key,
    }
    spec = systems.RunSpec(
        train=Path(meta["train_csv"]), test_features=Path(meta["test_features_csv"]),
        target=meta["target"], task=meta["task"], budget=budget, seed=args.seed, run_dir=run_dir,
    )
    for step in systems.steps(system, spec):
        remaining = limit - record["wall_s"]
        result = run_limited(step.cmd, cwd=run_dir, log_prefix=run_dir / step.name,
                             timeout_s=remaining, cores=args.cores)
        record["wall_s"] += result.wall_s
        record["peak_mem_mb"] = max(record["peak_mem_mb"], result.peak_rss_mb)
        record["peak_pss_mb"] = max(record.get("peak_pss_mb", 0.0), result.peak_pss_mb)
        record["cpu_s"] += result.cpu_s
        record["other_cpu_frac"] = max(record["other_cpu_frac"], result.other_cpu_frac)
        record["steps"][step.name] = {"cmd": shlex.join(step.cmd), "wall_s": result.wall_s,
                                      "peak_mem_mb": result.peak_rss_mb,
                                      "peak_pss_mb": result.peak_pss_mb, "cpu_s": result.cpu_s,
                                      "other_cpu_frac": result.other_cpu_frac, "returncode": result.returncode}
        if result.timed_out:
            return _finish(failed(record, "timeout", f"killed at the {limit:.0f} s limit in '{step.name}'"), args)
        if result.returncode != 0:
            reason = f"'{step.name}' exited {result.returncode}: {last_line(result.stderr_tail)}"
            return _finish(failed(record, "crash", reason), args)
    try:
        record["score"] = scoring.score_predictions(run_dir / "preds.csv", meta["_truth"], meta["task"], meta["classes"])
    except (scoring.PredictionError, ValueError) as exc:
        failed(record, "bad-preds", f"unusable predictions: {exc}")
    return _finish(record, args)


def _finish(record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(record["run_dir"])
    record["info"] = systems.read_info(run_dir)
    if not args.keep_models:
        shutil.rmtree(run_dir / "work", ignore_errors=True)
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    return record


def setup_failure(system: str, name: str, meta: dict[str, Any], budget: int, reason: str) -> dict[str, Any]:
    record = {"dataset": name, "task": meta["task"], "metric": meta["metric"], "budget": budget,
              "system": system, "wall_s": 0.0, "peak_mem_mb": 0.0, "steps": {}, "info": {}}
    return failed(record, "setup", reason)


def prepare_systems(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str], dict[str, dict]]:
    """Install/check every system; return (versions, setup failures, peer venv packages)."""
    versions: dict[str, str] = {}
    broken: dict[str, str] = {}
    packages: dict[str, dict] = {}
    for system in args.systems:
        try:
            systems.prepare(system, rebuild_env=args.rebuild_venvs, log=log)
            versions[system] = systems.version(system)
            if not systems.is_automl(system):
                packages[system] = env_versions(systems.peer_base(system))
        except (EnvError, OSError) as exc:
            broken[system] = f"setup failed: {exc}"
            versions[system] = "not installed"
            log(f"[setup] {system}: {exc}")
    return versions, broken, packages


def write_outputs(results: dict[str, Any]) -> str:
    out = Path(results["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    public = {**results, "datasets": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")}
                                      for k, v in results["datasets"].items()}}
    (out / "results.json").write_text(json.dumps(public, indent=2, default=_json_default))
    markdown = report.render(public)
    (out / "results.md").write_text(markdown + "\n")
    return markdown


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = data.select_datasets(data.read_manifests(args.datasets_dir or [DEFAULT_DATASETS_DIR]),
                                 args.datasets)
    log(f"[bench] {len(specs)} dataset(s) x {len(args.budgets)} budget(s) x {len(args.systems)} system(s) -> {args.out}")
    versions, broken, packages = prepare_systems(args)
    args.earlier = earlier_runs(args.out) if args.resume else {}
    datasets = {spec.name: prepare_dataset(spec, args) for spec in specs}
    imported, shown = compared_runs(args)
    for source in args.compare_with:
        earlier = json.loads((source / "results.json").read_text())
        for system in shown:
            if system in earlier.get("versions", {}):
                versions.setdefault(system, earlier["versions"][system])
            if system in earlier.get("peer_packages", {}):
                packages.setdefault(system, earlier["peer_packages"][system])
    all_systems = [*args.systems, *shown]
    results: dict[str, Any] = {
        "name": args.out.name, "out_dir": str(args.out), "command": command_line(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.cores), "systems": all_systems, "budgets": args.budgets,
        "compared_with": [str(p) for p in args.compare_with],
        "versions": versions, "peer_packages": packages, "seed": args.seed, "max_rows": args.max_rows,
        "split": {"seed": args.split_seed, "test_size": data.TEST_SIZE,
                  "description": (f"one fixed 80/20 split per dataset (stratified for classification), "
                                  f"split seed {args.split_seed}; system seed {args.seed}"
                                  + (f"; training rows capped at {args.max_rows}" if args.max_rows else ""))},
        "scoring": ("ROC AUC (binary), log loss (multiclass, all classes), RMSE (regression); "
                    "failures scored as the constant predictor (train prior / train mean)"),
        "datasets": datasets, "runs": [], "summary": {},
    }
    for budget in args.budgets:
        for name, meta in datasets.items():
            group = []
            for system in args.systems:
                if system in broken:
                    record = setup_failure(system, name, meta, budget, broken[system])
                else:
                    record = execute(system, name, meta, budget, args, versions[system])
                group.append(record)
                log(_progress(record))
            group += [dict(imported[key]) for key in ((name, s, budget) for s in shown) if key in imported]
            report.finalize_group(group, meta["constant_score"], meta["higher_is_better"])
            results["runs"].extend(group)
            results["summary"][str(budget)] = report.summarize(
                [r for r in results["runs"] if r["budget"] == budget], all_systems)
            write_outputs(results)
    print(write_outputs(results))
    log(f"[bench] wrote {args.out / 'results.md'} and results.json")
    return 0


def _progress(record: dict[str, Any]) -> str:
    head = f"[{record['budget']}s] {record['dataset']}/{record['system']}:"
    if record.get("reused"):
        head += " (earlier run)"
    cost = f"{record['wall_s']:.1f} s, {record['peak_mem_mb']:.0f} MB"
    if record["status"] != "ok":
        return f"{head} FAILED ({record['failure']}) after {cost}"
    return f"{head} {record['metric']}={record['score']:.4f} in {cost}"


if __name__ == "__main__":
    sys.exit(main())
