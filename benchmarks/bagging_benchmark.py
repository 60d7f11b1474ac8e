#!/usr/bin/env python
"""Bagged fold models vs refits on all rows, from the same search.

For each dataset (the cached 80/20 split of `run_peers.py`), one search runs as
`automl fit` runs it (SQLite study, isolated trials, the time budget); then the final
model is built twice from that study: each ensemble member as its bagged fold models,
and each member refitted on all rows. Both are scored on the test split, so the
difference is the final-model step alone, not search noise.

    .venv/bin/python benchmarks/bagging_benchmark.py --budget 60 --out benchmarks/results/bagging.md
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path


BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from peerbench import data as bench_data  # noqa: E402
from peerbench import scoring  # noqa: E402

SMALL = "titanic,german_credit,oil_spill,wine_quality,horse_colic,arrhythmia,abalone,breast_cancer,digits,penguins,ames"


def run_one(spec: bench_data.DatasetSpec, budget: float, seed: int) -> dict:
    from automl import engine
    from automl.config import SearchConfig
    from automl.data import prepare_target, read_table
    from automl.persistence import skops_io
    from automl.controller import Budget, Controller
    from automl.opening import open_study
    from automl.executors import make_executor
    from automl.final_model import build_model

    skops_io()
    split = bench_data.prepare_split(spec, BENCH_DIR / ".cache" / "splits", 0)
    start = time.monotonic()
    config = SearchConfig(task=spec.task, time_budget=budget, seed=seed).validate()
    X, target = prepare_target(read_table(split.train), spec.target, config.task)
    problem = engine.prepare_problem(X, target, config)
    work = Path(tempfile.mkdtemp(prefix="automl-bagbench-"))
    try:
        url = f"sqlite:///{work / 'study.db'}"
        study = open_study(config, problem, url, "automl", False, spec.target)
        clock = Budget(start=start, time_budget=budget, n_trials=None)
        clock.reserve = max(1.0, 0.05 * budget)
        executor = make_executor(config, url)
        executor.start(problem)
        engine._shared_preprocessing(problem, executor, config, clock)
        oof_dir, fold_dir = work / "oof", work / "folds"
        oof_dir.mkdir()
        fold_dir.mkdir()
        Controller(study, problem, config, executor, clock, oof_dir=str(oof_dir),
                   fold_dir=str(fold_dir)).run()
        n_trials = len(study.trials)
        untimed = Budget(start=time.monotonic(), time_budget=None, n_trials=None)
        # the refits fork children, so they run before anything unpickles LightGBM here
        t0 = time.monotonic()
        refit = build_model(problem, dataclasses.replace(config, bagging=False), study, untimed,
                            executor, None, str(oof_dir), None)
        t_refit = time.monotonic() - t0
        t0 = time.monotonic()
        bagged = build_model(problem, config, study, untimed, executor, None, str(oof_dir),
                             str(fold_dir))
        t_bag = time.monotonic() - t0
        executor.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    test = read_table(split.test_features)
    truth = scoring.read_truth(split.test, spec.target, spec.task)
    classes = sorted({scoring.label_key(c) for c in split.classes})
    out = {"dataset": spec.name, "metric": scoring.METRICS[spec.task].name, "trials": n_trials,
           "members": len(refit.members), "bagged_members": sum("bagged_folds" in d for d in bagged.description),
           "build_bagged_s": t_bag, "build_refit_s": t_refit}
    for name, model in (("bagged", bagged), ("refit", refit)):
        preds = model.predict_frame(test)
        path = Path(tempfile.mkstemp(suffix=".csv")[1])
        preds.to_csv(path, index=False)
        out[name] = scoring.score_predictions(path, truth, spec.task, classes)
        path.unlink()
    return out


def main() -> int:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")  # as the CLI does: learners' warnings are not results
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=SMALL, help=f"comma list (default: the k-fold ones, {SMALL})")
    parser.add_argument("--budget", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets-dir", type=Path, default=BENCH_DIR.parent.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args()
    specs = bench_data.select_datasets(bench_data.read_manifest(args.datasets_dir), args.datasets.split(","))
    rows = []
    for spec in specs:
        r = run_one(spec, args.budget, args.seed)
        higher = scoring.METRICS[spec.task].higher_is_better
        gain = (r["bagged"] - r["refit"]) if higher else (r["refit"] - r["bagged"])
        r["better"] = "bagged" if gain > 0 else ("refit" if gain < 0 else "tie")
        rows.append(r)
        print(f"{r['dataset']}: {r['metric']} bagged {r['bagged']:.5g} refit {r['refit']:.5g} ({r['better']}); "
              f"{r['bagged_members']}/{r['members']} members bagged; build {r['build_bagged_s']:.1f} s vs "
              f"{r['build_refit_s']:.1f} s", flush=True)
    lines = [
        "# Bagged fold models vs refit on all rows (same search)", "",
        f"- Command: `.venv/bin/python {' '.join(sys.argv)}`",
        f"- Budget {args.budget:.0f} s per search, seed {args.seed}; test split of `run_peers.py` (split seed 0)",
        "", "| dataset | metric | trials | members (bagged) | bagged | refit | better | build bagged (s) | build refit (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['metric']} | {r['trials']} | {r['members']} ({r['bagged_members']}) | "
                     f"{r['bagged']:.5g} | {r['refit']:.5g} | {r['better']} | {r['build_bagged_s']:.1f} | "
                     f"{r['build_refit_s']:.1f} |")
    wins = sum(r["better"] == "bagged" for r in rows)
    losses = sum(r["better"] == "refit" for r in rows)
    lines += ["", f"Bagged better on {wins}, refit better on {losses}, of {len(rows)} datasets."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
