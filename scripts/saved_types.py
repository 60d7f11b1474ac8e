"""List what a learner's saved models name that the model-file allowlist does not hold yet.

Fits each given learner (default: every built-in one) on synthetic data with every column
kind, for each task it supports, with its default, portfolio and a few random
configurations, saves each fitted estimator (and a bag of two) with skops, and prints, per
learner, the type and function names its files use that are not on the allowlist: what its
trainer should declare in ``saved_types`` / ``saved_functions``. An empty list means its
models load. Run from the repository root:

    PYTHONPATH=. .venv/bin/python scripts/saved_types.py lightgbm knn --random 4
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import zipfile
from collections import defaultdict

import numpy as np
import optuna
import pandas as pd

from automl.allowlist import trainer_allowlist
from automl.config import SearchConfig
from automl.contracts import FitData, NullReporter
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.ensemble import FoldBag
from automl.persistence import skops_io
from automl.registry import builtin, get_trainer


def frame(task: str, n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    words = np.array(["good", "bad", "great", "poor", "fine", "dull"])
    df = pd.DataFrame({
        "x": x, "z": rng.uniform(size=n), "color": rng.choice(["red", "green", "blue"], n),
        "code": [f"c{v}" for v in rng.integers(0, 300, n)], "flag": rng.choice(["yes", "no"], n),
        "when": pd.date_range("2024-01-01", periods=n, freq="D").astype(str),
        "review": [" ".join(rng.choice(words, 4)) for _ in range(n)],
    })
    df.loc[rng.choice(n, 40, replace=False), "z"] = np.nan
    score = x + rng.normal(scale=0.5, size=n)
    df["y"] = {"binary": np.where(score > 0, "pos", "neg"),
               "multiclass": np.select([score < -0.5, score < 0.5], ["a", "b"], "c"),
               "regression": score}[task]
    return df


def names_in(data: bytes) -> set[tuple[str, str]]:
    """(loader, module.name) of every node of a skops file."""
    out: set[tuple[str, str]] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "__loader__" in node:
                out.add((node["__loader__"], f"{node.get('__module__')}.{node.get('__class__')}"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("learners", nargs="*", help="learner names (default: the built-in ones)")
    parser.add_argument("--random", type=int, default=2, help="random configurations per task")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sio, allow = skops_io(), trainer_allowlist()
    missing: dict[str, set[str]] = defaultdict(set)
    for task in ("binary", "multiclass", "regression"):
        X, t = prepare_target(frame(task), "y")
        problem = prepare_problem(X, t, SearchConfig(n_trials=1).validate())
        for name in args.learners or builtin():
            if name == "mlp" and importlib.util.find_spec("lightning") is None:
                continue
            trainer = get_trainer(name)
            if problem.info.task not in trainer.tasks:
                continue
            configs = [dict(trainer.default(problem.info))]
            configs += [dict(p) for p in trainer.portfolio(problem.info)]
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            for _ in range(args.random):
                trial = study.ask(dict(trainer.space(problem.info)))
                configs.append(dict(trial.params))
                study.tell(trial, 0.0)
            for params in configs:
                data = FitData(problem.X, problem.y, None, None, problem.info, problem.metric)
                est = trainer.fit(params, data, NullReporter()).estimator
                for obj in (est, FoldBag([est], problem.info.task, problem.info.n_classes)):
                    for loader, full in names_in(sio.dumps(obj)):
                        known = allow.functions if loader == "FunctionNode" else allow.types
                        # a partial is checked through the function it wraps
                        if loader not in ("JsonNode", "PartialNode") and full not in known:
                            missing[name].add(f"{full} ({loader})")
            print(f"{task:10s} {name:14s} {len(configs)} configurations", flush=True)
    for name in args.learners or builtin():
        print(f"{name}: {sorted(missing[name]) or 'nothing missing'}")


if __name__ == "__main__":
    main()
