"""The small contracts that trainers, search spaces and executors build on.

Imports point one way: ``trainers`` and ``search_spaces`` depend on this module,
never the reverse. The engine finds trainers through :mod:`automl.registry`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from automl.schema import FeatureSchema


class Task(str, enum.Enum):
    """The kind of prediction problem."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not Task.REGRESSION


@dataclass(frozen=True)
class DataInfo:
    """What a search space may know about the data: sizes, task, balance, column kinds."""

    task: Task
    n_rows: int
    n_features: int
    n_classes: int
    class_counts: tuple[int, ...]
    schema: FeatureSchema
    n_train_rows: int  # rows a single trial trains on (a fold's or the holdout's training part)
    # the sentence encoder whose embeddings of the text columns are cached for this run
    # (automl.text_embeddings); None: text columns get TF-IDF only
    text_backbone: str | None = None

    @property
    def n_categorical(self) -> int:
        return len(self.schema.columns_of("categorical"))

    @property
    def imbalance_ratio(self) -> float:
        if not self.class_counts:
            return 1.0
        return max(self.class_counts) / max(1, min(self.class_counts))


@dataclass
class FitData:
    """One training job: a training part and a validation part of the data.

    ``y`` values are encoded: class indices ``0..n_classes-1`` for classification.
    """

    X_train: Any  # pandas DataFrame of raw (schema-cleaned) columns
    y_train: np.ndarray
    X_valid: Any | None
    y_valid: np.ndarray | None
    info: DataInfo
    metric: Any  # automl.metrics.Metric
    seed: int = 0
    n_threads: int = 1
    deadline: float = float("inf")  # time.monotonic() value after which training must stop
    sample_weight: np.ndarray | None = None
    accelerator: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


class Reporter(Protocol):
    """Pruning, one mechanism for every trainer."""

    def report(self, step: int, value: float) -> None:
        """Report the validation metric after ``step``; raises ``optuna.TrialPruned`` to stop."""


class NullReporter:
    """A reporter that never prunes (used for refits and folds after the first)."""

    def report(self, step: int, value: float) -> None:  # noqa: D102
        return None


@runtime_checkable
class Trainer(Protocol):
    """Fits one configuration of one learner family.

    ``space`` returns Optuna distributions (from ``search_spaces/``); ``default`` a cheap,
    strong first configuration; ``fit`` returns a fitted scikit-learn compatible estimator
    whose ``predict_proba`` (classification) or ``predict`` (regression) takes the raw frame.

    Optional class attributes say what a saved model of this trainer may hold, because a
    model folder loads only exact, named types (see :mod:`automl.allowlist`):

    - ``saved_types: ClassVar[frozenset[str]]``: the exact dotted names
      (``module.Class``, as ``type(obj).__module__`` spells it) of the classes its fitted
      estimator contains beyond the engine's preprocessing, e.g.
      ``frozenset({"lightgbm.sklearn.LGBMClassifier", "lightgbm.basic.Booster"})``;
    - ``saved_functions: ClassVar[frozenset[str]]``: plain functions it stores (referenced
      by name, e.g. in a ``FunctionTransformer``), rarely needed.

    A trainer without them can only save models built from the core types.
    """

    name: ClassVar[str]
    tasks: ClassVar[frozenset[Task]]

    def space(self, info: DataInfo) -> Mapping[str, Any]: ...

    def default(self, info: DataInfo) -> Mapping[str, Any]: ...

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Any: ...
