"""Image benchmark: `automl fit` on image paths against a linear probe on frozen features.

Data: ``../shared/datasets/images/hymenoptera`` (``labels.csv``: path,label,split; train
and val parts as given). automl runs as a user runs it (CLI subprocesses, the given
budget, a fresh feature cache) and is scored on the val images; the probes are
EfficientNet-Lite features (frozen, pooled, pixels in [-1, 1], centre crop at the
backbone's native resolution) with scikit-learn's default logistic regression on
standardised features, timed from images to predictions on one thread.

    .venv/bin/python benchmarks/image_benchmark.py --budget 300 --out benchmarks/results/images.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "images" / "hymenoptera"
NATIVE = {"lite0": 224, "lite1": 240, "lite2": 260}


def split_tables(folder: Path, data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = pd.read_csv(data / "labels.csv")
    labels["path"] = [str(data / p) for p in labels["path"]]
    train = labels[labels["split"] == "train"][["path", "label"]].reset_index(drop=True)
    val = labels[labels["split"] == "val"][["path", "label"]].reset_index(drop=True)
    train.to_csv(folder / "train.csv", index=False)
    val.to_csv(folder / "val.csv", index=False)
    return train, val


def run_automl(folder: Path, budget: float, val: pd.DataFrame, seed: int,
               fit_args: list[str]) -> dict:
    automl = [sys.executable, "-m", "automl"]
    out = folder / "run"
    env = {**os.environ, "AUTOML_CACHE_DIR": str(folder / "cache")}
    fit = [*automl, "fit", str(folder / "train.csv"), "--target", "label", "--time-budget", str(budget),
           "--output", str(out), "--seed", str(seed), "--progress", "plain", *fit_args]
    t0 = time.monotonic()
    res = subprocess.run(fit, capture_output=True, text=True, env=env)
    fit_s = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"automl fit failed:\n{res.stderr[-3000:]}")
    t0 = time.monotonic()
    res = subprocess.run([*automl, "predict", str(out), str(folder / "val.csv"), "--output",
                          str(folder / "pred.csv")], capture_output=True, text=True, env=env)
    predict_s = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"automl predict failed:\n{res.stderr[-3000:]}")
    pred = pd.read_csv(folder / "pred.csv")
    board = pd.read_csv(out / "leaderboard.csv")
    return {"accuracy": float((pred["prediction"] == val["label"]).mean()), "fit_s": fit_s,
            "predict_s": predict_s, "trials": board["state"].value_counts().to_dict(),
            "board": board.head(8)[[c for c in ("learner", "state", "score", "fit_time_s", "fail_reason")
                                    if c in board.columns]]}


def run_probe(backbone: str, train: pd.DataFrame, val: pd.DataFrame, cache: Path,
              accelerator: str) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from trainers.image_features import frozen_features

    os.environ["AUTOML_CACHE_DIR"] = str(cache)
    t0 = time.monotonic()
    both = pd.concat([train, val], ignore_index=True).rename(columns={"path": "image"})
    feats = frozen_features(both, ["image"], backbone, NATIVE[backbone], accelerator=accelerator)
    features_s = time.monotonic() - t0
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(feats[:len(train)], train["label"])
    acc = float((model.predict(feats[len(train):]) == val["label"]).mean())
    return {"accuracy": acc, "features_s": features_s, "total_s": time.monotonic() - t0}


def _markdown(frame: pd.DataFrame) -> list[str]:
    rows = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r] for r in frame.itertuples(index=False)]
    return ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1],
            *("| " + " | ".join(r) + " |" for r in rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300)
    ap.add_argument("--probes", default="lite0,lite2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DATA, help="a folder holding labels.csv (path,label,split)")
    ap.add_argument("--fit-args", default="", help="more `automl fit` options, e.g. '--accelerator gpu'")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} is absent; the benchmark needs ../shared/datasets/images/hymenoptera")
    import torch

    torch.set_num_threads(1)
    gpu = torch.cuda.is_available()  # the probes' features on the GPU when there is one
    device = f"GPU {torch.cuda.get_device_name(0)}" if gpu else "no GPU"
    command = "python benchmarks/image_benchmark.py " + shlex.join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="automl-imgbench-") as tmp:
        folder = Path(tmp)
        train, val = split_tables(folder, args.data.resolve())
        probes = {b: run_probe(b, train, val, folder / f"probe-cache-{b}", "gpu" if gpu else "cpu")
                  for b in args.probes.split(",")}
        auto = run_automl(folder, args.budget, val, args.seed, shlex.split(args.fit_args))
    lines = [
        "# Images: automl against a linear probe on frozen features (hymenoptera)", "",
        f"Command: `{command}`", "",
        f"Data: hymenoptera, {len(train)} training and {len(val)} validation images (2 classes; "
        "the split of labels.csv). Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {device}; load "
        f"average at the end {os.getloadavg()[0]:.1f} (other work on the machine slows every row).",
        "", "| system | val accuracy | time s | notes |", "|---|---|---|---|",
        f"| automl, `--time-budget {args.budget:g}` | {auto['accuracy']:.4f} | {auto['fit_s']:.0f} fit "
        f"+ {auto['predict_s']:.0f} predict | trials: {auto['trials']} |",
    ]
    for b, p in probes.items():
        lines.append(f"| linear probe, {b} at {NATIVE[b]} px | {p['accuracy']:.4f} | {p['total_s']:.0f} "
                     f"| features {p['features_s']:.0f} s (train + val, {'GPU' if gpu else '1 thread'}) |")
    lines += ["", "automl's leaderboard (top 8; score = cross-validated ROC AUC on the training images):", "",
              *_markdown(auto["board"]), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    np.set_printoptions(precision=4)
    main()
