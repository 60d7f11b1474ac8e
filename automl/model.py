"""The fitted AutoML model: schema, label encoding and the winning estimator(s).

``predict`` matches input columns by name: order does not matter, extra columns are
ignored with a warning, missing ones are a clear error, and each column is coerced to
the kind it had in training (so changed dtypes and unseen categories are handled); values
that cannot be read are counted, warned about, and refused above
:data:`automl.schema.MAX_UNREADABLE` of a column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from automl.contracts import Task
from automl.exceptions import DataError
from automl.metrics import predict_scores
from automl.schema import FeatureSchema, clean_frame

log = logging.getLogger("automl")


class Deferred:
    """A member that waits on disk until it is used: :meth:`load` builds it. ``automl fit``
    saves its model straight after the search, and saving loads and writes one member at a
    time, so the members are never all in memory at once (two forests of an ensemble took
    280 MB beside each other)."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load

    def load(self) -> Any:
        return self._load()


@dataclass
class AutoMLModel:
    schema: FeatureSchema
    task: Task
    classes: list | None
    metric: str
    target: str
    members: list[Any]  # fitted pipelines (one, or the members of an ensemble)
    weights: list[float]
    description: list[dict[str, Any]] = field(default_factory=list)  # learner, params, trial
    validation_score: float | None = None  # of the whole model (ensemble or single trial)
    temperature: float = 1.0  # class probabilities' temperature (automl.calibration)

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def input_columns(self) -> list[str]:
        return [c.name for c in self.schema.columns]

    def _prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X, columns=self.input_columns if np.ndim(X) == 2 and np.shape(X)[1] == len(self.input_columns) else None)
        X = X.rename(columns=str)
        used = self.schema.used
        missing = [c for c in used if c not in X.columns]
        if missing:
            shown = ", ".join(f"'{c}'" for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"{len(missing)} column(s) the model needs are missing from the input: "
                            f"{shown}; add them (a column of empty values is accepted).")
        known = set(self.input_columns) | {self.target}
        extra = [c for c in X.columns if c not in known]
        if extra:
            log.warning("ignoring %d column(s) the model was not trained on: %s", len(extra),
                        ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
        return clean_frame(X, self.schema, check=True)

    def load_members(self) -> None:
        """Build the members that still wait on disk (:class:`Deferred`)."""
        self.members = [m.load() if isinstance(m, Deferred) else m for m in self.members]

    def predict_scores(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities ``(n, n_classes)`` (classification) or values ``(n,)`` (regression)."""
        Xc = self._prepare(X)
        self.load_members()
        total = None
        for w, member in zip(self.weights, self.members):
            pred = predict_scores(member, Xc, self.task, self.n_classes) * w
            total = pred if total is None else total + pred
        assert total is not None
        scores = total / float(sum(self.weights))
        if self.task.is_classification and self.temperature != 1.0:
            from automl.calibration import scale

            scores = scale(scores, self.temperature)
        return scores

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        scores = self.predict_scores(X)
        if self.task.is_classification:
            return np.asarray(self.classes, dtype=object)[np.argmax(scores, axis=1)]
        return scores

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """A frame with ``prediction`` and, for classification, one ``proba_<class>`` per class."""
        scores = self.predict_scores(X)
        if not self.task.is_classification:
            return pd.DataFrame({"prediction": scores})
        labels = np.asarray(self.classes, dtype=object)[np.argmax(scores, axis=1)]
        out = {"prediction": labels}
        for i, c in enumerate(self.classes or []):
            out[f"proba_{c}"] = scores[:, i]
        return pd.DataFrame(out)
