"""Records every model deserialization (for tests that prove a refused folder loads nothing).

Loaded into a CLI subprocess through ``AUTOML_PLUGINS=tests.deserialize_spy``; each call
of ``skops.io.load``/``loads`` appends a line to the file named by ``AUTOML_TEST_LOADS``.
"""

from __future__ import annotations

import os
from typing import Any

from automl.persistence import skops_io

_sio = skops_io()


def _spy(name: str) -> Any:
    real = getattr(_sio, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with open(os.environ["AUTOML_TEST_LOADS"], "a") as fh:
            fh.write(f"{name}\n")
        return real(*args, **kwargs)

    return wrapper


for _name in ("load", "loads"):
    setattr(_sio, _name, _spy(_name))
