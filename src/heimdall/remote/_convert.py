"""Between numpy / Heimdall types and the protobuf messages of ``proto/heimdall/v1``.

Arrays go as raw little-endian bytes with dtype and shape: one ``tobytes`` on the way out,
one ``np.frombuffer`` on the way in, never a Python object per value.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from heimdall.errors import SchemaError, shown
from heimdall.models.predictions import Prediction
from heimdall.remote._pb import heimdall_pb2 as pb
from heimdall.window.view import Window, WindowBatch

DTYPES = ("float32", "float64", "int32", "int64", "bool")
# dtype <-> name by dict: ``ndarray.dtype.name`` and dtype comparisons cost microseconds
_NAME = {np.dtype(name): name for name in DTYPES}
_DTYPE = {name: np.dtype(name) for name in DTYPES}
_SWAP = sys.byteorder != "little"  # the wire is little-endian


def to_array(a: np.ndarray, out: Any) -> Any:
    """Fill the ``Array`` message ``out`` from ``a`` (copied once, into the message)."""
    name = _NAME.get(a.dtype)
    if name is None:
        raise SchemaError(f"arrays of {a.dtype} cannot be sent; use one of {list(DTYPES)}")
    out.dtype = name
    out.shape[:] = a.shape
    out.data = (a.byteswap() if _SWAP else a).tobytes()
    return out


def from_array(msg: Any, what: str = "array") -> np.ndarray:
    """A read-only ndarray over the message's bytes. Raises SchemaError if they do not fit."""
    dt = _DTYPE.get(msg.dtype)
    if dt is None:
        raise SchemaError(f"{what}: dtype {msg.dtype!r} is not one of {list(DTYPES)}")
    shape = list(msg.shape)
    data = msg.data
    if min(shape, default=0) < 0 or math.prod(shape) * dt.itemsize != len(data):
        raise SchemaError(f"{what}: shape {tuple(shape)} of {msg.dtype} does not fit "
                          f"{len(data)} bytes")
    a = np.frombuffer(data, dtype=dt).reshape(shape)
    return a.byteswap() if _SWAP else a


def to_key(key: Any, out: Any) -> Any:
    """Fill the ``Key`` message ``out``. Raises SchemaError for a key neither str nor int."""
    if isinstance(key, str):
        out.s = key
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        out.i = int(key)
    else:
        raise SchemaError(f"a key is a str or an int; received {shown(key)} ({type(key).__name__})")
    return out


def from_key(msg: Any) -> str | int:
    kind = msg.WhichOneof("kind")
    if kind == "s":
        return str(msg.s)
    if kind == "i":
        return int(msg.i)
    raise SchemaError("a key is required (Key.s or Key.i)")


def add_keys(keys: Iterable[Any], field: Any) -> None:
    """Append keys to a repeated ``Key`` field."""
    for key in keys:
        to_key(key, field.add())


def from_keys(field: Sequence[Any]) -> list[str | int]:
    return [from_key(m) for m in field]


def window_reply(w: Window, out: Any, rows: int = 0) -> Any:
    """Fill a ``WindowReply`` from a Window (its last ``rows`` rows if > 0). From a view,
    check ``w.valid`` after: the bytes are consistent only if it still holds."""
    out.stream = w.stream
    to_key(w.key, out.key)
    out.fields[:] = w.fields
    values, ts = w.values, w.ts_ns
    if rows:
        values, ts = values[-rows:], ts[-rows:]
    to_array(values, out.values)
    to_array(ts, out.ts_ns)
    return out


def window_from(msg: Any) -> Window:
    values = from_array(msg.values, "values")
    ts = from_array(msg.ts_ns, "ts_ns")
    fields = tuple(msg.fields)
    return Window(msg.stream, from_key(msg.key), fields, values, ts)


def batch_reply(b: WindowBatch) -> Any:
    out = pb.WindowBatchReply(stream=b.stream, fields=b.fields)
    to_array(b.values, out.values)
    to_array(b.ts_ns, out.ts_ns)
    to_array(b.lengths, out.lengths)
    to_array(np.asarray(b.found, dtype=np.bool_), out.found)
    return out


def batch_from(msg: Any, keys: Sequence[Any]) -> WindowBatch:
    return WindowBatch(msg.stream, keys, tuple(msg.fields), from_array(msg.values, "values"),
                       from_array(msg.ts_ns, "ts_ns"), from_array(msg.lengths, "lengths"),
                       from_array(msg.found, "found"))


def prediction_reply(p: Prediction, out: Any) -> Any:
    out.model = p.model
    out.version = p.version
    to_key(p.key, out.key)
    if isinstance(p.score, list):
        out.score[:] = p.score
        out.score_is_list = True
    else:
        out.score[:] = [p.score]
    out.event_time_ns = p.event_time_ns
    out.message_id = p.message_id or ""
    out.latency_ms = p.latency_ms
    out.predicted_at_ns = p.predicted_at_ns
    out.window_rows = p.window_rows
    out.last_event_time_ns = p.last_event_time_ns
    return out


def prediction_from(msg: Any) -> Prediction:
    scores = list(msg.score)
    return Prediction(
        model=msg.model, version=msg.version, key=from_key(msg.key),
        score=scores if msg.score_is_list else (scores[0] if scores else float("nan")),
        event_time_ns=msg.event_time_ns, message_id=msg.message_id or None,
        latency_ms=msg.latency_ms, predicted_at_ns=msg.predicted_at_ns,
        window_rows=msg.window_rows, last_event_time_ns=msg.last_event_time_ns,
    )
