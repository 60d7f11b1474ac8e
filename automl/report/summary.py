"""The report's first two sections: the run summary (a key-value table) and the leaderboard."""

from __future__ import annotations

import json
import math
from typing import Any

from automl.report.learners import learner_of
from automl.report.page import Section, esc, fmt
from automl.rundir import RunFolder
from automl.study import best_trials

LEADERBOARD_ROWS = 50
BOARD_COLUMNS = ("rank", "trial", "learner", "state", "score", "fit_time_s", "balanced_accuracy",
                 "macro_f1", "min_class_recall", "pruned_at_step", "fail_reason", "params")
ALWAYS_SHOWN = ("rank", "trial", "learner", "state", "score", "params")
BOARD_HEADERS = {"fit_time_s": "fit s", "balanced_accuracy": "bal. acc", "macro_f1": "macro F1",
                 "min_class_recall": "min recall", "pruned_at_step": "pruned at",
                 "fail_reason": "why it failed"}


def _saved_model(manifest: dict[str, Any]) -> str:
    """What the run saved: the refitted best trial, its bagged folds, or an ensemble."""
    members = manifest.get("members") or []
    if len(members) > 1:
        return "ensemble of " + ", ".join(
            f"trial {m.get('trial')} {m.get('learner')} (weight {float(m.get('weight', 0)):.2f})"
            for m in members)
    if members:
        first = members[0]
        how = (f"its {first['bagged_folds']} fold models averaged" if first.get("bagged_folds")
               else "refitted on all rows")
        return f"trial {first.get('trial')} {first.get('learner')}, {how}"
    return "none saved (the run did not finish)"


def summary_section(run: RunFolder, study: Any) -> Section:
    """The run at a glance: task, data, validation, trials by state, best trial, saved model."""
    from optuna.trial import TrialState

    info = {**study.user_attrs, **run.info}
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state != TrialState.WAITING:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    direction = study.direction.name.lower()
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    best = next(iter(best_trials(done, direction, 1)), None)
    manifest = run.manifest or {}
    vscore = manifest.get("validation_score", info.get("validation_score"))
    rows = [
        ("task", info.get("task")), ("target", info.get("target")),
        ("metric", f"{info.get('metric')} ({direction})"),
        ("rows", info.get("n_rows")), ("validation", info.get("validation")),
        ("learners searched", ", ".join(info.get("learners") or [])),
        ("trials", ", ".join(f"{n} {s}" for s, n in states.items()) or "none"),
        ("best trial", f"{best.number} ({learner_of(best)}): {info.get('metric')} = "
         f"{best.value:.6g}" if best else "no completed trial"),
        ("saved model", _saved_model(manifest)),
        ("model's validation score", f"{vscore:.6g}" if isinstance(vscore, (int, float)) else None),
        ("elapsed", f"{info['elapsed_s']} s" if info.get("elapsed_s") is not None else None),
        ("sampler / pruner / seed",
         f"{info.get('sampler', '?')} / {info.get('pruner', '?')} / {info.get('seed', '?')}"),
        ("data", info.get("data")), ("study", f"{run.study_name} in {run.storage_url}"),
        ("created", manifest.get("created")),
        ("automl", (manifest.get("packages") or {}).get("automl") or info.get("automl")),
    ]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>"
                   for k, v in rows if v not in (None, ""))
    sec = Section("summary", "Run summary", blocks=[f'<table class="kv">{body}</table>'])
    if run.summary is None:
        sec.notes.append("summary.json is missing: the run did not finish (interrupted or failed); "
                         "this report shows the study as it is.")
    return sec


def leaderboard_section(board: Any) -> Section:
    """The leaderboard as an HTML table: one row per trial, columns that say something."""
    sec = Section("leaderboard", "Leaderboard",
                  intro=f"One row per trial, completed trials first, best first "
                  f"({min(len(board), LEADERBOARD_ROWS)} of {len(board)} shown).")
    if board.empty:
        sec.notes.append("No trial has run.")
        return sec
    shown = board[[c for c in BOARD_COLUMNS if c in board.columns]].head(LEADERBOARD_ROWS)
    cols = [c for c in shown.columns
            if c in ALWAYS_SHOWN or shown[c].map(lambda v: fmt(v) != "").any()]
    head = "".join(f"<th>{esc(BOARD_HEADERS.get(c, c))}</th>" for c in cols)
    body = []
    for row in shown[cols].to_dict(orient="records"):
        if "params" in row:
            row["params"] = compact_params(row["params"])
        cells = "".join(f'<td class="c-{esc(c)}">{esc(fmt(row[c], 5))}</td>' for c in cols)
        body.append(f'<tr class="{esc(row.get("state", ""))}">{cells}</tr>')
    sec.blocks.append(f'<div class="scroll"><table class="board"><thead><tr>{head}</tr></thead>'
                      f'<tbody>{"".join(body)}</tbody></table></div>')
    return sec


def compact_params(text: Any) -> str:
    """``{"a": 0.123456789, "b": null}`` as ``a=0.1235, b=None`` for the leaderboard.

    Example:
        >>> compact_params('{"a": 0.123456789, "b": null}')
        'a=0.1235, b=None'
    """
    try:
        params = json.loads(text)
    except (TypeError, ValueError):
        return str(text)
    if not isinstance(params, dict):
        return str(text)
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())
