"""How a forked child's result travels to its parent over their pipe.

A result is one pickled message, except for its large parts, which follow it as raw
messages of their own so that neither side holds them twice:

- ``bytes`` values of a result dict from :data:`BLOB_BYTES` (pickled models): inside the
  pickle they would be copied once more on each side (the pickle, then the bytes unpickled
  from it), and a forest's model is tens of MB;
- large arrays anywhere in the result (numpy, pandas, scipy.sparse), as pickle protocol 5's
  out-of-band buffers: each is sent from the array's own memory and read into one new
  buffer that the unpickled array then uses. The shared preprocessing of flights (262,000
  rows, two styles) is 122 MB: as one pickle, the child held it twice and the parent too.

While a result travels, the two processes together hold it about once, not twice:
:func:`send` lets each part go in the child as soon as it is sent (the result's other
references are gone by then), and :func:`receive` reads each array straight into its
buffer (``Connection.recv_bytes_into`` first reads a message whole into a ``BytesIO``, then
copies it). The shared preprocessing of adult (39,000 rows, 160 MB) used to peak at 608 MB
of PSS for the run while it crossed, against 440 MB before and after.
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

BLOB_BYTES = 2**20  # from this size, a result's bytes values and arrays travel on their own


@dataclass
class _Blobs:
    """A result dict whose large ``bytes`` values follow it, in the order of ``keys``."""

    value: dict[str, Any]
    keys: list[str]


@dataclass
class _Arrays:
    """Sent before a result whose large arrays follow it (after its pickle), with their sizes."""

    sizes: list[int]


def result_messages(status: str, value: Any) -> list[bytes | memoryview]:
    """The messages that carry ``(status, value)``, in order: the sizes of the arrays that
    follow (when any), the pickle, the arrays, the blobs. Made before any is sent, so a
    result that cannot be pickled raises before the parent reads anything."""
    value, blobs = _split_blobs(value)
    arrays: list[memoryview] = []
    data = pickle.dumps((status, value), protocol=5,
                        buffer_callback=functools.partial(_out_of_band, arrays))
    header = [pickle.dumps(_Arrays([a.nbytes for a in arrays]), protocol=5)] if arrays else []
    return [*header, data, *arrays, *blobs]


def receive(conn: Any) -> tuple[str, Any]:
    """One message from the child, ``(status, payload)``, with the arrays and blobs that
    follow it read in (EOFError where the child went first)."""
    message = pickle.loads(conn.recv_bytes())
    if isinstance(message, _Arrays):
        data = conn.recv_bytes()
        buffers = []
        for size in message.sizes:  # writable, unlike bytes: the arrays built on them are too
            buffers.append(buf := np.empty(size, dtype=np.uint8))
            _recv_into(conn, buf)
        message = pickle.loads(data, buffers=buffers)
        del data
    status, payload = message
    if isinstance(payload, _Blobs):
        payload = {**payload.value, **{key: conn.recv_bytes() for key in payload.keys}}
    return status, payload


def send(conn: Any, messages: list[bytes | memoryview]) -> None:
    """Send ``messages`` (from :func:`result_messages`) in order, emptying the list as it
    goes: a part whose last reference was in it is freed once sent, so the child's memory
    falls while the parent's grows. The caller drops its own references to the result first."""
    from automl.isolation import trim_heap

    while messages:
        message = messages.pop(0)
        conn.send_bytes(message)
        large = len(message) >= BLOB_BYTES
        del message
        if large:
            trim_heap()  # a freed block below glibc's (raised) mmap threshold stays in the heap


def _recv_into(conn: Any, buf: np.ndarray) -> None:
    """``conn.recv_bytes_into(buf)`` for a message of exactly ``buf.nbytes`` bytes, read from
    the pipe straight into ``buf`` (the same wire format: a 4-byte size, or -1 and 8 bytes)."""
    from multiprocessing.connection import Connection

    readv = getattr(os, "readv", None)
    if readv is None or not isinstance(conn, Connection):  # (Windows' pipes are not fds)
        conn.recv_bytes_into(buf)
        return
    fd = conn.fileno()
    size, = struct.unpack("!i", _read_exact(fd, 4))
    if size == -1:
        size, = struct.unpack("!Q", _read_exact(fd, 8))
    if size != buf.nbytes:
        raise EOFError(f"expected a message of {buf.nbytes} bytes, the child sent {size}")
    view = memoryview(buf).cast("B")
    while view.nbytes:
        n = readv(fd, [view])
        if n == 0:
            raise EOFError("the child closed the pipe in the middle of a message")
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("the child closed the pipe")
        data += chunk
    return data


def _out_of_band(arrays: list[memoryview], buf: pickle.PickleBuffer) -> bool:
    """``pickle.dumps``' buffer callback: keep a large contiguous buffer out of the pickle
    (returns False) and list it in ``arrays``; a small one stays in it (True)."""
    try:
        raw = buf.raw()
    except BufferError:  # not contiguous
        return True
    if raw.nbytes < BLOB_BYTES:
        return True
    arrays.append(raw)
    return False


def _split_blobs(value: Any) -> tuple[Any, list[bytes]]:
    if not isinstance(value, dict):
        return value, []
    keys = [k for k, v in value.items() if isinstance(v, bytes) and len(v) >= BLOB_BYTES]
    if not keys:
        return value, []
    return _Blobs({k: v for k, v in value.items() if k not in keys}, keys), [value[k] for k in keys]
