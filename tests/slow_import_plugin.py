"""A plugin whose import takes a while and turns a Ctrl-C that lands in it into an
ImportError, as pybind11's module initialisation does ("initialization failed": scipy's and
matplotlib's compiled modules); tests/test_resume.py interrupts the CLI while it loads.
It touches ``$AUTOML_TEST_IMPORTING`` when it starts, so the test knows when to signal."""

import os
import time
from pathlib import Path

Path(os.environ["AUTOML_TEST_IMPORTING"]).touch()
try:
    time.sleep(3.0)
except KeyboardInterrupt:
    raise ImportError("initialization failed") from None
