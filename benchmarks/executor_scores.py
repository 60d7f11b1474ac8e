"""Sanity check: the same search scores alike whether its trials run locally or on Ray.

For each dataset: a fixed 80/20 split, ``automl fit`` with ``--time-budget B`` through the
local executor and through Ray on one local node, each scored on the held-out 20% (ROC AUC
for binary, log loss for multiclass, RMSE for regression, as the 60 s table). Needs
``/work/shared/datasets`` (or ``--datasets-dir``).

Usage: ``python benchmarks/executor_scores.py --datasets titanic,german_credit,abalone --budget 30``
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT)

import numpy as np  # noqa: E402
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from automl import engine  # noqa: E402
from automl.config import SearchConfig  # noqa: E402
from automl.data import prepare_target, read_table  # noqa: E402
from automl.exceptions import AutoMLError  # noqa: E402


def score(task: str, model, X_test, y_test) -> float:
    if task == "regression":
        return float(np.sqrt(mean_squared_error(y_test.astype(float), model.predict_scores(X_test))))
    proba = model.predict_scores(X_test)
    classes = [str(c) for c in model.classes]
    y = np.array([classes.index(str(v)) for v in y_test])
    if task == "binary":
        return float(roc_auc_score(y, proba[:, 1]))
    return float(log_loss(y, proba, labels=list(range(len(classes)))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="titanic,german_credit,abalone")
    ap.add_argument("--budget", type=float, default=30)
    ap.add_argument("--datasets-dir", default="/work/shared/datasets")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    base = Path(args.datasets_dir)
    manifest = {r["name"]: r for r in csv.DictReader((base / "MANIFEST.tsv").open(), delimiter="\t")}
    rows = []
    for name in args.datasets.split(","):
        spec = manifest[name]
        df = read_table(str(base / spec["file"]))
        train, test = train_test_split(df, test_size=0.2, random_state=0,
                                       stratify=df[spec["target"]] if spec["task"] != "regression" else None)
        for executor in ("local", "ray"):
            work = Path(tempfile.mkdtemp(prefix="automl-exscore-"))
            try:
                config = SearchConfig(task=spec["task"], time_budget=args.budget, seed=0,
                                      executor=executor).validate()
                X, target = prepare_target(train.reset_index(drop=True), spec["target"], config.task)
                t0 = time.monotonic()
                try:
                    res = engine.fit(X, target, config, target_name=spec["target"],
                                     storage_url=f"sqlite:///{work / 'study.db'}")
                    n_trials = res.summary["n_trials"]
                    test_score: float | str = round(score(
                        spec["task"], res.model, test.drop(columns=spec["target"]),
                        test[spec["target"]].to_numpy()), 4)
                except AutoMLError as exc:
                    n_trials, test_score = 0, f"failed: {exc}"[:120]
                wall = time.monotonic() - t0
            finally:
                shutil.rmtree(work, ignore_errors=True)
            rows.append({"dataset": name, "task": spec["task"], "executor": executor,
                         "trials": n_trials, "test_score": test_score, "wall_s": round(wall, 1)})
            print(rows[-1], flush=True)
    cols = list(rows[0])
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                      + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])
    print(table)
    if args.out:
        Path(args.out).write_text(f"# Local vs Ray executor: test scores\n\nCommand: `python benchmarks/"
                                  f"executor_scores.py --datasets {args.datasets} --budget {args.budget:g} "
                                  f"--out {args.out}`\n\nROC AUC (binary, higher is better), log loss "
                                  "(multiclass) and RMSE (regression, lower is better) on a fixed 20% "
                                  f"holdout; load average at the end {os.getloadavg()[0]:.1f} on "
                                  f"{os.cpu_count()} cores.\n\n{table}\n")


if __name__ == "__main__":
    main()
