"""Shared fixtures: small real-shaped data made here, and the shared benchmark datasets."""

from __future__ import annotations

import os
import signal
import sys

# A suite started in the background of a non-interactive shell (`make test &`, some CI
# runners) inherits SIGINT ignored, and so would every automl it starts: the Ctrl-C tests
# would then see runs that never stop. Python's own handler is reset to the default in the
# processes it starts, so they get Ctrl-C as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# OpenMP threads that spin while waiting crawl when tests share the two cores (as the CLI sets).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Text columns get TF-IDF only unless a test asks for sentence embeddings (tests/test_text.py):
# loading the backbone would add seconds to every search over the text column of mixed_frame.
os.environ.setdefault("AUTOML_TEXT_BACKBONE", "none")
# Image features and text embeddings are cached on disk across runs; tests use a fresh cache of
# their own (never the user's ~/.cache/automl), so a test cannot pass on an earlier run's cache.
if "AUTOML_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["AUTOML_CACHE_DIR"] = tempfile.mkdtemp(prefix="automl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AUTOML_CACHE_DIR"], True)
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
EXAMPLE = ROOT / "examples" / "penguins.csv"
AUTOML = str(Path(sys.executable).parent / "automl")


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/datasets, or skip with the reason."""
    path = SHARED / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"../shared/datasets/{name}.csv is absent (it sits beside the clone in CI only)")
    return path


@pytest.fixture
def mixed_frame() -> pd.DataFrame:
    """300 rows with numeric, categorical, boolean, datetime, text, id and constant columns."""
    rng = np.random.default_rng(0)
    n = 300
    x1 = rng.normal(size=n)
    cat = rng.choice(["red", "green", "blue"], size=n)
    y = (x1 + (cat == "red") * 1.5 + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    words = np.array(["good", "bad", "great", "poor", "fine", "awful", "nice", "dull"])
    text = [" ".join(rng.choice(words, size=5)) for _ in range(n)]
    df = pd.DataFrame({
        "row_id": np.arange(n),
        "x1": x1,
        "x2": rng.uniform(size=n),
        "color": cat,
        "flag": rng.choice(["yes", "no"], size=n),
        "when": pd.date_range("2024-01-01", periods=n, freq="D").astype(str),
        "review": text,
        "const": 7,
        "label": np.where(y == 1, "pos", "neg"),
    })
    df.loc[rng.choice(n, 30, replace=False), "x2"] = np.nan
    df.loc[rng.choice(n, 20, replace=False), "color"] = np.nan
    return df


@pytest.fixture
def regression_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 250
    X = rng.normal(size=(n, 4))
    cat = rng.choice(["a", "b", "c", "d"], size=n)
    y = X[:, 0] * 3 + X[:, 1] ** 2 + (cat == "a") * 2 + rng.normal(scale=0.3, size=n)
    df = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"])
    df["group"] = cat
    df["target"] = y
    return df


@pytest.fixture
def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "ignore"
    return env
