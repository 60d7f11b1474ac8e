"""The exception tree. Every error a user can cause is an :class:`AutoMLError`.

Messages say what was wrong, the value seen, and how to fix it, on one line.
"""

from __future__ import annotations


class AutoMLError(Exception):
    """Base class of every error automl raises on purpose."""

    exit_code: int = 2


class DataError(AutoMLError, ValueError):
    """The input data cannot be used as it is (missing file, bad target, ...)."""


class ConfigError(AutoMLError, ValueError):
    """An option or parameter has a bad value."""


class ModelFileError(AutoMLError, ValueError):
    """A saved model folder is missing, tampered with, or from an incompatible version."""


class OutputExistsError(AutoMLError, FileExistsError):
    """The output folder exists and would be overwritten."""


class SearchFailedError(AutoMLError, RuntimeError):
    """No trial of the search succeeded."""

    exit_code = 1


class ResourceError(AutoMLError, OSError):
    """The machine ran out of something (disk space, memory, permission to write): exit 3."""

    exit_code = 3


class MissingDependencyError(AutoMLError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class TrialFailed(Exception):
    """A trial failed for a known reason (raised inside the objective, caught by the search)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise an error naming the extra to install.

    Example:
        >>> torch = require("torch", "deep")  # doctest: +SKIP
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"`{module}` is needed for this feature but is not installed ({exc}); "
            f"install it with `pip install 'automl[{extra}]'`."
        ) from None
