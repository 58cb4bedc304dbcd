"""Arrow IPC payloads: one message carries a record batch of many rows (for high-rate producers).

The payload is an Arrow IPC stream with columns for the key (unless ``key_from =
"message_key"``), the event time (when it comes from the payload) and every field. A message
that does not fit is dead-lettered whole: it is one message, however many rows it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
        key = None
        if self.key_from != "payload":
            key = message_keys[i] if message_keys is not None else None
            if not key:
                raise ValueError("the message has no key (key_from = 'message_key')")
        t = None
        if not (self.time_from == "payload" and self.spec.time is not None):
            t = times_ns[i] if times_ns is not None else 0
        rows = table_rows(self, table, key=key, ts_ns=t)
        if rows.bad:  # one message: dead-lettered whole
            row, reason = rows.bad[0]
            raise ValueError(f"row {row}: {reason}")
        return rows.keys, rows.values, rows.ts_ns


@dataclass
class Rows:
    """A table's rows as a stream takes them: ``keys``, ``values`` (n, F), ``ts_ns`` (n,) of
    the good rows, in table order; ``bad`` (row, reason) for the rows left out."""

    keys: list[Any]
    values: np.ndarray
    ts_ns: np.ndarray
    bad: list[tuple[int, str]]
    # the keys dictionary-encoded, when they were: ``keys[i] is distinct[codes[i]]``
    codes: np.ndarray | None = None
    distinct: np.ndarray | None = None

    def take(self, keep: np.ndarray, bad: list[tuple[int, str]] | None = None) -> Rows:
        """The rows where ``keep`` is True (with ``bad`` as the rows left out)."""
        return Rows([k for k, g in zip(self.keys, keep.tolist(), strict=True) if g],
                    self.values[keep], self.ts_ns[keep], bad or [],
                    None if self.codes is None else self.codes[keep], self.distinct)


def table_rows(decoder: Decoder, table: pa.Table | pa.RecordBatch, *, key: Any = None,
               ts_ns: int | None = None, time_column: str | None = None) -> Rows:
    """The rows of an Arrow table with columns named like the stream's key, time and fields:
    the one column-to-row conversion, for Arrow payloads and for history (``heimdall.offline``).

    ``key`` / ``ts_ns`` stand in for the key / time column when the message gives them. A
    column that is missing or of a type that cannot hold it raises ValueError or TypeError
    naming it; a row that cannot be taken (a null, a non-finite value under ``nan =
    "reject"``, a time outside int64 nanoseconds, an integer the dtype cannot hold, an empty
    key) is left out with its reason in ``bad``."""
    spec = decoder.spec
    n = table.num_rows
    names = set(table.column_names)
    tname = time_column or spec.time
    want = list(spec.fields)
    if key is None:
        want.append(spec.key)
    if ts_ns is None:
        if tname is None:
            raise ValueError("no time column: the stream stamps events on arrival; name the "
                             "history's time column")
        want.append(tname)
    missing = [c for c in want if c not in names]
    if missing:
        raise ValueError(f"columns {missing} missing; the batch has {table.column_names}")
    bad = np.zeros(n, bool)
    reasons: dict[int, str] = {}

    def flag(mask: np.ndarray, reason: str) -> None:
        new = mask & ~bad
        if new.any():
            reasons.update(dict.fromkeys(np.flatnonzero(new).tolist(), reason))
            bad[new] = True

    values = np.empty((n, decoder.F), decoder.dtype)
    for j, name in enumerate(spec.fields):
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                or pa.types.is_null(col.type)):
            raise TypeError(f"field {name!r} is {col.type}, not a number")
        if col.null_count:
            flag(np.asarray(col.is_null()), f"null in field {name!r}")
        raw = np.asarray((col.fill_null(0) if col.null_count else col).to_numpy(
            zero_copy_only=False))
        if decoder.dtype.kind == "i":
            info = np.iinfo(decoder.dtype)
            if raw.dtype.kind == "f":
                ok = np.isfinite(raw) & (raw == np.round(raw)) & (raw >= info.min) \
                    & (raw <= info.max)
                flag(~ok, f"field {name!r}: not an integer within {decoder.dtype}")
                raw = np.where(ok, raw, 0)
            elif raw.dtype.kind in "iu" and len(raw) and (raw.min() < info.min
                                                         or raw.max() > info.max):
                ok = (raw >= info.min) & (raw <= info.max)
                flag(~ok, f"field {name!r}: outside {decoder.dtype}")
                raw = np.where(ok, raw, 0)
        values[:, j] = raw
    nonfinite = decoder.nonfinite_reason(values)
    if nonfinite is not None:
        for r in nonfinite.tolist():
            if not bad[r]:
                reasons[r] = decoder.field_of_nonfinite(values[r])
                bad[r] = True
    if key is None:
        kcol = table.column(spec.key)
        ktype = kcol.type.value_type if pa.types.is_dictionary(kcol.type) else kcol.type
        if not (pa.types.is_string(ktype) or pa.types.is_large_string(ktype)
                or pa.types.is_integer(ktype)):
            raise TypeError(f"key column {spec.key!r} is {ktype}; use string or int")
        if kcol.null_count:
            flag(np.asarray(kcol.is_null()), f"null in key column {spec.key!r}")
        keys, empty, codes, distinct = _key_list(kcol, n)
        if empty is not None:
            flag(empty, f"empty key in key column {spec.key!r}")
    else:
        keys = [key] * n
        codes = distinct = None
    if ts_ns is None:
        assert tname is not None
        tcol = table.column(tname)
        if tcol.null_count:
            flag(np.asarray(tcol.is_null()), f"null in time column {tname!r}")
            tcol = tcol.fill_null(0)
        if pa.types.is_timestamp(tcol.type):
            try:
                ts = np.asarray(tcol.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy())
            except pa.ArrowInvalid as exc:
                raise ValueError(f"time column {tname!r}: {exc}") from None
        elif pa.types.is_integer(tcol.type) or pa.types.is_floating(tcol.type):
            ts, ok = decoder.payload_times_to_ns(tcol.to_numpy(zero_copy_only=False))
            if ok is not None:
                flag(~ok, f"time column {tname!r}: outside 1970..2262 in "
                          f"{spec.time_unit}")
        else:
            raise TypeError(f"time column {tname!r} is {tcol.type}; use a timestamp or a "
                            f"number in {spec.time_unit}")
    else:
        ts = np.full(n, ts_ns, np.int64)
    rows = Rows(keys, values, ts.astype(np.int64, copy=False), [], codes, distinct)
    return rows.take(~bad, sorted(reasons.items())) if bad.any() else rows


def _key_list(col: Any, n: int
              ) -> tuple[list[Any], np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """A key column as Python keys, a mask of its empty keys (None if none), and when it was
    dictionary-encoded the codes and the distinct keys (None otherwise).

    Many rows share a key: the column is dictionary-encoded (in C++, unless it comes so from
    Parquet) and each distinct key made once, every row of it the same object (which the
    store's key table then matches by identity), instead of an object per row. The
    distinct keys of the last dictionary are kept: a Parquet row group's batches share it."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if n < 64:
        keys = col.to_pylist()
        blank = [k == "" for k in keys]
        return keys, (np.array(blank) if any(blank) else None), None, None
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    dictionary = col.dictionary
    cached = _DISTINCT[0]
    if cached is not None and len(cached[0]) == len(dictionary) and cached[0].equals(dictionary):
        distinct = cached[1]
    else:
        distinct = np.array([*dictionary.to_pylist(), None], dtype=object)  # None: a null
        _DISTINCT[0] = (dictionary, distinct)
    indices = col.indices.fill_null(len(distinct) - 1) if col.null_count else col.indices
    idx = indices.to_numpy(zero_copy_only=False)
    empty: np.ndarray | None = None
    if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
        where = np.flatnonzero(distinct[:-1] == "")
        if len(where):
            empty = np.isin(idx, where)
    return distinct[idx].tolist(), empty, idx, distinct


# the last dictionary's distinct keys (a one-entry cache; table_rows runs on one thread per
# history, and a stale entry is only ever used after ``equals``)
_DISTINCT: list[tuple[Any, np.ndarray] | None] = [None]
