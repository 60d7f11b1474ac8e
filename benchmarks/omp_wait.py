"""LightGBM's trial under OMP_WAIT_POLICY=PASSIVE (what the CLI set before session 8) against
libgomp's default, as a ratio of wall times in one run.

PASSIVE puts OpenMP worker threads to sleep at every barrier; LightGBM passes several
barriers a boosting round, so each round pays futex sleeps and wake-ups (strace: 175,000
futex calls in a 30 s fit). The policy is read when the OpenMP runtime starts, so each
setting runs in its own process.

Usage (from the repo root, after ``make dev``; needs ../shared/datasets)::

    .venv/bin/python benchmarks/omp_wait.py --rows 100000 --out benchmarks/results/omp_wait.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import scaling
from automl.config import SearchConfig
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.objective import TrialSpec, evaluate
from automl.registry import get_trainer

df, target, task = scaling.rows_table("flights", int(sys.argv[2]))
X, t = prepare_target(df, target)
problem = prepare_problem(X, t, SearchConfig(time_budget=600, include=["lightgbm"]).validate())
params = dict(get_trainer("lightgbm").default(problem.info))
spec = TrialSpec(number=0, learner="lightgbm", params=params, seed=0, n_threads=2,
                 soft_s=600, limit_s=600)

class Quiet:  # no pruner: the fit alone
    def report(self, step, value):
        return False

t0 = time.perf_counter()
res = evaluate(problem, spec, Quiet())
print(json.dumps({"wall_s": time.perf_counter() - t0, "fit_s": res["fit_time"],
                  "rounds": res.get("n_iterations"), "value": res["value"]}))
"""


def run(policy: str | None, rows: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, str(BENCH), str(rows)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = {p or "default": [run(p, args.rows) for _ in range(args.repeats)]
               for p in (None, "PASSIVE")}
    best = {p: min(r["fit_s"] for r in runs) for p, runs in results.items()}
    lines = [f"# OMP_WAIT_POLICY and LightGBM's first trial ({args.rows:,} flights rows)", "",
             f"Command: `.venv/bin/python benchmarks/omp_wait.py --rows {args.rows}"
             + (f" --out {args.out}`" if args.out else "`"), "",
             "| policy | fit s (best of runs) | runs | rounds | validation RMSE |", "|---|---|---|---|---|"]
    for p, runs in results.items():
        fits = ", ".join(f"{r['fit_s']:.1f}" for r in runs)
        lines.append(f"| {p} | {best[p]:.1f} | {fits} | {runs[0]['rounds']} | {runs[0]['value']:.4f} |")
    lines += ["", f"Ratio PASSIVE / default: **{best['PASSIVE'] / best['default']:.2f}**"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
