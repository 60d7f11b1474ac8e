"""What the search keeps of a trial beside the study: its out-of-fold predictions (for
ensemble selection) and, with ``--bagging``, its pickled fold models.

Only the driver (the process that owns the study) writes these files: executors send a
trial's predictions and fold models back with its result, so trials on other machines
need no shared disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna

from automl.metrics import Metric
from automl.study import best_trials

ENSEMBLE_CANDIDATES = 10  # the best trials ensemble selection looks at (plus each learner's best)
MAX_FOLD_MODELS_BYTES = 256 * 2**20  # a trial's pickled fold models larger than this are not kept


def save_oof(folder: str, number: int, oof: np.ndarray) -> None:
    """Keep a trial's out-of-fold predictions for ensemble selection (atomic write)."""
    path = Path(folder) / f"trial-{number}.npy"
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(oof, dtype=np.float32))
    os.replace(tmp, path)


def load_oof(folder: str, numbers: Sequence[int]) -> dict[int, np.ndarray]:
    out = {}
    for n in numbers:
        path = Path(folder) / f"trial-{n}.npy"
        if path.is_file():
            try:
                out[n] = np.load(path)
            except (OSError, ValueError):
                continue
    return out


def fold_models_path(folder: str, number: int) -> Path:
    return Path(folder) / f"trial-{number}.folds.pkl"


def save_fold_models(folder: str, number: int, blob: bytes) -> None:
    """Keep a trial's pickled fold models (the final model may bag them), within a size cap."""
    if len(blob) > MAX_FOLD_MODELS_BYTES:
        return
    from automl.persistence import atomic_write_bytes

    atomic_write_bytes(fold_models_path(folder, number), blob)


def candidate_numbers(study: optuna.Study, metric: Metric,
                      n: int = ENSEMBLE_CANDIDATES) -> list[int]:
    """The trials ensemble selection looks at: the ``n`` best, then each learner's best."""
    ranked = best_trials(study, metric, 10**9)
    numbers = [t.number for t in ranked[:n]]
    seen = {t.params.get("learner") for t in ranked[:n]}
    for t in ranked[n:]:
        if t.params.get("learner") not in seen:
            seen.add(t.params.get("learner"))
            numbers.append(t.number)
    return numbers


def candidate_threshold(study: optuna.Study, metric: Metric, learner: str,
                        n: int = ENSEMBLE_CANDIDATES) -> float | None:
    """The value a new ``learner`` trial must beat to become an ensemble candidate (None:
    any value does): the n-th best overall or that learner's best, whichever is worse."""
    ranked = best_trials(study, metric, 10**9)
    own = next((t.value for t in ranked if t.params.get("learner") == learner), None)
    if own is None or len(ranked) < n:
        return None
    nth = ranked[n - 1].value
    return nth if metric.better(own, nth) else own


def prune_fold_models(folder: str, study: optuna.Study, metric: Metric) -> None:
    """Delete the fold models of finished trials that are no longer ensemble candidates
    (running trials' files are left alone: their results are still to come)."""
    keep = set(candidate_numbers(study, metric))
    finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    for path in Path(folder).glob("trial-*.folds.pkl"):
        try:
            number = int(path.name.split("-", 1)[1].split(".", 1)[0])
        except ValueError:
            continue
        if number in finished and number not in keep:
            path.unlink(missing_ok=True)


def prune_oof(folder: str, study: optuna.Study, metric: Metric, keep: int = 30) -> None:
    """Keep the out-of-fold predictions of the best trials only (a resume ensembles those)."""
    kept = {f"trial-{t.number}.npy" for t in best_trials(study, metric, keep)}
    for path in Path(folder).glob("trial-*.npy"):
        if path.name not in kept:
            path.unlink(missing_ok=True)
