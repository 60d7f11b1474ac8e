"""``automl report OUT``: one self-contained HTML file reviewing a run.

The file works offline: plotly.js is embedded once, inline, and every figure is a plotly
figure drawn from JSON in the page. It holds:

- the run summary and the leaderboard;
- the search: optimization history, best score per learner, a timeline (pruned and failed
  trials included);
- hyperparameters, per learner (a trial has only its own learner's parameters, so each
  learner's trials are viewed as a study of their own, prefix stripped): importances,
  parallel coordinates, slices;
- the best trial's model on validation data: the training data is read again from the path
  in ``run.json`` and the problem rebuilt exactly as the fit did (same schema, seed and
  splits); the best configuration is refitted on the first split's training part and
  evaluated on its validation part: confusion matrix, ROC and precision-recall curves
  (classification) or residuals (regression), and permutation feature importance.

What cannot be drawn (too few trials, the data file gone) is said in a note instead; the
rest of the report is still written.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
import re
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl.dashboard import RunFolder, best_per_learner_figure, load_study, open_run

log = logging.getLogger("automl")
MIN_TRIALS_IMPORTANCE = 4  # completed trials of one learner needed for hyperparameter importances
MAX_CURVE_CLASSES = 20
MAX_PERM_ROWS = 2000
MAX_PERM_FEATURES = 30
LEADERBOARD_ROWS = 50
TEMPLATE = "plotly_white"
BOARD_HEADERS = {"fit_time_s": "fit s", "balanced_accuracy": "bal. acc", "macro_f1": "macro F1",
                 "min_class_recall": "min recall", "pruned_at_step": "pruned at",
                 "fail_reason": "why it failed"}


@dataclass
class Section:
    """A part of the report: a heading, HTML blocks (figures, tables) and notes."""

    id: str
    title: str
    intro: str = ""
    blocks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class FigureWriter:
    """Turns plotly figures into HTML ``div``s sharing the one inline copy of plotly.js."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: Any, height: int | None = None) -> str:
        self.count += 1
        fig.update_layout(template=TEMPLATE, margin={"t": 60, "l": 60, "r": 30, "b": 50})
        if height:
            fig.update_layout(height=height)
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{self.count}",
                           config={"displaylogo": False, "responsive": True})


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _try(section: Section, what: str, build: Callable[[], None]) -> None:
    """Run one part of a section; a failure becomes a note, never a failed report."""
    try:
        build()
    except Exception as exc:  # one plot must not sink the report
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.debug("report: %s failed", what, exc_info=True)
        section.notes.append(f"Could not draw {what}: {type(exc).__name__}: {first}")


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


# -- the study ------------------------------------------------------------------------------

def _learner(t: Any) -> str:
    return str(t.params.get("learner", t.user_attrs.get("learner", "")))


def learner_study(study: Any, learner: str) -> Any:
    """An in-memory study of one learner's completed trials, its parameter prefix stripped."""
    import optuna
    from optuna.trial import TrialState

    prefix = f"{learner}__"
    sub = optuna.create_study(direction=study.direction, study_name=f"{study.study_name}:{learner}")
    trials = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if _learner(t) != learner or t.value is None or not math.isfinite(t.value):
            continue
        params = {k[len(prefix):]: v for k, v in t.params.items() if k.startswith(prefix)}
        dists = {k[len(prefix):]: d for k, d in t.distributions.items() if k.startswith(prefix)}
        trials.append(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=t.value, params=params, distributions=dists,
            user_attrs={"number": t.number}, intermediate_values=dict(t.intermediate_values)))
    sub.add_trials(trials)
    return sub


def _varying_params(sub: Any) -> list[str]:
    """Parameters that took more than one value among the sub-study's trials."""
    values: dict[str, set[str]] = {}
    for t in sub.trials:
        for k, v in t.params.items():
            values.setdefault(k, set()).add(repr(v))
    return sorted(k for k, v in values.items() if len(v) > 1)


def _summary_section(run: RunFolder, study: Any, board: Any, elapsed_note: str) -> Section:
    from optuna.trial import TrialState

    info = {**study.user_attrs, **run.info}
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state != TrialState.WAITING:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    direction = study.direction.name.lower()
    best = None
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    if done:
        best = (max if direction == "maximize" else min)(done, key=lambda t: t.value)
    manifest = run.manifest or {}
    members = manifest.get("members") or []
    if len(members) > 1:
        model = "ensemble of " + ", ".join(
            f"trial {m.get('trial')} {m.get('learner')} (weight {float(m.get('weight', 0)):.2f})"
            for m in members)
    elif members:
        model = f"trial {members[0].get('trial')} {members[0].get('learner')}, refitted on all rows"
    else:
        model = "none saved (the run did not finish)"
    vscore = manifest.get("validation_score", info.get("validation_score"))
    rows = [
        ("task", info.get("task")), ("target", info.get("target")),
        ("metric", f"{info.get('metric')} ({direction})"),
        ("rows", info.get("n_rows")), ("validation", info.get("validation")),
        ("learners searched", ", ".join(info.get("learners") or [])),
        ("trials", ", ".join(f"{n} {s}" for s, n in states.items()) or "none"),
        ("best trial", f"{best.number} ({_learner(best)}): {info.get('metric')} = {best.value:.6g}"
         if best else "no completed trial"),
        ("saved model", model),
        ("model's validation score", f"{vscore:.6g}" if isinstance(vscore, (int, float)) else None),
        ("elapsed", f"{info['elapsed_s']} s" if info.get("elapsed_s") is not None else None),
        ("sampler / pruner / seed",
         f"{info.get('sampler', '?')} / {info.get('pruner', '?')} / {info.get('seed', '?')}"),
        ("data", info.get("data")), ("study", f"{run.study_name} in {run.storage_url}"),
        ("created", manifest.get("created")),
        ("automl", (manifest.get("packages") or {}).get("automl") or info.get("automl")),
    ]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>"
                   for k, v in rows if v not in (None, ""))
    sec = Section("summary", "Run summary", blocks=[f'<table class="kv">{body}</table>'])
    if run.summary is None:
        sec.notes.append("summary.json is missing: the run did not finish (interrupted or failed); "
                         "this report shows the study as it is.")
    if elapsed_note:
        sec.notes.append(elapsed_note)
    return sec


def _leaderboard_section(board: Any) -> Section:
    sec = Section("leaderboard", "Leaderboard",
                  intro=f"One row per trial, completed trials first, best first "
                  f"({min(len(board), LEADERBOARD_ROWS)} of {len(board)} shown).")
    if board.empty:
        sec.notes.append("No trial has run.")
        return sec
    cols = [c for c in ("rank", "trial", "learner", "state", "score", "fit_time_s",
                        "balanced_accuracy", "macro_f1", "min_class_recall", "pruned_at_step",
                        "fail_reason", "params") if c in board.columns]
    shown = board[cols].head(LEADERBOARD_ROWS)
    cols = [c for c in cols if c in ("rank", "trial", "learner", "state", "score", "params")
            or shown[c].map(lambda v: _fmt(v) != "").any()]
    head = "".join(f"<th>{_esc(BOARD_HEADERS.get(c, c))}</th>" for c in cols)
    body = []
    for row in shown[cols].to_dict(orient="records"):
        cls = f' class="{_esc(row.get("state", ""))}"'
        if "params" in row:
            row["params"] = _compact_params(row["params"])
        cells = "".join(f'<td class="c-{_esc(c)}">{_esc(_fmt(row[c], 5))}</td>' for c in cols)
        body.append(f"<tr{cls}>{cells}</tr>")
    sec.blocks.append(f'<div class="scroll"><table class="board"><thead><tr>{head}</tr></thead>'
                      f'<tbody>{"".join(body)}</tbody></table></div>')
    return sec


def _compact_params(text: Any) -> str:
    """``{"a": 0.123456789, "b": null}`` as ``a=0.1235, b=None`` for the leaderboard."""
    try:
        params = json.loads(text)
    except (TypeError, ValueError):
        return str(text)
    if not isinstance(params, dict):
        return str(text)
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _without_waiting(study: Any) -> Any:
    """An in-memory copy of the study without its queued (never started) trials."""
    import optuna
    from optuna.trial import TrialState

    copy = optuna.create_study(direction=study.direction, study_name=study.study_name)
    copy.add_trials([t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
    return copy


def slice_figure(sub: Any, params: list[str], metric: str, learner: str) -> Any:
    """One small scatter per hyperparameter (objective against its value), in a grid of
    at most four columns; colour is the trial's order, so later trials are darker."""
    import plotly.graph_objects as go
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from plotly.subplots import make_subplots

    trials = sub.trials
    numbers = [t.user_attrs.get("number", t.number) for t in trials]
    cols = min(4, len(params))
    rows = math.ceil(len(params) / cols)
    f = make_subplots(rows=rows, cols=cols, subplot_titles=params, shared_yaxes=True,
                      horizontal_spacing=0.04, vertical_spacing=0.5 / rows if rows > 1 else 0.1)
    for i, name in enumerate(params):
        r, c = i // cols + 1, i % cols + 1
        ts = [t for t in trials if name in t.params]
        dist = ts[0].distributions[name] if ts else None
        xs = [t.params[name] for t in ts]
        if isinstance(dist, CategoricalDistribution):
            xs = [str(x) for x in xs]
        f.add_trace(go.Scatter(
            x=xs, y=[t.value for t in ts], mode="markers", showlegend=False,
            marker={"color": [t.user_attrs.get("number", t.number) for t in ts],
                    "colorscale": "Blues", "size": 8, "line": {"width": 0.5, "color": "grey"},
                    "cmin": min(numbers), "cmax": max(max(numbers), min(numbers) + 1),
                    "showscale": i == 0,
                    "colorbar": {"title": {"text": "trial"}, "thickness": 12}},
            customdata=[t.user_attrs.get("number", t.number) for t in ts],
            hovertemplate=name + " %{x}<br>" + metric + " %{y:.5g}<br>trial %{customdata}"
                          "<extra></extra>"), r, c)
        if isinstance(dist, (FloatDistribution, IntDistribution)) and dist.log:
            f.update_xaxes(type="log", row=r, col=c)
        elif isinstance(dist, CategoricalDistribution):
            f.update_xaxes(type="category", row=r, col=c)
        if c == 1:
            f.update_yaxes(title_text=metric, row=r, col=c)
    f.update_layout(title=f"Slices: {learner}", height=120 + 260 * rows)
    return f


def _search_section(study: Any, metric: str, fig: FigureWriter) -> Section:
    import optuna.visualization as vis
    from optuna.trial import TrialState

    sec = Section("search", "The search")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        sec.notes.append("No trial completed: there is no score to plot.")

    def history() -> None:
        f = vis.plot_optimization_history(_without_waiting(study), target_name=metric)
        f.update_layout(title=f"Optimization history ({metric})")
        sec.blocks.append(fig(f, 420))

    def per_learner() -> None:
        f = best_per_learner_figure(study)
        if f is None:
            sec.notes.append("Best score per learner: no completed trial.")
            return
        sec.blocks.append(fig(f, 380))

    def timeline() -> None:
        f = vis.plot_timeline(_without_waiting(study))
        f.update_layout(title="Timeline of the trials (complete, pruned, failed)")
        n = len([t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None])
        sec.blocks.append(fig(f, max(300, min(900, 120 + 14 * n))))

    if complete:
        _try(sec, "the optimization history", history)
        _try(sec, "the best score per learner", per_learner)
    if any(t.datetime_start is not None for t in study.get_trials(deepcopy=False)):
        _try(sec, "the timeline", timeline)
    return sec


def _hyperparameter_section(study: Any, metric: str, fig: FigureWriter, seed: int) -> Section:
    import optuna.visualization as vis
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    sec = Section("hyperparameters", "Hyperparameters, per learner",
                  intro="Each learner's completed trials viewed as a study of their own (a trial "
                  "has only its own learner's hyperparameters).")
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.value is not None and math.isfinite(t.value):
            counts[_learner(t)] = counts.get(_learner(t), 0) + 1
    if not counts:
        sec.notes.append("No completed trial: nothing to show.")
        return sec
    learners = sorted(counts, key=lambda k: -counts[k])
    if len(learners) == 1:
        sec.notes.append(f"Only one learner ({learners[0]}) has completed trials.")
    for learner in learners:
        n = counts[learner]
        sub = learner_study(study, learner)
        varying = _varying_params(sub)
        sec.blocks.append(f"<h3>{_esc(learner)} <span class=\"dim\">({n} completed trial"
                          f"{'s' if n != 1 else ''})</span></h3>")
        if not varying:
            sec.blocks.append(_note(
                f"{learner}: {'one trial' if n == 1 else 'every trial had the same configuration'}"
                " — no hyperparameter varied, so there are no importances, parallel coordinates "
                "or slices to show."))
            continue

        def importance(sub: Any = sub, learner: str = learner, varying: list[str] = varying,
                       n: int = n) -> None:
            if len(varying) == 1:
                sec.blocks.append(_note(f"{learner}: only {varying[0]} varied, so there is no "
                                        "importance to compare; see its slice below."))
                return
            if n < MIN_TRIALS_IMPORTANCE:
                sec.blocks.append(_note(f"{learner}: hyperparameter importances need at least "
                                        f"{MIN_TRIALS_IMPORTANCE} completed trials (it has {n})."))
                return
            f = vis.plot_param_importances(sub, evaluator=FanovaImportanceEvaluator(seed=seed),
                                           params=varying, target_name=metric)
            f.update_layout(title=f"Hyperparameter importances: {learner}")
            sec.blocks.append(fig(f, max(260, 80 + 32 * len(varying))))

        def parallel(sub: Any = sub, learner: str = learner, varying: list[str] = varying,
                     n: int = n) -> None:
            if n < 2:
                return
            f = vis.plot_parallel_coordinate(sub, params=varying, target_name=metric)
            f.update_layout(title=f"Parallel coordinates: {learner}")
            sec.blocks.append(fig(f, 420))

        def slices(sub: Any = sub, learner: str = learner, varying: list[str] = varying) -> None:
            sec.blocks.append(fig(slice_figure(sub, varying, metric, learner)))

        _try(sec, f"the importances of {learner}", importance)
        _try(sec, f"the parallel coordinates of {learner}", parallel)
        _try(sec, f"the slices of {learner}", slices)
    return sec


# -- the best model on validation data -----------------------------------------------------

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
    from automl.contracts import FitData, NullReporter, Task
    from automl.data import prepare_target, read_table
    from automl.engine import prepare_problem
    from automl.evaluation import predict_scores
    from automl.metrics import get_metric
    from automl.registry import get_trainer
    from automl.schema import FeatureSchema
    from automl.search import best_trials, learner_params

    info = {**study.user_attrs, **run.info}
    missing = [k for k in ("data", "target", "task", "metric", "seed") if info.get(k) is None]
    if missing:
        why = " (no summary.json: the run did not finish)" if run.summary is None else ""
        raise ValueError(f"the run folder does not record its {', '.join(missing)}{why}")
    path = Path(run.run.get("data") or info["data"])
    if not path.is_file():
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
        df = read_table(path)
        X_raw, target = prepare_target(df, str(info["target"]), task.value)
        if schema is not None:
            absent = [c for c in schema.used if c not in X_raw.columns]
            if absent:
                raise ValueError(f"the data file lacks column(s) the run used: {absent[:5]}; "
                                 "it changed since the fit")
        problem = prepare_problem(X_raw, target, config, schema=schema)
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
    data = FitData(X_train=problem.X.iloc[tr], y_train=problem.y[tr], X_valid=X_valid,
                   y_valid=y_valid, info=problem.info, metric=metric, seed=seed,
                   n_threads=config.threads_per_trial(len(problem.y)),
                   deadline=time.monotonic() + max(60.0, 10 * per_fold))
    t0 = time.perf_counter()
    with _quiet_logs():
        estimator = get_trainer(learner).fit(params, data, NullReporter())
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

    from automl.evaluation import predict_scores

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


def _model_section(run: RunFolder, study: Any, fig: FigureWriter) -> Section:
    sec = Section("model", "Best trial's model on validation data")
    try:
        v = refit_on_first_split(run, study)
    except FileNotFoundError as exc:
        sec.notes.append(f"The training data file '{exc}' is gone (moved or deleted), so the best "
                         "model cannot be evaluated on validation data; the study plots above are "
                         "complete.")
        return sec
    except Exception as exc:  # the rest of the report stands on its own
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.debug("report: refit failed", exc_info=True)
        sec.notes.append("The best configuration could not be evaluated on validation data: "
                         f"{first}.")
        return sec
    recorded = v.trial.user_attrs.get("fold_scores") or []
    same = (f"; the search recorded {recorded[0]:.6g} on this split"
            if recorded and isinstance(recorded[0], (int, float)) else "")
    params = json.dumps(v.params, sort_keys=True, default=str)
    sec.intro = (f"Trial {v.trial.number} ({v.learner}, {v.metric.name} {v.trial.value:.6g} "
                 f"over the folds) refitted on the training part of split 1 ({v.n_train} rows, "
                 f"{v.fit_seconds:.1f} s) and scored on its validation part "
                 f"({len(v.y_valid)} rows): {v.metric.name} = {v.score:.6g}{same}.")
    sec.blocks.append(f'<p class="params"><b>parameters</b> <code>{_esc(params)}</code></p>')
    if v.task.is_classification:
        _try(sec, "the confusion matrix", lambda: sec.blocks.append(fig(confusion_figure(v), 460)))
        if len(v.classes or []) > MAX_CURVE_CLASSES:
            sec.notes.append(f"ROC and precision-recall curves show the first {MAX_CURVE_CLASSES} "
                             f"of {len(v.classes or [])} classes.")
        curves: list[str] = []
        _try(sec, "the ROC curve", lambda: curves.append(fig(roc_figure(v), 440)))
        _try(sec, "the precision-recall curve", lambda: curves.append(fig(pr_figure(v), 440)))
        pair = "".join(f"<div>{c}</div>" for c in curves)
        sec.blocks.append(f'<div class="pair">{pair}</div>')
    else:
        _try(sec, "the residuals", lambda: sec.blocks.append(fig(residuals_figure(v), 440)))
    _try(sec, "the permutation feature importance",
         lambda: sec.blocks.append(fig(permutation_figure(v))))
    return sec


# -- the page -------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
header { background: #1f3b57; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 24px; }
header p { margin: 4px 0 0; opacity: .85; }
nav { padding: 8px 32px; background: #e8eef4; position: sticky; top: 0; z-index: 10; }
nav a { margin-right: 18px; color: #1f3b57; text-decoration: none; font-weight: 600; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 12px 20px;
          margin: 18px 0; }
h2 { margin: 6px 0 10px; color: #1f3b57; }
h3 { margin: 18px 0 4px; }
.dim { color: #888; font-weight: normal; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; margin: 8px 0; }
table.kv th { text-align: left; padding: 3px 16px 3px 0; color: #555; font-weight: 600;
              vertical-align: top; }
table.kv td { padding: 3px 0; }
.scroll { overflow-x: auto; }
table.board { border-collapse: collapse; font-size: 13px; }
table.board th, table.board td { border-bottom: 1px solid #eee; padding: 4px 8px;
                                 text-align: right; white-space: nowrap; }
table.board th { background: #f3f5f7; position: sticky; top: 0; }
table.board td.c-learner, table.board td.c-state, table.board td.c-fail_reason,
table.board td.c-params { text-align: left; }
table.board td.c-params, table.board td.c-fail_reason { white-space: normal; max-width: 520px;
    font-family: monospace; font-size: 12px; }
table.board td.c-params { min-width: 380px; }
tr.pruned td { color: #8a6d00; }
tr.fail td { color: #b00020; }
code { font-size: 12px; word-break: break-all; }
.plotly-graph-div { margin: 6px 0 14px; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 12px; }
footer { color: #888; font-size: 12px; padding: 0 32px 24px; }
"""


def render_html(title: str, subtitle: str, sections: list[Section], footer: str) -> str:
    """The page: plotly.js inline once in the head, then the sections."""
    from plotly.offline import get_plotlyjs

    nav = "".join(f'<a href="#{_esc(s.id)}">{_esc(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        intro = f"<p>{_esc(s.intro)}</p>" if s.intro else ""
        notes = "".join(_note(n) for n in s.notes)
        parts.append(f'<section id="{_esc(s.id)}"><h2>{_esc(s.title)}</h2>{intro}{notes}'
                     f'{"".join(s.blocks)}</section>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f"<header><h1>{_esc(title)}</h1><p>{_esc(subtitle)}</p></header><nav>{nav}</nav>"
            f'<main>{"".join(parts)}</main><footer>{_esc(footer)}</footer></body></html>\n')


def build_report(run: RunFolder, include_model: bool = True) -> str:
    """The report of a run as one HTML string (see the module docstring for its contents)."""
    from automl import __version__
    from automl.leaderboard import leaderboard

    t0 = time.perf_counter()
    with _quiet_logs():
        study = load_study(run)
    info = {**study.user_attrs, **run.info}
    metric = str(info.get("metric") or "objective")
    maximize = study.direction.name == "MAXIMIZE"
    board = leaderboard(study, maximize)
    fig = FigureWriter()
    seed = int(info.get("seed", 0) or 0)
    sections = [_summary_section(run, study, board, ""), _leaderboard_section(board)]
    with _quiet_logs():
        sections.append(_search_section(study, metric, fig))
        sections.append(_hyperparameter_section(study, metric, fig, seed))
    if include_model:
        sections.append(_model_section(run, study, fig))
    title = (f"automl report: {info.get('target', '?')} ({info.get('task', '?')}), "
             f"study '{run.study_name}'")
    better = "higher" if maximize else "lower"
    subtitle = (f"{info.get('n_rows', '?')} rows, {info.get('validation', '?')}, metric "
                f"{metric} ({better} is better) — {run.path.resolve()}")
    footer = (f"Written by automl {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S')} in "
              f"{time.perf_counter() - t0:.1f} s; {fig.count} figures. Interactive: hover, zoom, "
              "double-click to reset. Works offline.")
    return render_html(title, subtitle, sections, footer)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``automl report``."""
    from automl.persistence import atomic_write_text

    run = open_run(args.run)
    out = Path(args.output) if getattr(args, "output", None) else run.path / "report.html"
    if out.exists() and out.is_dir():
        from automl.exceptions import ConfigError

        raise ConfigError(f"--output '{out}' is a folder; give the path of an .html file.")
    t0 = time.perf_counter()
    page = build_report(run, include_model=not getattr(args, "no_model", False))
    atomic_write_text(out, page)
    log.info("wrote the report to %s (%.1f MB, %.1f s)", out, len(page.encode()) / 1e6,
             time.perf_counter() - t0)
    return 0
