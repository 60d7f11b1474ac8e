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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl.dashboard import best_per_learner_figure, load_study
from automl.report_images import image_columns, misclassified_grid
from automl.rundir import RunFolder, open_run
from automl.report_validation import (
    MAX_CURVE_CLASSES,
    _quiet_logs,
    confusion_figure,
    permutation_figure,
    pr_figure,
    refit_on_first_split,
    residuals_figure,
    roc_figure,
)

log = logging.getLogger("automl")
MIN_TRIALS_IMPORTANCE = 4  # completed trials of one learner needed for hyperparameter importances
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
        how = (f"its {members[0]['bagged_folds']} fold models averaged" if members[0].get("bagged_folds")
               else "refitted on all rows")
        model = f"trial {members[0].get('trial')} {members[0].get('learner')}, {how}"
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


# -- the best model on validation data: automl/report_validation.py ----------------------

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
        _try(sec, "the misclassified images", lambda: sec.blocks.append(misclassified_grid(v)))
        texts = _text_columns(run)
        if texts:  # text tasks: the most confidently wrong examples (automl/report_text.py)
            _try(sec, "the most confidently wrong examples", lambda: _add_mistakes(sec, v, texts))
    else:
        _try(sec, "the residuals", lambda: sec.blocks.append(fig(residuals_figure(v), 440)))
    if image_columns(v):
        sec.notes.append("Permutation importance is left out for image data: each repeat would run "
                         "the network over every validation image again.")
    else:
        _try(sec, "the permutation feature importance",
             lambda: sec.blocks.append(fig(permutation_figure(v))))
    return sec


def _text_columns(run: RunFolder) -> list[str]:
    from automl.schema import FeatureSchema

    schema = (run.manifest or {}).get("schema")
    return FeatureSchema.from_dict(schema).columns_of("text") if isinstance(schema, dict) else []


def _add_mistakes(sec: Section, v: Any, texts: list[str]) -> None:
    from automl.report_text import mistakes_table

    table, caption = mistakes_table(v, texts)
    sec.blocks.append(f"<h3>{_esc(caption)}</h3>{table}")


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
