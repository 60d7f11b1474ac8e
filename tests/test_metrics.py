import numpy as np
import pytest

from automl.contracts import Task
from automl.exceptions import ConfigError
from automl.metrics import METRICS, balance_report, get_metric


def test_defaults_and_errors():
    assert get_metric("auto", Task.BINARY).name == "roc_auc"
    assert get_metric("auto", Task.MULTICLASS).name == "log_loss"
    assert get_metric("auto", Task.REGRESSION).name == "rmse"
    with pytest.raises(ConfigError, match="does not apply"):
        get_metric("rmse", Task.BINARY)
    with pytest.raises(ConfigError, match="unknown metric"):
        get_metric("auc2", Task.BINARY)


def test_metrics_compute_on_probabilities():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4], [0.9, 0.1]])
    for name, m in METRICS.items():
        if Task.BINARY in m.tasks:
            assert np.isfinite(m(y, p, 2)), name
    assert get_metric("accuracy", Task.BINARY)(y, p, 2) == pytest.approx(0.8)


def test_multiclass_with_absent_class_and_balance():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert get_metric("roc_auc", Task.MULTICLASS)(y, p, 3) == pytest.approx(1.0)
    assert np.isfinite(get_metric("log_loss", Task.MULTICLASS)(y, p, 3))
    rep = balance_report(y, p, 3)
    assert rep["min_class_recall"] == 0.0 and rep["balanced_accuracy"] == 1.0
