"""Temperature scaling of the final model's class probabilities, where log loss is the metric.

One number ``T`` is fitted on the final model's out-of-fold predictions (the blend of its
members with their weights, on the rows every member was validated on): the probabilities
become ``p ** (1 / T)``, renormalized. ``T > 1`` softens over-confident models (forests,
boosted trees fitted to the last round), ``T < 1`` sharpens timid ones; the ranking of the
classes in a row never changes, so accuracy and ROC AUC do not either. It is used only
where it pays: ``MIN_GAIN`` less validation log loss. One parameter fitted on thousands of
rows (the validation rows of the search) barely overfits, and the search's own comparisons
are untouched (it is applied to the final model only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from automl.trial_files import load_oof

log = logging.getLogger("automl")
MIN_GAIN = 0.005  # relative: 0.5% less log loss
T_RANGE = (0.2, 5.0)
MIN_ROWS = 1_000  # validated rows: digits' 360-row first fold chose 0.70 and lost on test


def scale(p: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities ``p`` (rows sum to 1) at ``temperature``.

    Example:
        >>> scale(np.array([[0.9, 0.1]]), 2.0).round(3)
        array([[0.75, 0.25]])
    """
    if temperature == 1.0:
        return p
    logp = np.log(np.clip(p, 1e-15, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))))


def fit_temperature(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """The temperature minimizing the log loss of ``p`` for labels ``y`` (class indices),
    with the log loss before and after.

    Example (a model right 75% of the time that says 99%):
        >>> y = np.array([0, 0, 0, 1] * 50)
        >>> p = np.tile([[0.99, 0.01]], (200, 1))
        >>> t, before, after = fit_temperature(y, p)
        >>> t > 1 and after < before
        True
    """
    from scipy.optimize import minimize_scalar

    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    res = minimize_scalar(lambda lt: _log_loss(y, scale(p, float(np.exp(lt)))),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
    t = float(np.exp(res.x))
    return t, _log_loss(y, p), _log_loss(y, scale(p, t))


def choose_temperature(y: np.ndarray, oof_dir: str | None, numbers: Sequence[int],
                       weights: Sequence[float], metric_name: str) -> float:
    """The final model's temperature: 1 unless the metric is log loss, every member's
    out-of-fold predictions are there, and scaling gains ``MIN_GAIN``."""
    if metric_name != "log_loss" or not oof_dir or not numbers:
        return 1.0
    oof = load_oof(oof_dir, list(numbers))
    if len(oof) != len(numbers):
        return 1.0
    n = len(y)
    blend = sum(w * oof[num].reshape(n, -1).astype(np.float64) for num, w in zip(numbers, weights))
    blend = blend / float(sum(weights))
    rows = ~np.isnan(blend).any(axis=1)
    if rows.sum() < MIN_ROWS:  # one temperature fitted on a few hundred rows overfits
        return 1.0
    p = np.clip(blend[rows], 1e-15, None)
    p = p / p.sum(axis=1, keepdims=True)
    t, before, after = fit_temperature(y[rows], p)
    if after > before * (1 - MIN_GAIN):
        log.debug("temperature %.3f would change validation log loss %.5f -> %.5f: not used",
                  t, before, after)
        return 1.0
    log.info("calibrated probabilities: temperature %.2f, validation log loss %.5g -> %.5g",
             t, before, after)
    return t
