"""Misbehaving trainers for the trustworthy-run tests; importing this module registers them.

A CLI subprocess loads them through the ``AUTOML_PLUGINS`` environment variable
(``AUTOML_PLUGINS=tests.fake_trainers`` with the repository root on ``PYTHONPATH``); the
Python API sees them once this module is imported, and so do the forked trial children.
Each wraps logistic regression, so a model it trains is an ordinary scikit-learn pipeline
that a model folder can hold.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from automl.contracts import FitData, Fitted, Reporter
from automl.registry import register
from trainers.sklearn_trainers import LogisticTrainer

SLEEP_S = float(os.environ.get("AUTOML_TEST_SLEEP_S", "0.4"))


@register
class SleepyTrainer(LogisticTrainer):
    """Logistic regression that takes ``SLEEP_S`` seconds per fit (trials last seconds)."""

    name = "sleepy"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        time.sleep(SLEEP_S)
        return super().fit(params, data, reporter)


@register
class RowSleepyTrainer(LogisticTrainer):
    """Logistic regression whose fit sleeps ``AUTOML_TEST_SLEEP_PER_ROW_S`` per training row
    and ignores deadlines (a learner whose one fit cannot stop early and grows with rows)."""

    name = "rowsleepy"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        time.sleep(float(os.environ.get("AUTOML_TEST_SLEEP_PER_ROW_S", "0")) * len(data.y_train))
        return super().fit(params, data, reporter)


@register
class EnvProbeTrainer(LogisticTrainer):
    """Logistic regression that writes the trial's environment variable named by
    ``AUTOML_TEST_ENV_NAME`` (or ``<unset>``) to the file ``AUTOML_TEST_ENV_OUT``."""

    name = "envprobe"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        value = os.environ.get(os.environ["AUTOML_TEST_ENV_NAME"], "<unset>")
        with open(os.environ["AUTOML_TEST_ENV_OUT"], "w") as f:
            f.write(value)
        return super().fit(params, data, reporter)


@register
class HangTrainer(LogisticTrainer):
    """Never returns: ignores its deadline, so only a hard kill stops it."""

    name = "hang"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        while True:
            time.sleep(1.0)


@register
class LitterTrainer(LogisticTrainer):
    """Leaves a temporary folder with a file in it (its path appended to the file
    ``AUTOML_TEST_TMP_LOG``), then never returns: only a hard kill stops it."""

    name = "litter"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        folder = tempfile.mkdtemp(prefix="litter-")
        Path(folder, "left.bin").write_bytes(b"x" * 4096)
        with open(os.environ["AUTOML_TEST_TMP_LOG"], "a") as f:
            f.write(folder + "\n")
        while True:
            time.sleep(1.0)


@register
class BoomTrainer(LogisticTrainer):
    name = "boom"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        raise RuntimeError("learner exploded")


class _NaNModel:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.full((len(X), len(self.classes_)), np.nan)


@register
class NaNTrainer(LogisticTrainer):
    """Fits, then predicts NaN: the validation metric is not a number."""

    name = "nan"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        return Fitted(_NaNModel(super().fit(params, data, reporter).estimator))


@register
class HogTrainer(LogisticTrainer):
    """Allocates and touches 1 GB in 50 MB steps (a memory cap of a few hundred MB stops it)."""

    name = "hog"

    def fit(self, params: Mapping[str, Any], data: FitData, reporter: Reporter) -> Fitted:
        blocks = []
        for _ in range(20):
            blocks.append(np.ones(50 * 2**20 // 8))  # touched, so resident
            time.sleep(0.02)
        return super().fit(params, data, reporter)
