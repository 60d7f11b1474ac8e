"""What the search keeps of a trial beside the study: its out-of-fold predictions (for
ensemble selection), with ``--bagging`` its pickled fold models, and the best trials'
first-split models (:class:`KeptModels`).

Only the driver (the process that owns the study) writes these files: executors send a
trial's predictions and fold models back with its result, so trials on other machines
need no shared disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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


class KeptModels(Mapping):
    """Trial number -> a kept model's pickled bytes: in memory, or in files in ``folder``
    (read on access), so that the driver does not hold them."""

    def __init__(self, folder: str | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self._memory: dict[int, Any] = {}
        self._sizes: dict[int, int] = {}

    def put(self, number: int, blob: Any) -> None:
        self._sizes[number] = len(blob) if isinstance(blob, bytes) else 0
        if self.folder is not None and isinstance(blob, bytes):
            from automl.persistence import atomic_write_bytes

            try:
                atomic_write_bytes(self._path(number), blob)
                self._memory.pop(number, None)
                return
            except OSError:  # a full disk: keep it in memory rather than lose it
                pass
        self._memory[number] = blob

    def put_file(self, number: int, path: Path) -> bool:
        """Take the pickle a trial wrote to ``path`` (moved, not read); False if it is gone."""
        try:
            size = path.stat().st_size
            if self.folder is not None:
                os.replace(path, self._path(number))
            else:
                self._memory[number] = path.read_bytes()
                path.unlink()
        except OSError:
            return False
        self._sizes[number] = size
        return True

    def size(self, number: int) -> int:
        return self._sizes[number]

    def file(self, number: int) -> Path | None:
        """The file holding a kept model (None: not kept, or held in memory)."""
        if number not in self._sizes or number in self._memory or self.folder is None:
            return None
        path = self._path(number)
        return path if path.is_file() else None

    def keep_only(self, numbers: Sequence[int]) -> None:
        for number in set(self._sizes) - set(numbers):
            del self._sizes[number]
            if self._memory.pop(number, None) is None and self.folder is not None:
                self._path(number).unlink(missing_ok=True)

    def _path(self, number: int) -> Path:
        assert self.folder is not None
        return self.folder / f"trial-{number}.kept.pkl"

    def __getitem__(self, number: int) -> Any:
        if number not in self._sizes:
            raise KeyError(number)
        if number in self._memory:
            return self._memory[number]
        try:
            return self._path(number).read_bytes()
        except OSError:
            raise KeyError(number) from None

    def get(self, number: int, default: Any = None) -> Any:  # a vanished file is no model
        try:
            return self[number]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._sizes))

    def __len__(self) -> int:
        return len(self._sizes)
