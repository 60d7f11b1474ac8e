"""Does pruning pay? The same search with ``--pruner median`` and with ``--pruner none``.

For each dataset: the same seed, the same random sampler, the same number of trials over
LightGBM and the Lightning MLP (both report every few rounds / every epoch), run once with
the median pruner and once without. Reported: total wall time (search, refit included),
pruned trials, and the best validation score, with the ratios median / none.

Datasets come from ../shared/datasets (MANIFEST.tsv); a missing one is skipped with a
message. Rows are capped (fixed-seed sample) and validation is a holdout, so the whole
benchmark stays around ten minutes on two cores:

    .venv/bin/python benchmarks/pruning_benchmark.py --datasets adult,california_housing,wine_quality \
        --n-trials 30 --max-rows 2000 --out benchmarks/results/pruning.md
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"

from automl import engine  # noqa: E402
from automl.config import SearchConfig  # noqa: E402
from automl.data import prepare_target  # noqa: E402
from automl.study import best_trials  # noqa: E402


def manifest() -> dict[str, dict[str, str]]:
    path = DATASETS / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh, delimiter="\t")}


def run_one(frame: pd.DataFrame, target: str, task: str, pruner: str, args: argparse.Namespace) -> dict:
    X, t = prepare_target(frame, target, task)
    config = SearchConfig(n_trials=args.n_trials, time_budget=None, sampler="random", pruner=pruner,
                          seed=args.seed, include=args.learners.split(","), cv=args.cv, ensemble=False,
                          n_jobs=1)
    # In-memory study: trials run in this process. (With an SQLite study the trials run in
    # forked children, and a child forked while Optuna's heartbeat thread holds SQLite's
    # allocator mutex can deadlock; see the report in results/pruning.md.)
    t0 = time.perf_counter()
    res = engine.fit(X, t, config, target_name=target, storage_url=None, study_name="bench")
    wall = time.perf_counter() - t0
    trials = res.study.get_trials(deepcopy=False)
    best = best_trials(res.study, res.problem.metric, 1)[0]
    out = {"wall_s": wall, "metric": res.problem.metric.name,
           "greater": res.problem.metric.greater_is_better, "best": float(best.value),
           "best_learner": best.params["learner"]}
    for learner in args.learners.split(","):
        mine = [tr for tr in trials if tr.params.get("learner") == learner]
        out[f"{learner}_trials"] = len(mine)
        out[f"{learner}_pruned"] = sum(tr.state.name == "PRUNED" for tr in mine)
    out["pruned"] = sum(tr.state.name == "PRUNED" for tr in trials)
    out["failed"] = sum(tr.state.name == "FAIL" for tr in trials)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="adult,california_housing,wine_quality")
    ap.add_argument("--n-trials", type=int, default=30)
    ap.add_argument("--max-rows", type=int, default=2000)
    ap.add_argument("--learners", default="lightgbm,mlp")
    ap.add_argument("--cv", default="holdout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = ap.parse_args(argv)

    known = manifest()
    rows = []
    for name in args.datasets.split(","):
        meta = known.get(name)
        path = DATASETS / f"{name}.csv"
        if meta is None or not path.is_file():
            print(f"skipping {name}: ../shared/datasets/{name}.csv or its MANIFEST row is absent", file=sys.stderr)
            continue
        frame = pd.read_csv(path)
        if len(frame) > args.max_rows:
            frame = frame.sample(args.max_rows, random_state=args.seed).reset_index(drop=True)
        result = {}
        for pruner in ("median", "none"):
            result[pruner] = run_one(frame, meta["target"], meta["task"], pruner, args)
            print(name, pruner, {k: (round(v, 4) if isinstance(v, float) else v)
                                 for k, v in result[pruner].items()}, file=sys.stderr, flush=True)
        rows.append((name, len(frame), result))
    if not rows:
        print("no dataset found: nothing to report", file=sys.stderr)
        return

    learners = args.learners.split(",")
    head = ["dataset (rows)", "metric", "wall s median / none", "time ratio",
            "trials median / none (" + " + ".join(learners) + ")",
            "pruned median / none (" + " + ".join(learners) + ")", "best median", "best none",
            "best ratio", "best learner median / none"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    time_ratios = []
    for name, n, r in rows:
        m, z = r["median"], r["none"]
        pruned = " + ".join(str(m[f"{lr}_pruned"]) for lr in learners)
        split = " / ".join(" + ".join(str(r_[f"{lr}_trials"]) for lr in learners) for r_ in (m, z))
        time_ratios.append(m["wall_s"] / z["wall_s"])
        direction = "higher" if m["greater"] else "lower"
        lines.append(f"| {name} ({n}) | {m['metric']} ({direction} is better) | {m['wall_s']:.1f} / {z['wall_s']:.1f} "
                     f"| {time_ratios[-1]:.2f} | {split} | {m['pruned']} ({pruned}) / {z['pruned']} "
                     f"| {m['best']:.5g} | {z['best']:.5g} | {m['best'] / z['best']:.4f} "
                     f"| {m['best_learner']} / {z['best_learner']} |")
    cmd = " ".join([".venv/bin/python", "benchmarks/pruning_benchmark.py", *map(shlex.quote, sys.argv[1:])])
    text = "\n".join([
        "# Pruning: median pruner vs none", "",
        f"Command: `{cmd}`", "",
        f"Same search both ways: {args.n_trials} trials, random sampler, seed {args.seed}, learners "
        f"{', '.join(learners)}, validation {args.cv}, rows capped at {args.max_rows} (fixed-seed sample), "
        "one worker, in-memory study (trials in this process), no ensemble. Queued default/portfolio configurations "
        "run first in both. The median pruner compares a trial with earlier trials of the same learner "
        "at the same step (boosting round / epoch), from the 5th trial of that learner on.", "",
        *lines, "",
        f"Geometric mean time ratio (median / none): {float(np.exp(np.mean(np.log(time_ratios)))):.2f}. "
        "Best ratio: best score with pruning / without (for a lower-is-better metric below 1 is better).",
        f"Machine: {os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f} "
        "(other work on the machine adds noise to wall times).", "",
    ])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
