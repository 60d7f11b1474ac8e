"""automl: an AutoML hyperparameter search engine built on Optuna.

``import automl`` is light: it loads no torch, lightning or ray, and the estimators are
imported on first use.

Example:
    >>> from automl import AutoMLClassifier  # doctest: +SKIP
    >>> clf = AutoMLClassifier(time_budget=30).fit(X, y)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AutoMLClassifier", "AutoMLRegressor", "load_model", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("AutoMLClassifier", "AutoMLRegressor"):
        from automl import api

        return getattr(api, name)
    if name == "load_model":
        from automl.persistence import load_model

        return load_model
    raise AttributeError(f"module 'automl' has no attribute {name!r}")
