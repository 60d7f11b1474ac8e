"""Training throughput of the `mlp` learner: rows per second and epoch time, CPU vs GPU.

Runs the real trainer (`trainers.mlp.trainer.MLPTrainer`, the path a trial or a refit
takes: preprocessing, Lightning, AdamW with warmup + cosine, gradient clipping) on a
synthetic table with numeric and categorical columns. The epoch time is the slope
between a 1-epoch and an N-epoch fit, so start-up (preprocessing, building the
Lightning trainer) is left out; it is reported separately. The CPU part always runs,
the GPU part (bf16 mixed precision) when CUDA is visible.

    .venv/bin/python benchmarks/gpu_throughput.py --rows 50000 --epochs 4 \
        --batch-sizes 256,1024,4096 --out benchmarks/results/gpu_throughput.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automl.config import SearchConfig  # noqa: E402
from automl.contracts import FitData, NullReporter  # noqa: E402
from automl.data import prepare_target  # noqa: E402
from automl.engine import prepare_problem  # noqa: E402
from automl.registry import get_trainer  # noqa: E402


def synthetic(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 32))
    cats = {f"c{i}": rng.integers(0, card, size=n) for i, card in enumerate((5, 20, 60, 150))}
    logit = X[:, 0] * X[:, 1] + np.sin(X[:, 2] * 2) + 0.5 * X[:, 3] + (cats["c1"] % 3 == 0) - 0.5
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(32)])
    for name, codes in cats.items():
        df[name] = np.char.add("L", codes.astype(str))
    df["y"] = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return df


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def fit_seconds(problem, params: dict, epochs: int, accelerator: str, threads: int) -> tuple[float, float]:
    """Wall and CPU (all threads of this process) seconds of one refit-style fit."""
    trainer = get_trainer("mlp")
    data = FitData(problem.X, problem.y, None, None, problem.info, problem.metric, seed=0,
                   n_threads=threads, accelerator=accelerator, n_iterations=epochs)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit({**params, "epochs": epochs}, data, NullReporter())
    return time.perf_counter() - t0, time.process_time() - c0


def median_fit(problem, params: dict, epochs: int, accelerator: str, threads: int,
               repeats: int) -> tuple[float, float]:
    runs = [fit_seconds(problem, params, epochs, accelerator, threads) for _ in range(repeats)]
    return float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the long fit (the short one has 1)")
    ap.add_argument("--batch-sizes", default="256,1024,4096")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                    help="comma-separated CPU thread counts to measure (the GPU runs use the first)")
    ap.add_argument("--repeats", type=int, default=3, help="fits per measurement (the median is kept)")
    ap.add_argument("--devices", default="auto", help="cpu, gpu, or auto (cpu, plus gpu when CUDA is visible)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args(argv)

    import torch

    X, t = prepare_target(synthetic(args.rows), "y", "binary")
    problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
    devices = ["cpu", "gpu"] if args.devices == "auto" else args.devices.split(",")
    if "gpu" in devices and not torch.cuda.is_available():
        print("no CUDA device visible: skipping the GPU part", file=sys.stderr)
        devices = [d for d in devices if d != "gpu"]
    base = {"depth": args.depth, "width": args.width, "dropout": 0.1, "norm": "batch",
            "learning_rate": 3e-3, "weight_decay": 1e-4, "class_weight": None}
    threads = sorted({int(t) for t in args.threads.split(",")})
    runs = [("cpu", t) for t in threads] if "cpu" in devices else []
    if "gpu" in devices:
        runs.append(("gpu", threads[0]))
    rows = []
    for device, n_threads in runs:
        gpu_name = torch.cuda.get_device_name(0) if device == "gpu" else None
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            params = {**base, "batch_size": bs}
            fit_seconds(problem, params, 1, device, n_threads)  # warm-up (caches, CUDA context)
            short, short_cpu = median_fit(problem, params, 1, device, n_threads, args.repeats)
            long, long_cpu = median_fit(problem, params, args.epochs, device, n_threads, args.repeats)
            epoch = max(1e-9, (long - short) / (args.epochs - 1))
            epoch_cpu = max(0.0, (long_cpu - short_cpu) / (args.epochs - 1))
            rows.append({
                "device": f"gpu ({gpu_name}, bf16-mixed)" if device == "gpu"
                else f"cpu ({n_threads} thread{'s' if n_threads > 1 else ''}, fp32)",
                "batch size": bs, "epoch s": round(epoch, 3), "epoch CPU s": round(epoch_cpu, 3),
                "rows/s": int(round(args.rows / epoch)), "start-up s": round(max(0.0, short - epoch), 2),
            })
            print(rows[-1], file=sys.stderr)
    cmd = " ".join([".venv/bin/python", "benchmarks/gpu_throughput.py", *map(shlex.quote, sys.argv[1:])])
    md = [
        "# mlp training throughput: CPU vs GPU", "",
        f"Command: `{cmd}`", "",
        f"Data: {args.rows} rows, 32 numeric + 4 categorical columns (embedded), binary target; "
        f"net: {args.depth} x {args.width}, BatchNorm, dropout 0.1; AdamW, warmup + cosine, clipping.",
        f"Epoch time = (fit of {args.epochs} epochs - fit of 1 epoch) / {args.epochs - 1}, medians of "
        f"{args.repeats} fits each; epoch CPU s is the same difference in process CPU time (all threads); "
        "rows/s = rows / epoch time; start-up = preprocessing and Lightning set-up of one fit.", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; CUDA visible: {torch.cuda.is_available()}; "
        f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine slows the CPU rows).", "",
        markdown_table(rows), "",
    ]
    if "gpu" not in devices:
        md.append("GPU rows: not measured here (no CUDA device); run the same command on a GPU machine.")
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
