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
    # a refit on all rows: the rounds the search's early stopping kept (scaled to the rows)
    n_iterations: int | None = None
    # the search's shared preprocessing of this split: cache key -> (fitted preprocessor,
    # transformed training part, transformed validation part); see trainers._base.preprocess
    preprocessed: Mapping[str, Any] = field(default_factory=dict)
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


# The column kinds a trainer reads unless it declares ``input_kinds``.
TABULAR_KINDS = frozenset({"numeric", "categorical", "boolean", "datetime", "text"})


@dataclass(frozen=True)
class Fitted:
    """What :meth:`Trainer.fit` learned: the estimator and, for a trainer that stops early,
    the rounds (boosting iterations, epochs) it kept, which a refit on all rows reuses.

    ``valid_scores``: the estimator's predictions on ``data.X_valid`` in
    :func:`automl.metrics.predict_scores`'s form, when the trainer already has them (a
    booster's own running validation scores); the trial then does not predict again, which
    on a 3,000-tree model and 26,000 rows takes seconds it may not have left."""

    estimator: Any
    n_iterations: int | None = None
    valid_scores: Any = None


@runtime_checkable
class Trainer(Protocol):
    """Fits one configuration of one learner family.

    Required: ``name``, ``tasks``, ``space`` (Optuna distributions, from ``search_spaces/``),
    ``default`` (a cheap, strong first configuration) and ``fit``, which returns a
    :class:`Fitted` whose estimator is scikit-learn compatible: its ``predict_proba``
    (classification) or ``predict`` (regression) takes the raw frame. ``fit`` reports the
    validation metric after each round through ``reporter`` (same metric and scale as the
    final score) and leaves ``data`` as it found it.

    Optional hooks, declared here with their defaults (a class that subclasses ``Trainer``
    inherits them; :func:`automl.registry.register` gives them to one that does not):

    - ``style``: the name of the preprocessing style the trainer starts from (see
      :func:`automl.preprocessing.register_style`); the search fits it once per fold and
      shares it among trials (``data.preprocessed``). ``None``: the trainer preprocesses
      itself.
    - ``needs_accelerator``: it can use a GPU, so the run resolves ``--accelerator auto``.
    - ``input_kinds``: the column kinds it reads; a learner that reads none of the data's
      kinds is left out. ``auto_kinds``: kinds that make it join the default learners.
    - ``portfolio(info)``: strong configurations tried after every learner's default.
    - ``time_share``: a trial of it may be stopped at its share of the search time (the
      default; see :mod:`automl.fidelity`). ``False`` for learners whose one long fit is
      the point of the trial (fine-tuning a pretrained backbone): they keep the time left.
    - ``saved_types``, ``saved_functions``: what a saved model of this trainer may hold,
      because a model folder loads only exact, named types (see :mod:`automl.allowlist`):
      the exact dotted names (``module.Class``, as ``type(obj).__module__`` spells it) of
      the classes its fitted estimator contains beyond the engine's preprocessing, e.g.
      ``frozenset({"lightgbm.sklearn.LGBMClassifier", "lightgbm.basic.Booster"})``, and
      plain functions it stores (referenced by name, e.g. in a ``FunctionTransformer``).
      A trainer without them can only save models built from the core types.

    :func:`automl.testing.check_trainer` runs the contract's checks on a trainer.
    """

    name: ClassVar[str]
    tasks: ClassVar[frozenset[Task]]
    style: ClassVar[str | None] = None
    needs_accelerator: ClassVar[bool] = False
    input_kinds: ClassVar[frozenset[str]] = TABULAR_KINDS
    auto_kinds: ClassVar[frozenset[str]] = frozenset()
    time_share: ClassVar[bool] = True
    saved_types: ClassVar[frozenset[str]] = frozenset()
    saved_functions: ClassVar[frozenset[str]] = frozenset()

    def space(self, info: DataInfo) -> Mapping[str, Any]: ...

    def default(self, info: DataInfo) -> Mapping[str, Any]: ...

    def portfolio(self, info: DataInfo) -> list[dict[str, Any]]:
        """Extra strong configurations tried after every learner's default (none here)."""
        return []

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted: ...


OPTIONAL_HOOKS = ("style", "needs_accelerator", "input_kinds", "auto_kinds", "time_share",
                  "saved_types", "saved_functions", "portfolio")


def as_fitted(result: Any) -> Fitted:
    """A trainer's ``fit`` result as a :class:`Fitted` (a bare estimator, as trainers
    written before :class:`Fitted` return, kept no iteration count)."""
    return result if isinstance(result, Fitted) else Fitted(result)
