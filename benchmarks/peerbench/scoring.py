"""Test-set metrics, the constant baseline, normalized scores and ranks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

EPS = 1e-15
PROBA_PREFIX = "proba_"


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool


METRICS = {
    "binary": Metric("roc_auc", True),
    "multiclass": Metric("log_loss", False),
    "regression": Metric("rmse", False),
}


class PredictionError(ValueError):
    """The predictions file is missing, malformed or does not match the test set."""


def label_key(value: object) -> str:
    """Canonical text of a class label, so '1', '1.0' and 1 compare equal."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


def read_truth(test_csv: Path, target: str, task: str) -> np.ndarray:
    dtype = float if task == "regression" else str
    column = pd.read_csv(test_csv, usecols=[target], dtype={target: dtype}, keep_default_na=False)
    values = column[target].to_numpy()
    return values.astype(float) if task == "regression" else np.array([label_key(v) for v in values])


def _proba_matrix(preds: pd.DataFrame, classes: list[str], task: str) -> np.ndarray:
    found = {label_key(c[len(PROBA_PREFIX):]): c for c in preds.columns if c.startswith(PROBA_PREFIX)}
    if not found:
        raise PredictionError("no proba_<class> columns in predictions")
    unknown = set(found) - set(classes)
    if unknown:
        raise PredictionError(f"proba columns for unknown classes: {sorted(unknown)[:5]}")
    matrix = np.zeros((len(preds), len(classes)))
    for j, cls in enumerate(classes):
        if cls in found:
            matrix[:, j] = pd.to_numeric(preds[found[cls]], errors="coerce").to_numpy(dtype=float)
    if task == "binary" and len(found) == 1:
        present = classes.index(next(iter(found)))
        matrix[:, 1 - present] = 1.0 - matrix[:, present]
    if not np.isfinite(matrix).all():
        raise PredictionError("non-finite probabilities in predictions")
    return matrix


def score_predictions(preds_csv: Path, truth: np.ndarray, task: str, classes: list[str]) -> float:
    """Score one predictions file on the test labels; raises PredictionError when unusable."""
    if not preds_csv.is_file():
        raise PredictionError(f"predictions file not written: {preds_csv.name}")
    preds = pd.read_csv(preds_csv)
    if len(preds) != len(truth):
        raise PredictionError(f"{len(preds)} prediction rows for {len(truth)} test rows")
    if task == "regression":
        if "prediction" not in preds.columns:
            raise PredictionError("no 'prediction' column in predictions")
        values = pd.to_numeric(preds["prediction"], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise PredictionError("non-finite regression predictions")
        return rmse(truth, values)
    return score_proba(truth, _proba_matrix(preds, classes, task), task, classes)


def rmse(truth: np.ndarray, values: np.ndarray) -> float:
    return float(math.sqrt(mean_squared_error(truth, values)))


def score_proba(truth: np.ndarray, proba: np.ndarray, task: str, classes: list[str]) -> float:
    if task == "binary":
        positive = classes[1]
        return float(roc_auc_score(truth == positive, proba[:, 1]))
    clipped = np.clip(proba, EPS, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return float(log_loss(truth, clipped, labels=classes))


def constant_score(train_csv: Path, target: str, task: str, truth: np.ndarray, classes: list[str]) -> float:
    """Score of the constant predictor: train class prior, or train mean for regression."""
    train_truth = read_truth(train_csv, target, task)
    if task == "regression":
        return rmse(truth, np.full(len(truth), train_truth.mean()))
    prior = np.array([(train_truth == c).mean() for c in classes])
    return score_proba(truth, np.tile(prior, (len(truth), 1)), task, classes)


def normalize(scores: dict[str, float], baseline: float, higher_is_better: bool) -> dict[str, float]:
    """(score - baseline) / (best - baseline) with 1 = best system, 0 = constant predictor.

    Worse-than-constant scores come out negative. When no system beats the
    constant predictor every system gets 0.
    """
    sign = 1.0 if higher_is_better else -1.0
    gains = {name: sign * (score - baseline) for name, score in scores.items()}
    best_gain = max(gains.values(), default=0.0)
    if best_gain <= 0:
        return {name: 0.0 for name in scores}
    return {name: gain / best_gain + 0.0 for name, gain in gains.items()}  # + 0.0: no -0.0


def ranks(scores: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank 1 = best; ties share the average rank."""
    series = pd.Series(scores, dtype=float)
    return series.rank(ascending=not higher_is_better, method="average").to_dict()
