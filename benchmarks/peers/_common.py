"""Shared I/O for the peer adapters. Runs inside each peer's own venv: needs only pandas.

Contract (the same as `automl predict`): the predictions CSV has one row per test row,
a `prediction` column and, for classification, one `proba_<class>` column per class,
with the class label as it appears in the data.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

TASKS = ("binary", "multiclass", "regression")


@dataclass
class PeerJob:
    train: pd.DataFrame  # features only
    y: pd.Series  # labels as text for classification, floats for regression
    test: pd.DataFrame  # features only, same columns as train
    task: str
    target: str
    budget: float
    seed: int
    n_jobs: int
    workdir: Path
    output: Path

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"


def parse_args(description: str, extra=None) -> argparse.Namespace:
    """The adapters' common flags; ``extra(parser)`` adds an adapter's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--train", type=Path, required=True, help="training CSV with the target")
    parser.add_argument("--test", type=Path, required=True, help="test CSV without the target")
    parser.add_argument("--target", required=True)
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--budget", type=float, required=True, help="time budget in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, required=True, help="scratch directory")
    parser.add_argument("--output", type=Path, required=True, help="predictions CSV to write")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def load_job(args: argparse.Namespace, legacy_strings: bool = False) -> PeerJob:
    """Read the split. `legacy_strings` makes pandas>=3 read text as object dtype."""
    if legacy_strings and hasattr(pd.options, "future") and hasattr(pd.options.future, "infer_string"):
        pd.options.future.infer_string = False
    target_dtype = float if args.task == "regression" else str
    train = pd.read_csv(args.train, dtype={args.target: target_dtype})
    test = pd.read_csv(args.test)
    if args.target not in train.columns:
        raise SystemExit(f"target {args.target!r} not in {args.train}")
    y = train.pop(args.target)
    missing = [c for c in train.columns if c not in test.columns]
    if missing:
        raise SystemExit(f"test file lacks training columns: {missing[:5]}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    return PeerJob(
        train=train, y=y, test=test[train.columns], task=args.task, target=args.target,
        budget=args.budget, seed=args.seed, n_jobs=args.n_jobs, workdir=args.workdir,
        output=args.output,
    )


def write_predictions(job: PeerJob, prediction: Any, proba: pd.DataFrame | None) -> None:
    """Write the contract CSV. `proba` columns must be the class labels."""
    frame = pd.DataFrame({"prediction": list(prediction)})
    if job.is_classification:
        if proba is None:
            raise ValueError("classification needs class probabilities")
        for label in proba.columns:
            frame[f"proba_{label}"] = proba[label].to_numpy()
    if len(frame) != len(job.test):
        raise ValueError(f"{len(frame)} predictions for {len(job.test)} test rows")
    job.output.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(job.output, index=False)


def write_info(job: PeerJob, info: dict[str, Any]) -> None:
    """Side facts for results.json (chosen model, fit/predict seconds, ...)."""
    (job.output.parent / "info.json").write_text(json.dumps(info, indent=2, default=str))


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        elapsed, self.start = now - self.start, now
        return round(elapsed, 3)
