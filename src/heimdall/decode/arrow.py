"""Arrow IPC payloads: one message carries a record batch of many rows (for high-rate producers).

The payload is an Arrow IPC stream with columns for the key (unless ``key_from =
"message_key"``), the event time (when it comes from the payload) and every field. A message
that does not fit is dead-lettered whole: it is one message, however many rows it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from heimdall.decode.base import Decoded, Decoder


class ArrowDecoder(Decoder):
    """Arrow IPC stream per message; columns named like the stream's key, time and fields."""

    def decode(
        self,
        payloads: Sequence[bytes],
        message_keys: Sequence[str] | None = None,
        times_ns: Sequence[int] | None = None,
    ) -> Decoded:
        keys: list[Any] = []
        values: list[np.ndarray] = []
        ts: list[np.ndarray] = []
        row_msg: list[np.ndarray] = []
        bad: list[tuple[int, str]] = []
        for i, payload in enumerate(payloads):
            try:
                k, v, t = self._one(payload, i, message_keys, times_ns)
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                bad.append((i, f"{type(exc).__name__}: {exc}"))
                continue
            keys.extend(k)
            values.append(v)
            ts.append(t)
            row_msg.append(np.full(len(k), i, np.int64))
        if not values:
            empty = np.empty((0, self.F), self.dtype)
            return Decoded([], empty, np.empty(0, np.int64), np.empty(0, np.int64), bad)
        return Decoded(keys, np.concatenate(values), np.concatenate(ts),
                       np.concatenate(row_msg), bad)

    def _one(
        self,
        payload: bytes,
        i: int,
        message_keys: Sequence[str] | None,
        times_ns: Sequence[int] | None,
    ) -> tuple[list[Any], np.ndarray, np.ndarray]:
        table = pa.ipc.open_stream(payload).read_all()
        n = table.num_rows
        spec = self.spec
        names = set(table.column_names)
        want = list(spec.fields)
        if self.key_from == "payload":
            want.append(spec.key)
        if self.time_from == "payload" and spec.time is not None:
            want.append(spec.time)
        missing = [c for c in want if c not in names]
        if missing:
            raise ValueError(f"columns {missing} missing; the batch has {table.column_names}")
        values = np.empty((n, self.F), self.dtype)
        for j, name in enumerate(spec.fields):
            col = table.column(name)
            if col.null_count:
                raise ValueError(f"field {name!r} holds {col.null_count} null(s)")
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                raise TypeError(f"field {name!r} is {col.type}, not a number")
            values[:, j] = col.cast(pa.from_numpy_dtype(self.dtype)).to_numpy()
        rows = self.nonfinite_reason(values)
        if rows is not None:
            raise ValueError(f"row {int(rows[0])}: " + self.field_of_nonfinite(values[rows[0]]))
        if self.key_from == "payload":
            kcol = table.column(spec.key)
            if kcol.null_count:
                raise ValueError(f"key column {spec.key!r} holds null(s)")
            if not (pa.types.is_string(kcol.type) or pa.types.is_large_string(kcol.type)
                    or pa.types.is_integer(kcol.type)):
                raise TypeError(f"key column {spec.key!r} is {kcol.type}; use string or int")
            keys = kcol.to_pylist()
            if any(k == "" for k in keys):
                raise ValueError(f"key column {spec.key!r} holds an empty key")
        else:
            key = message_keys[i] if message_keys is not None else None
            if not key:
                raise ValueError("the message has no key (key_from = 'message_key')")
            keys = [key] * n
        if self.time_from == "payload" and spec.time is not None:
            tcol = table.column(spec.time)
            if tcol.null_count:
                raise ValueError(f"time column {spec.time!r} holds null(s)")
            if pa.types.is_timestamp(tcol.type):
                tcol = tcol.cast(pa.timestamp("ns")).cast(pa.int64())
                ts = tcol.to_numpy().astype(np.int64)
            else:
                ts, ok = self.payload_times_to_ns(tcol.to_numpy())
                if ok is not None and not ok.all():
                    raise ValueError(f"time column {spec.time!r} holds out-of-range values")
        else:
            t = times_ns[i] if times_ns is not None else 0
            ts = np.full(n, t, np.int64)
        return keys, values, ts
