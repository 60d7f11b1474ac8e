"""The best trial's model on validation data, for the report.

The best configuration is refitted on the first split of the run's own data (rebuilt
exactly as the fit built it) and scored on that split's validation part; the figures
(confusion matrix, ROC and precision-recall curves, residuals, permutation importance)
are drawn from that :class:`Validation`.
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
MAX_CURVE_CLASSES = 20
MAX_PERM_ROWS = 2000
MAX_PERM_FEATURES = 30


@contextmanager
def _quiet_logs() -> Any:
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
    with _quiet_logs():
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
    data = problem.fit_data(0, seed=seed, n_threads=config.threads_per_trial(len(problem.y)),
                            deadline=time.monotonic() + max(60.0, 10 * per_fold))
    t0 = time.perf_counter()
    with _quiet_logs():
        estimator = as_fitted(get_trainer(learner).fit(params, data, NullReporter())).estimator
    fit_seconds = time.perf_counter() - t0
    k = problem.info.n_classes
    pred = predict_scores(estimator, X_valid, task, k)
    score = metric(y_valid, pred, k)
    return Validation(trial=trial, learner=learner, params=params, task=task, metric=metric,
                      classes=problem.classes, X_valid=X_valid, y_valid=y_valid,
                      pred=pred, score=score, estimator=estimator, fit_seconds=fit_seconds,
                      n_train=len(tr), seed=seed)


def _decimate(x: np.ndarray, y: np.ndarray, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= n:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, n).astype(int))
    return x[idx], y[idx]


def confusion_figure(v: Validation) -> Any:
    import plotly.graph_objects as go
    from sklearn.metrics import confusion_matrix

    k = len(v.classes or [])
    labels = [str(c) for c in (v.classes or [])]
    cm = confusion_matrix(v.y_valid, np.argmax(v.pred, axis=1), labels=list(range(k)))
    show_text = k <= 30
    f = go.Figure(go.Heatmap(
        z=cm, x=labels, y=labels, colorscale="Blues", text=cm if show_text else None,
        texttemplate="%{text}" if show_text else None,
        hovertemplate="true %{y}<br>predicted %{x}<br>%{z} rows<extra></extra>"))
    f.update_layout(title=f"Confusion matrix (validation part of split 1, {len(v.y_valid)} rows)",
                    xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                    xaxis_type="category", yaxis_type="category")
    return f


def _one_vs_rest(v: Validation) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, is-that-class, its score) for each curve: the positive class, or one per class."""
    classes = v.classes or []
    if len(classes) == 2:
        return [(str(classes[1]), (v.y_valid == 1).astype(int), v.pred[:, 1])]
    out = []
    for i in range(min(len(classes), MAX_CURVE_CLASSES)):
        y = (v.y_valid == i).astype(int)
        if 0 < y.sum() < len(y):
            out.append((str(classes[i]), y, v.pred[:, i]))
    return out


def roc_figure(v: Validation) -> Any:
    import plotly.graph_objects as go
    from sklearn.metrics import roc_auc_score, roc_curve

    f = go.Figure()
    for label, y, s in _one_vs_rest(v):
        fpr, tpr, _ = roc_curve(y, s)
        fpr, tpr = _decimate(fpr, tpr)
        f.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines",
                               name=f"{label} (AUC {roc_auc_score(y, s):.3f})"))
    f.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                           line={"dash": "dash", "color": "grey"}))
    kind = "" if len(v.classes or []) == 2 else " (one class vs the rest)"
    f.update_layout(title=f"ROC curve{kind}", xaxis_title="false positive rate",
                    yaxis_title="true positive rate", xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return f


def pr_figure(v: Validation) -> Any:
    import plotly.graph_objects as go
    from sklearn.metrics import average_precision_score, precision_recall_curve

    f = go.Figure()
    for label, y, s in _one_vs_rest(v):
        prec, rec, _ = precision_recall_curve(y, s)
        rec, prec = _decimate(rec, prec)
        f.add_trace(go.Scatter(x=rec, y=prec, mode="lines",
                               name=f"{label} (AP {average_precision_score(y, s):.3f})"))
        if len(v.classes or []) == 2:
            f.add_trace(go.Scatter(x=[0, 1], y=[y.mean()] * 2, mode="lines", name="chance",
                                   line={"dash": "dash", "color": "grey"}))
    kind = "" if len(v.classes or []) == 2 else " (one class vs the rest)"
    f.update_layout(title=f"Precision-recall curve{kind}", xaxis_title="recall",
                    yaxis_title="precision", xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return f


def residuals_figure(v: Validation) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    y, p = np.asarray(v.y_valid, dtype=float), np.asarray(v.pred, dtype=float)
    r = y - p
    f = make_subplots(rows=1, cols=2,
                      subplot_titles=("predicted vs actual", "residual vs predicted"))
    dots = {"size": 5, "opacity": 0.6}
    f.add_trace(go.Scattergl(x=p, y=y, mode="markers", name="rows", marker=dots,
                             hovertemplate="predicted %{x:.4g}<br>actual %{y:.4g}<extra></extra>"),
                1, 1)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    f.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="perfect",
                           line={"dash": "dash", "color": "grey"}), 1, 1)
    f.add_trace(go.Scattergl(x=p, y=r, mode="markers", name="residuals", marker=dots,
                             hovertemplate="predicted %{x:.4g}<br>residual %{y:.4g}"
                                           "<extra></extra>"), 1, 2)
    f.add_trace(go.Scatter(x=[float(p.min()), float(p.max())], y=[0, 0], mode="lines", name="zero",
                           line={"dash": "dash", "color": "grey"}), 1, 2)
    f.update_xaxes(title_text="predicted", row=1, col=1)
    f.update_yaxes(title_text="actual", row=1, col=1)
    f.update_xaxes(title_text="predicted", row=1, col=2)
    f.update_yaxes(title_text="actual - predicted", row=1, col=2)
    rmse, mae = float(np.sqrt(np.mean(r ** 2))), float(np.mean(np.abs(r)))
    f.update_layout(title=f"Residuals (validation part of split 1, {len(y)} rows; "
                    f"RMSE {rmse:.4g}, MAE {mae:.4g})")
    return f


def permutation_figure(v: Validation) -> Any:
    import plotly.graph_objects as go
    from sklearn.inspection import permutation_importance

    from automl.metrics import predict_scores

    X, y = v.X_valid, v.y_valid
    if len(y) > MAX_PERM_ROWS:
        idx = np.random.default_rng(v.seed).choice(len(y), MAX_PERM_ROWS, replace=False)
        X, y = X.iloc[np.sort(idx)], y[np.sort(idx)]
    k = len(v.classes or [])
    sign = 1.0 if v.metric.greater_is_better else -1.0

    def scorer(estimator: Any, X_: Any, y_: Any) -> float:
        return sign * v.metric(y_, predict_scores(estimator, X_, v.task, k), k)

    n_feat = X.shape[1]
    repeats = 5 if n_feat <= 50 else 3 if n_feat <= 200 else 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = permutation_importance(v.estimator, X, y, scoring=scorer, n_repeats=repeats,
                                     random_state=v.seed, n_jobs=1)
    order = np.argsort(res.importances_mean)[::-1][:MAX_PERM_FEATURES][::-1]
    names = [str(X.columns[i]) for i in order]
    f = go.Figure(go.Bar(x=res.importances_mean[order], y=names, orientation="h",
                         error_x={"type": "data", "array": res.importances_std[order]},
                         hovertemplate="%{y}: %{x:.4g}<extra></extra>"))
    change = "increase" if not v.metric.greater_is_better else "decrease"
    shown = f"top {len(order)} of {n_feat}" if n_feat > len(order) else f"{n_feat}"
    f.update_layout(title=f"Permutation feature importance ({shown} columns, {repeats} repeats)",
                    xaxis_title=f"{change} in {v.metric.name} when the column is shuffled",
                    yaxis={"automargin": True})
    f.update_layout(height=max(300, 80 + 24 * len(order)))
    return f
