"""The course of the search: optimization history, best score per learner, timeline.

:func:`best_per_learner_figure` is also what ``automl dashboard`` saves into the study, so
optuna-dashboard shows the same chart.
"""

from __future__ import annotations

from typing import Any

from automl.report.page import FigureWriter, Section


def best_per_learner_figure(study: Any) -> Any:
    """A bar chart of the best score of each learner (``None`` without a completed trial)."""
    import plotly.graph_objects as go
    from optuna.trial import TrialState

    maximize = study.direction.name == "MAXIMIZE"
    best: dict[str, tuple[float, int]] = {}
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        learner = t.params.get("learner", t.user_attrs.get("learner"))
        if not learner or t.state == TrialState.WAITING:
            continue
        counts[learner] = counts.get(learner, 0) + 1
        if t.state != TrialState.COMPLETE or t.value is None:
            continue
        cur = best.get(learner)
        if cur is None or (t.value > cur[0] if maximize else t.value < cur[0]):
            best[learner] = (t.value, t.number)
    if not best:
        return None
    order = sorted(best, key=lambda k: best[k][0], reverse=maximize)
    metric = study.user_attrs.get("metric", "score")
    fig = go.Figure(go.Bar(
        x=order, y=[best[k][0] for k in order],
        text=[f"{best[k][0]:.4g}" for k in order], textposition="auto",
        customdata=[[best[k][1], counts.get(k, 0)] for k in order],
        hovertemplate="%{x}<br>best " + metric + " %{y:.5g}<br>trial %{customdata[0]}"
                      "<br>%{customdata[1]} trial(s)<extra></extra>"))
    better = "higher" if maximize else "lower"
    fig.update_layout(title=f"Best {metric} per learner ({better} is better)",
                      xaxis_title="learner", yaxis_title=metric, template="plotly_white")
    return fig


def _without_waiting(study: Any) -> Any:
    """An in-memory copy of the study without its queued (never started) trials."""
    import optuna
    from optuna.trial import TrialState

    copy = optuna.create_study(direction=study.direction, study_name=study.study_name)
    copy.add_trials([t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
    return copy


def search_section(study: Any, metric: str, fig: FigureWriter) -> Section:
    """The search over time: history (Optuna's), best per learner, timeline (Optuna's)."""
    import optuna.visualization as vis
    from optuna.trial import TrialState

    sec = Section("search", "The search")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
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
        n = len([t for t in trials if t.datetime_start is not None])
        sec.blocks.append(fig(f, max(300, min(900, 120 + 14 * n))))

    if complete:
        sec.attempt("the optimization history", history)
        sec.attempt("the best score per learner", per_learner)
    if any(t.datetime_start is not None for t in trials):
        sec.attempt("the timeline", timeline)
    return sec
