"""Time the work before the search (target, column kinds, cleaning, leak check) on wide and tall tables.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/prepare_benchmark.py``. Prints one line per table
with seconds per step; the tables are random (no leak), so the leak check reads every column.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from automl.data import prepare_target
from automl.leaks import warn_leaks
from automl.schema import clean_frame, infer_schema


def bench(name: str, df: pd.DataFrame, target: str) -> None:
    t0 = time.perf_counter()
    X, t = prepare_target(df, target)
    t1 = time.perf_counter()
    schema = infer_schema(X)
    t2 = time.perf_counter()
    Xc = clean_frame(X, schema)
    t3 = time.perf_counter()
    warn_leaks(Xc, t)
    t4 = time.perf_counter()
    print(f"{name}: prepare_target {t1 - t0:.2f}s infer_schema {t2 - t1:.2f}s "
          f"clean_frame {t3 - t2:.2f}s leak check {t4 - t3:.2f}s", flush=True)


def main() -> None:
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.integers(0, 5, size=(50, 5000)), columns=[f"c{i}" for i in range(5000)])
    wide["y"] = rng.choice(["a", "b"], 50)
    bench("50x5000 binary", wide, "y")
    wide["y"] = rng.normal(size=50)
    bench("50x5000 regression", wide, "y")
    n = 300_000
    tall = pd.DataFrame({f"n{i}": rng.normal(size=n) for i in range(20)})
    for i in range(10):
        tall[f"k{i}"] = rng.choice([f"v{j}" for j in range(30)], n)
    tall["y"] = rng.choice(["a", "b", "c"], n)
    bench("300000x30 multiclass", tall, "y")
    tall["y"] = rng.normal(size=n)
    bench("300000x30 regression", tall, "y")


if __name__ == "__main__":
    main()
