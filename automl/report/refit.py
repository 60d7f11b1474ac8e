"""The best trial refitted for the report: the run's problem rebuilt from its data exactly as
the fit built it (same schema, seed and splits), and the best configuration refitted on the
first split's training part and scored on its validation part (:class:`Validation`), which
the diagnostics (:mod:`automl.report.diagnostics`) draw.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl.rundir import RunFolder

log = logging.getLogger("automl")


@contextmanager
def quiet_logs() -> Any:
    """Silence automl's and Optuna's informational logs and warnings while rebuilding."""
    import optuna

    level = log.level
    verbosity = optuna.logging.get_verbosity()
    log.setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
        optuna.logging.set_verbosity(verbosity)


def _cv_from(validation: str | None) -> int | str:
    """The ``--cv`` value that reproduces a run's splits, from its description."""
    m = re.match(r"(\d+)-fold", str(validation or ""))
    if m:
        return int(m.group(1))
    return "holdout" if str(validation or "").startswith("holdout") else "auto"


@dataclass
class Validation:
    """The best configuration refitted on the first split and scored on its validation part."""

    trial: Any
    learner: str
    params: dict[str, Any]
    task: Any
    metric: Any
    classes: list | None
    X_valid: Any
    y_valid: np.ndarray
    pred: np.ndarray
    score: float
    estimator: Any
    fit_seconds: float
    n_train: int
    seed: int


def refit_on_first_split(run: RunFolder, study: Any) -> Validation:
    """Rebuild the run's problem from its data and refit the best trial on split 1.

    Raises:
        FileNotFoundError: the training data file is gone.
        ValueError: the data no longer matches the run, or the run recorded too little.
    """
    import pandas as pd  # noqa: F401 - the data layer needs it loaded

    from automl.config import SearchConfig
    from automl.contracts import NullReporter, Task, as_fitted
    from automl.data import prepare_target
    from automl.engine import prepare_problem
    from automl.images import read_input
    from automl.metrics import get_metric, predict_scores
    from automl.registry import get_trainer
    from automl.schema import FeatureSchema
    from automl.study import best_trials, learner_params

    info = {**study.user_attrs, **run.info}
    missing = [k for k in ("data", "target", "task", "metric", "seed") if info.get(k) is None]
    if missing:
        why = " (no summary.json: the run did not finish)" if run.summary is None else ""
        raise ValueError(f"the run folder does not record its {', '.join(missing)}{why}")
    path = Path(run.run.get("data") or info["data"])
    if not path.exists():  # a table, or a folder of images
        raise FileNotFoundError(str(path))
    task = Task(info["task"])
    metric = get_metric(info["metric"], task)
    best = best_trials(study, metric, 1)
    if not best:
        raise ValueError("no trial completed")
    trial = best[0]
    learner, params = learner_params(trial)
    seed = int(info.get("seed", 0) or 0)
    config = SearchConfig(task=task.value, metric=metric.name, seed=seed, include=[learner],
                          cv=_cv_from(info.get("validation")), n_trials=1).validate()
    schema = None
    if run.manifest and isinstance(run.manifest.get("schema"), dict):
        schema = FeatureSchema.from_dict(run.manifest["schema"])
    with quiet_logs():
        df, _ = read_input(path, schema.columns_of("image") if schema is not None else ())
        X_raw, target = prepare_target(df, str(info["target"]), task.value)
        if schema is not None:
            absent = [c for c in schema.used if c not in X_raw.columns]
            if absent:
                raise ValueError(f"the data file lacks column(s) the run used: {absent[:5]}; "
                                 "it changed since the fit")
        problem = prepare_problem(X_raw, target, config, schema=schema)
        if info.get("text_backbone"):  # the run's sentence embeddings of text columns
            import dataclasses

            problem.info = dataclasses.replace(problem.info, text_backbone=info["text_backbone"])
    n_rows = info.get("n_rows")
    if n_rows is not None and int(n_rows) != problem.info.n_rows:
        raise ValueError(f"the data file has {problem.info.n_rows} usable rows but the run had "
                         f"{n_rows}: it changed since the fit")
    if info.get("validation") and problem.splits.describe() != info["validation"]:
        raise ValueError(f"rebuilding the splits gave {problem.splits.describe()!r}, not the run's "
                         f"{info['validation']!r}")
    tr, va = problem.splits.folds[0]
    X_valid, y_valid = problem.X.iloc[va], problem.y[va]
    per_fold = float(trial.user_attrs.get("fold_fit_time", trial.user_attrs.get("fit_time", 10.0)))
    threads = config.threads_per_trial(len(problem.y), problem.info.n_features)
    data = problem.fit_data(0, seed=seed, n_threads=threads,
                            deadline=time.monotonic() + max(60.0, 10 * per_fold),
                            max_rows=trial.user_attrs.get("train_rows"))
    t0 = time.perf_counter()
    with quiet_logs():
        estimator = as_fitted(get_trainer(learner).fit(params, data, NullReporter())).estimator
    fit_seconds = time.perf_counter() - t0
    k = problem.info.n_classes
    pred = predict_scores(estimator, X_valid, task, k)
    score = metric(y_valid, pred, k)
    return Validation(trial=trial, learner=learner, params=params, task=task, metric=metric,
                      classes=problem.classes, X_valid=X_valid, y_valid=y_valid,
                      pred=pred, score=score, estimator=estimator, fit_seconds=fit_seconds,
                      n_train=len(tr), seed=seed)
