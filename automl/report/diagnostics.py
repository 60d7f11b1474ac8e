"""The best trial's model on validation data: the report's diagnostics section.

Drawn from the :class:`~automl.report.refit.Validation` of the best configuration refitted
on split 1: confusion matrix, ROC and precision-recall curves and the misclassified images
or most confidently wrong texts (classification), residuals (regression), and permutation
feature importance.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from automl.report.images import image_columns, misclassified_grid
from automl.report.page import FigureWriter, Section, esc, first_line
from automl.report.refit import Validation, refit_on_first_split
from automl.report.text import mistakes_table
from automl.rundir import RunFolder

log = logging.getLogger("automl")
MAX_CURVE_CLASSES = 20
MAX_PERM_ROWS = 2000
MAX_PERM_FEATURES = 30


def model_section(run: RunFolder, study: Any, fig: FigureWriter) -> Section:
    """The best configuration refitted on split 1 and its figures; a note when it cannot be."""
    sec = Section("model", "Best trial's model on validation data")
    try:
        v = refit_on_first_split(run, study)
    except FileNotFoundError as exc:
        sec.notes.append(f"The training data file '{exc}' is gone (moved or deleted), so the best "
                         "model cannot be evaluated on validation data; the study plots above are "
                         "complete.")
        return sec
    except Exception as exc:  # the rest of the report stands on its own
        log.debug("report: refit failed", exc_info=True)
        sec.notes.append("The best configuration could not be evaluated on validation data: "
                         f"{first_line(exc)}.")
        return sec
    recorded = v.trial.user_attrs.get("fold_scores") or []
    same = (f"; the search recorded {recorded[0]:.6g} on this split"
            if recorded and isinstance(recorded[0], (int, float)) else "")
    params = json.dumps(v.params, sort_keys=True, default=str)
    sec.intro = (f"Trial {v.trial.number} ({v.learner}, {v.metric.name} {v.trial.value:.6g} "
                 f"over the folds) refitted on the training part of split 1 ({v.n_train} rows, "
                 f"{v.fit_seconds:.1f} s) and scored on its validation part "
                 f"({len(v.y_valid)} rows): {v.metric.name} = {v.score:.6g}{same}.")
    sec.blocks.append(f'<p class="params"><b>parameters</b> <code>{esc(params)}</code></p>')
    if v.task.is_classification:
        _classification_figures(sec, v, run, fig)
    else:
        sec.attempt("the residuals", lambda: sec.blocks.append(fig(residuals_figure(v), 440)))
    if image_columns(v):
        sec.notes.append("Permutation importance is left out for image data: each repeat would run "
                         "the network over every validation image again.")
    else:
        sec.attempt("the permutation feature importance",
                    lambda: sec.blocks.append(fig(permutation_figure(v))))
    return sec


def _classification_figures(sec: Section, v: Validation, run: RunFolder,
                            fig: FigureWriter) -> None:
    """Confusion matrix, ROC and precision-recall curves side by side, and the mistakes."""
    sec.attempt("the confusion matrix", lambda: sec.blocks.append(fig(confusion_figure(v), 460)))
    if len(v.classes or []) > MAX_CURVE_CLASSES:
        sec.notes.append(f"ROC and precision-recall curves show the first {MAX_CURVE_CLASSES} "
                         f"of {len(v.classes or [])} classes.")
    curves: list[str] = []
    sec.attempt("the ROC curve", lambda: curves.append(fig(roc_figure(v), 440)))
    sec.attempt("the precision-recall curve", lambda: curves.append(fig(pr_figure(v), 440)))
    pair = "".join(f"<div>{c}</div>" for c in curves)
    sec.blocks.append(f'<div class="pair">{pair}</div>')
    sec.attempt("the misclassified images", lambda: sec.blocks.append(misclassified_grid(v)))
    texts = _text_columns(run)
    if texts:  # text tasks: the most confidently wrong examples

        def mistakes() -> None:
            table, caption = mistakes_table(v, texts)
            sec.blocks.append(f"<h3>{esc(caption)}</h3>{table}")

        sec.attempt("the most confidently wrong examples", mistakes)


def _text_columns(run: RunFolder) -> list[str]:
    from automl.schema import FeatureSchema

    schema = (run.manifest or {}).get("schema")
    return FeatureSchema.from_dict(schema).columns_of("text") if isinstance(schema, dict) else []


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


def _class_curves(v: Validation, title: str, x_title: str, y_title: str,
                  curve: Callable[[np.ndarray, np.ndarray], tuple[Any, Any, str]],
                  chance: list[float] | None) -> Any:
    """A line per class (one vs the rest; the positive class when binary), from
    ``curve(is_class, score) -> (x, y, what)``, and a dashed chance line at ``chance``."""
    import plotly.graph_objects as go

    f = go.Figure()
    for label, y, s in _one_vs_rest(v):
        xs, ys, what = curve(y, s)
        xs, ys = _decimate(xs, ys)
        f.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{label} ({what})"))
    if chance is not None:
        f.add_trace(go.Scatter(x=[0, 1], y=chance, mode="lines", name="chance",
                               line={"dash": "dash", "color": "grey"}))
    kind = "" if len(v.classes or []) == 2 else " (one class vs the rest)"
    f.update_layout(title=f"{title}{kind}", xaxis_title=x_title, yaxis_title=y_title,
                    xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return f


def roc_figure(v: Validation) -> Any:
    from sklearn.metrics import roc_auc_score, roc_curve

    def curve(y: np.ndarray, s: np.ndarray) -> tuple[Any, Any, str]:
        fpr, tpr, _ = roc_curve(y, s)
        return fpr, tpr, f"AUC {roc_auc_score(y, s):.3f}"

    return _class_curves(v, "ROC curve", "false positive rate", "true positive rate", curve,
                         [0, 1])


def pr_figure(v: Validation) -> Any:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    def curve(y: np.ndarray, s: np.ndarray) -> tuple[Any, Any, str]:
        prec, rec, _ = precision_recall_curve(y, s)
        return rec, prec, f"AP {average_precision_score(y, s):.3f}"

    binary = len(v.classes or []) == 2  # the share of positives; no single line for many classes
    chance = [float(np.mean(v.y_valid == 1))] * 2 if binary else None
    return _class_curves(v, "Precision-recall curve", "recall", "precision", curve, chance)


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
