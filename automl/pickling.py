"""Pickles of fitted models, for the files and messages a run passes between its processes
(a trial's kept model, a refit, bagged fold models); never for model files (those are skops,
see :mod:`automl.persistence`).

A trainer may register a cheaper way to pickle one of its types: the function returns what
``__reduce__`` would (a callable and its arguments), and the callable must be importable
where the pickle is read. LightGBM's own ``Booster`` pickling builds its model text through
a ctypes buffer, bytes and a decoded str and encodes it again to write it; LightGBM writing
the same text itself takes half the time and 0.6 of the memory added on a 30,000-tree
model (``trainers.lightgbm_trainer``; ``benchmarks/pickle_models.py``).

    >>> import pickle
    >>> from fractions import Fraction
    >>> register_reducer(Fraction, lambda f: (Fraction, (f.numerator, 10 * f.denominator)))
    >>> pickle.loads(dumps([Fraction(1, 2), 3]))
    [Fraction(1, 20), 3]
    >>> del _REDUCERS[Fraction]
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import IO, Any

_REDUCERS: dict[type, Callable[[Any], Any]] = {}


def register_reducer(cls: type, reduce: Callable[[Any], Any]) -> None:
    """Pickle exact instances of ``cls`` as ``reduce(obj)`` says (``__reduce__``'s form, or
    ``NotImplemented`` for the usual pickling)."""
    _REDUCERS[cls] = reduce


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        reduce = _REDUCERS.get(type(obj))
        return NotImplemented if reduce is None else reduce(obj)


def dump(obj: Any, fh: IO[bytes]) -> None:
    """``pickle.dump`` at the highest protocol, with the registered reducers."""
    _Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)


def dumps(obj: Any) -> bytes:
    """``pickle.dumps`` at the highest protocol, with the registered reducers."""
    if not _REDUCERS:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    buf = io.BytesIO()
    dump(obj, buf)
    return buf.getvalue()
