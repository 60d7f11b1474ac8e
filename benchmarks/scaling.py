"""How automl scales with rows and columns: time to the first completed trial, trials per
minute and peak memory of the process tree, beside FLAML's peak memory on the same table.

Rows grow by replicating a real table (``flights`` by default, 327k rows) with a small
jitter on its numeric columns; columns grow by appending copies of a real table's numeric
columns with their rows shuffled (noise columns of the real columns' distributions).

Targets (issue 12): the first trial completes within 10% of the budget at every size, and
peak memory stays within 1.5x FLAML's.

Usage (from the repo root, after ``make dev``; needs ../shared/datasets)::

    .venv/bin/python benchmarks/scaling.py --budget 60 --rows 10000,100000,500000,2000000 \\
        --cols 10,100,1000,5000 --flaml --out benchmarks/results/scaling-60

A quick check that it runs: ``--budget 20 --rows 10000 --cols 10 --out /tmp/scaling``.
Timings are only meaningful on an otherwise idle machine (``other_cpu`` in the table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SHARED = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(BENCH))

from peerbench.proc import _affinity, limited_env, run_limited  # noqa: E402


def _manifest() -> pd.DataFrame:
    return pd.read_csv(SHARED / "MANIFEST.tsv", sep="\t").set_index("name")


def rows_table(name: str, n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, str, str]:
    """``n_rows`` rows of a real table, replicated with a 1% jitter on numeric columns."""
    meta = _manifest().loc[name]
    df = pd.read_csv(SHARED / meta["file"], low_memory=False)
    rng = np.random.default_rng(seed)
    if n_rows <= len(df):
        return df.sample(n_rows, random_state=seed).reset_index(drop=True), meta["target"], meta["task"]
    reps = int(np.ceil(n_rows / len(df)))
    big = pd.concat([df] * reps, ignore_index=True).iloc[:n_rows].copy()
    target = meta["target"]
    for col in big.columns:
        if col != target and pd.api.types.is_float_dtype(big[col]):
            scale = float(np.nanstd(big[col].to_numpy())) or 1.0
            big[col] = big[col] + rng.normal(scale=0.01 * scale, size=len(big))
    return big, target, meta["task"]


def cols_table(name: str, n_cols: int, n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, str, str]:
    """A real table's first ``n_rows`` rows, widened to ``n_cols`` features with shuffled
    copies of its numeric columns (or narrowed to its first ``n_cols`` features)."""
    meta = _manifest().loc[name]
    df = pd.read_csv(SHARED / meta["file"], low_memory=False).head(n_rows).reset_index(drop=True)
    target = meta["target"]
    features = [c for c in df.columns if c != target]
    if n_cols <= len(features):
        return df[features[:n_cols] + [target]], target, meta["task"]
    rng = np.random.default_rng(seed)
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(df[c])]
    extra = {}
    for i in range(n_cols - len(features)):
        src = df[numeric[i % len(numeric)]].to_numpy()
        extra[f"noise_{i}"] = src[rng.permutation(len(src))]
    return pd.concat([df, pd.DataFrame(extra)], axis=1), target, meta["task"]


def _study_figures(db: Path, started_wall: float, read_only: bool = False) -> dict[str, float | None]:
    """First completed trial (seconds after the process started) and trials per minute.
    ``read_only``: while the run writes the study (nothing found yet is not an error)."""
    if not db.is_file():
        return {"first_trial_s": None, "trials_per_min": None, "n_trials": 0}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro" if read_only else db, uri=read_only,
                             timeout=0.5) as con:
            rows = con.execute("SELECT state, datetime_start, datetime_complete FROM trials").fetchall()
    except sqlite3.Error:
        if not read_only:
            raise
        return {"first_trial_s": None, "trials_per_min": None, "n_trials": 0}
    done = [(s, datetime.fromisoformat(a), datetime.fromisoformat(b))
            for s, a, b in rows if b is not None and s in ("COMPLETE", "PRUNED", "FAIL")]
    completes = sorted(b.timestamp() for s, _, b in done if s == "COMPLETE")
    if not done:
        return {"first_trial_s": None, "trials_per_min": 0.0, "n_trials": 0}
    first_start = min(a.timestamp() for _, a, _ in done)
    last_end = max(b.timestamp() for _, _, b in done)
    minutes = max(last_end - first_start, 1e-6) / 60
    return {"first_trial_s": (completes[0] - started_wall) if completes else None,
            "trials_per_min": len(done) / minutes, "n_trials": len(done)}


def _fit_cmd(train: Path, target: str, task: str, budget: float, out: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "automl"), "fit", str(train), "--target", target,
            "--task", task, "--time-budget", str(budget), "--output", str(out), "--force",
            "--progress", "none"]


def run_automl(train: Path, target: str, task: str, budget: float, work: Path, cores: int) -> dict:
    out = work / "automl-out"
    cmd = _fit_cmd(train, target, task, budget, out)
    started = time.time()
    res = run_limited(cmd, cwd=ROOT, log_prefix=work / "automl", timeout_s=budget * 3 + 120,
                      cores=cores)
    return {"returncode": res.returncode, "wall_s": res.wall_s, "peak_mb": res.peak_rss_mb,
            "peak_pss_mb": res.peak_pss_mb, "other_cpu": res.other_cpu_frac,
            **_study_figures(out / "study.db", started)}


def first_trial_only(train: Path, target: str, task: str, budget: float, work: Path,
                     cores: int) -> float | None:
    """One more start of the same run, stopped as soon as its first trial completes: the
    seconds from its start to that (None: none within the budget). The process group is
    killed by its own id (it runs in a session of its own)."""
    out = work / "first-out"
    shutil.rmtree(out, ignore_errors=True)  # (the last one's study would read as this one's)
    cpus = _affinity(cores)
    started = time.time()
    popen = subprocess.Popen(_fit_cmd(train, target, task, budget, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, env=limited_env(cores), start_new_session=True,
                             preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    first = None
    try:
        while first is None and popen.poll() is None and time.time() - started < budget:
            time.sleep(0.05)
            first = _study_figures(out / "study.db", started, read_only=True)["first_trial_s"]
    finally:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait()
    return first


def run_flaml(train: Path, target: str, task: str, budget: float, work: Path, cores: int) -> dict:
    from peerbench.envs import ensure_env, venv_python

    # absolute: the adapter runs in benchmarks/peers, where a relative path is not found
    train, work = train.resolve(), work.resolve()
    ensure_env("flaml")
    df = pd.read_csv(train, nrows=200)
    test = work / "test.csv"
    df.drop(columns=[target]).to_csv(test, index=False)
    cmd = [str(venv_python("flaml")), str(BENCH / "peers" / "flaml_runner.py"), "--train", str(train),
           "--test", str(test), "--target", target, "--task", task, "--budget", str(budget),
           "--n-jobs", str(cores), "--workdir", str(work), "--output", str(work / "flaml.csv")]
    res = run_limited(cmd, cwd=BENCH / "peers", log_prefix=work / "flaml",
                      timeout_s=budget * 3 + 120, cores=cores)
    return {"returncode": res.returncode, "wall_s": res.wall_s, "peak_mb": res.peak_rss_mb,
            "peak_pss_mb": res.peak_pss_mb}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=60)
    ap.add_argument("--rows", default="10000,100000,500000,2000000")
    ap.add_argument("--rows-dataset", default="flights")
    ap.add_argument("--cols", default="10,100,1000,5000")
    ap.add_argument("--cols-dataset", default="adult")
    ap.add_argument("--cols-rows", type=int, default=5000, help="rows of the widened tables")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--flaml", action="store_true", help="also run FLAML for its peak memory")
    ap.add_argument("--first-runs", type=int, default=3,
                    help="times the first trial is timed at each size (the full run, then runs "
                         "stopped at their first trial); the table gives the median and range")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"scaling: {SHARED} is absent; it holds the real tables this benchmark grows",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [("rows", int(n)) for n in args.rows.split(",") if n] + \
            [("cols", int(n)) for n in args.cols.split(",") if n]
    results = []
    for axis, size in cases:
        work = args.out / "work" / f"{axis}-{size}"
        work.mkdir(parents=True, exist_ok=True)
        if axis == "rows":
            df, target, task = rows_table(args.rows_dataset, size)
        else:
            df, target, task = cols_table(args.cols_dataset, size, args.cols_rows)
        train = work / "train.csv"
        df.to_csv(train, index=False)
        row = {"axis": axis, "size": size, "rows": len(df), "cols": df.shape[1] - 1,
               "automl": run_automl(train, target, task, args.budget, work, args.cores)}
        # the first trial is a few seconds on a shared machine: its spread from run to run
        # (about 1 s at 2,000,000 rows) is as large as the margin, so it is timed again
        firsts = [row["automl"]["first_trial_s"]] + [
            first_trial_only(train, target, task, args.budget, work, args.cores)
            for _ in range(args.first_runs - 1)]
        row["automl"]["first_trial_runs_s"] = firsts
        if args.flaml:
            row["flaml"] = run_flaml(train, target, task, args.budget, work, args.cores)
        results.append(row)
        print(json.dumps(row), flush=True)
        train.unlink()
    (args.out / "results.json").write_text(json.dumps(
        {"budget": args.budget, "cores": args.cores, "command": " ".join(sys.argv),
         "results": results}, indent=2))
    (args.out / "results.md").write_text(_table(results, args.budget, " ".join(sys.argv)))
    return 0


def _table(results: list[dict], budget: float, command: str) -> str:
    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    lines = [f"# Scaling at a {budget:g} s budget", "", f"Command: `{command}`", "",
             "Peak memory of the process tree, MB: the sum of RSS over its processes (pages that "
             "forked trial processes share with the driver count once per process) and the sum "
             "of PSS (shared pages divided among the processes: what the tree takes from the "
             "machine). Ratios are automl / FLAML. First trial: seconds from the start of "
             "`automl fit` to its first completed trial; the median of the runs (the full run "
             "and runs stopped at their first trial, `--first-runs`), with their range.", "",
             "| axis | rows | cols | first trial s (target <= 10%) | trials/min | wall s | "
             "peak RSS | FLAML RSS | ratio | peak PSS | FLAML PSS | ratio (target <= 1.5) | "
             "other CPU | exit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        a, fl = r["automl"], r.get("flaml") or {}
        ratio = a["peak_mb"] / fl["peak_mb"] if fl.get("peak_mb") else None
        pss_ratio = a.get("peak_pss_mb", 0) / fl["peak_pss_mb"] if fl.get("peak_pss_mb") else None
        runs = a.get("first_trial_runs_s") or [a["first_trial_s"]]
        timed = sorted(v for v in runs if v is not None)
        first = float(np.median(timed)) if timed and len(timed) == len(runs) else None
        ok = "" if first is None else (" ok" if first <= 0.1 * budget else " over")
        spread = f" ({f(timed[0])}-{f(timed[-1])}, {len(runs)} runs)" if len(runs) > 1 and timed else ""
        lines.append(f"| {r['axis']} | {r['rows']} | {r['cols']} | {f(first)}{ok}{spread} | "
                     f"{f(a['trials_per_min'])} | {f(a['wall_s'])} | {f(a['peak_mb'], '.0f')} | "
                     f"{f(fl.get('peak_mb'), '.0f')} | {f(ratio, '.2f')} | "
                     f"{f(a.get('peak_pss_mb'), '.0f')} | {f(fl.get('peak_pss_mb'), '.0f')} | "
                     f"{f(pss_ratio, '.2f')} | "
                     f"{f(100 * a['other_cpu'], '.0f')}% | {a['returncode']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
