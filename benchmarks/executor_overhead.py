"""Trials per minute and overhead per trial of each executor, on the same search.

The search: ``examples/penguins.csv`` (344 rows, 5-fold CV), logistic regression and k-NN,
``--n-trials N``, the random sampler (the same configurations whatever the order), no
ensemble. Executors: in-process (1 at a time), local processes (``--n-jobs 2``), Ray on one
local node (2 CPUs) and Ray on two loopback nodes of 1 CPU each (``ray.cluster_utils``).

- ``search_s``: first trial start to last trial end (from the study);
- ``trials_per_min``: finished trials / ``search_s``;
- ``overhead_ms``: per trial, its time from ``ask`` to ``tell`` minus the time spent
  fitting (the trial's ``fit_time``), averaged: forking, shipping, scheduling, pruning
  round trips, result transfer and bookkeeping;
- ``fixed_s``: the rest of the run (starting or joining Ray, the refit, stopping).

Usage: ``python benchmarks/executor_overhead.py --n-trials 40 --out benchmarks/results/executors.md``
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Ray reads these when it is imported: loopback only, token authentication
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT)  # Ray workers import automl from here

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from automl import engine  # noqa: E402
from automl.config import SearchConfig  # noqa: E402
from automl.data import prepare_target  # noqa: E402


def run(name: str, n_trials: int, work: Path, **options) -> dict:
    df = pd.read_csv(ROOT / "examples" / "penguins.csv")
    X, target = prepare_target(df, "species")
    config = SearchConfig(n_trials=n_trials, time_budget=None, include=["logistic", "knn"],
                          sampler="random", ensemble=False, seed=0, **options)
    t0 = time.monotonic()
    res = engine.fit(X, target, config, target_name="species",
                     storage_url=f"sqlite:///{work / (name + '.db')}")
    wall = time.monotonic() - t0
    trials = [t for t in res.study.trials if t.state.is_finished()]
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    search_s = (end - start).total_seconds()
    overhead = [(t.datetime_complete - t.datetime_start).total_seconds()
                - float(t.user_attrs.get("fit_time", 0.0)) for t in trials]
    return {"executor": name, "trials": len(trials),
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "search_s": round(search_s, 1), "trials_per_min": round(len(trials) / search_s * 60, 1),
            "overhead_ms": round(1000 * float(np.mean(overhead)), 0),
            "overhead_p90_ms": round(1000 * float(np.percentile(overhead, 90)), 0),
            "fixed_s": round(wall - search_s, 1), "score": round(res.summary["best"]["score"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="automl-exbench-"))
    rows = []
    load0 = os.getloadavg()[0]
    try:
        rows.append(run("inprocess", args.n_trials, work, executor="inprocess"))
        rows.append(run("local, --n-jobs 2", args.n_trials, work, executor="local", n_jobs=2))
        rows.append(run("ray, 1 node (2 CPUs)", args.n_trials, work, executor="ray"))
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, shutdown_at_exit=False,
                          head_node_args={"num_cpus": 0, "object_store_memory": 100 * 2**20})
        try:
            for _ in range(2):
                cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
            cluster.wait_for_nodes()
            rows.append(run("ray, 2 nodes (1 CPU each)", args.n_trials, work, executor="ray",
                            ray_address=cluster.address))
        finally:
            cluster.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = list(rows[0])
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])
    note = (f"\n\n{args.n_trials} trials each; machine: {os.cpu_count()} cores, load average "
            f"{load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other jobs were "
            "running: timings are indicative).\n")
    print(table + note)
    if args.out:
        Path(args.out).write_text("# Executor overhead\n\nCommand: `python benchmarks/executor_overhead.py "
                                  f"--n-trials {args.n_trials} --out {args.out}`\n\n" + table + note)


if __name__ == "__main__":
    main()
