"""Importing pandas without pyarrow for a small table.

pandas 3 imports pyarrow at ``import pandas`` whenever it is installed, only to back its
string dtype. That costs every process about 45 MB (pyarrow's libraries and objects) and
buys nothing on a small table: on fishing_mode (945 rows) at 60 s the run's process tree
held about 320 MB of PSS with it and about 250 MB without. On a large table pyarrow's
strings pay: 2,000,000 rows read 0.9 s and had their columns inferred 1.9 s faster with it.
So the CLI imports pandas without pyarrow when the table it reads is a CSV file smaller
than :data:`SMALL_TABLE_BYTES`; Parquet, standard input and larger files keep it.

pyarrow is hidden from pandas' import only: a later ``import pyarrow`` (Parquet, Ray, a
text backbone) still works, and pandas then backs its strings with Python objects, as it
does wherever pyarrow is not installed. A process that imported pandas already is left
as it is.

:func:`in_background` imports the search's modules (scikit-learn and Optuna: about a
second) in a thread while the CLI reads the table: pandas' CSV parser lets go of the
interpreter lock while it tokenizes, so on a large file the two overlap.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path

SMALL_TABLE_BYTES = 16 * 2**20  # CSV files smaller than this are read without pyarrow
_PARQUET_MAGIC = b"PAR1"


def small_csv(path: str | None) -> bool:
    """Whether ``path`` is a regular file under :data:`SMALL_TABLE_BYTES` that is not
    Parquet (by name or by its first bytes)."""
    if not path or path == "-":
        return False
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size >= SMALL_TABLE_BYTES:
            return False
        if p.suffix.lower() in (".parquet", ".pq"):
            return False
        with p.open("rb") as fh:
            return fh.read(4) != _PARQUET_MAGIC
    except OSError:
        return False


def import_pandas(without_pyarrow: bool) -> bool:
    """Import pandas, hiding pyarrow from it when ``without_pyarrow``; True when pandas was
    imported so (False: it was imported before, or with pyarrow)."""
    if "pandas" in sys.modules or not without_pyarrow or "pyarrow" in sys.modules:
        import pandas  # noqa: F401
        return False
    sys.modules["pyarrow"] = None  # type: ignore[assignment]  # `import pyarrow` raises ImportError
    try:
        import pandas  # noqa: F401
    finally:
        del sys.modules["pyarrow"]
    return True


def in_background(*names: str) -> Callable[[], None]:
    """Import the modules ``names`` in a thread now; call what this returns to wait for it
    (before anything forks: a thread at a fork is unsafe). A module that fails to import
    here is imported again by the caller's own import statement, which raises its error."""
    def work() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - the caller's import raises it
                return

    thread = threading.Thread(target=work, name="automl-import", daemon=True)
    thread.start()
    return thread.join
