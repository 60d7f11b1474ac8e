"""The leaderboard: one row per trial, read from the study (the single source of truth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from automl.study import own_params

BALANCE_COLUMNS = ("balanced_accuracy", "macro_f1", "min_class_recall")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def leaderboard(study: optuna.Study, greater_is_better: bool | None = None) -> pd.DataFrame:
    """One row per trial: learner, parameters, score, fit time, state, failure reason.

    Completed trials come first, best first; then pruned, failed and running ones.
    """
    if greater_is_better is None:
        greater_is_better = study.direction == optuna.study.StudyDirection.MAXIMIZE
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        learner = t.params.get("learner", t.user_attrs.get("learner", ""))
        params = own_params(t.params, learner)
        row = {
            "trial": t.number, "learner": learner, "state": t.state.name.lower(),
            "score": t.value if t.state == TrialState.COMPLETE else np.nan,
            "fit_time_s": t.user_attrs.get("fit_time", np.nan),
            "duration_s": t.duration.total_seconds() if t.duration is not None else np.nan,
        }
        for col in BALANCE_COLUMNS:
            if col in t.user_attrs:
                row[col] = t.user_attrs[col]
        if t.state == TrialState.PRUNED and t.intermediate_values:
            row["pruned_at_step"] = max(t.intermediate_values)
        row["fail_reason"] = t.user_attrs.get("fail_reason", "")
        row["params"] = json.dumps(params, sort_keys=True, default=str)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["rank", "trial", "learner", "state", "score", "fit_time_s", "params"])
    order = {"complete": 0, "pruned": 1, "fail": 2, "running": 3, "waiting": 4}
    df["_state"] = df["state"].map(order).fillna(5)
    df["_score"] = -df["score"] if greater_is_better else df["score"]
    df = df.sort_values(["_state", "_score", "trial"], na_position="last").drop(columns=["_state", "_score"])
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.reset_index(drop=True)


def escape_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells a spreadsheet would run as formulas with a quote (CSV injection)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            s = out[col]
            mask = s.map(lambda v: isinstance(v, str) and v.startswith(_FORMULA_START)
                         and not _is_number(v))
            if mask.any():
                out[col] = s.where(~mask, "'" + s.astype(str))
    return out


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a CSV atomically, with formula-like cells escaped."""
    from automl.persistence import atomic_write_text

    atomic_write_text(Path(path), escape_formulas(df).to_csv(index=False))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
