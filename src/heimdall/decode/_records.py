"""One record per message (JSON, msgpack), decoded and validated by msgspec into a Struct.

msgspec was chosen over orjson by measurement (benchmarks/bench_ingest.py prints both): it
validates the types while it parses, so a typed record costs less than an untyped dict.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from heimdall.decode.base import Decoded, Decoder
from heimdall.schema import StreamSpec

if TYPE_CHECKING:
    from heimdall.config import KeyFrom, TimeFrom

_Key = Annotated[str, msgspec.Meta(min_length=1)] | int


class RecordDecoder(Decoder):
    """Base of the one-record-per-message decoders; subclasses choose msgspec's codec."""

    def __init__(self, spec: StreamSpec, key_from: KeyFrom = "payload",
                 time_from: TimeFrom = "payload") -> None:
        super().__init__(spec, key_from, time_from)
        value_type: Any = float if self.dtype.kind == "f" else int
        fields: list[tuple[str, Any]] = [(f"f{i}", value_type) for i in range(self.F)]
        rename = {f"f{i}": name for i, name in enumerate(spec.fields)}
        if key_from == "payload":
            fields.append(("k", _Key))
            rename["k"] = spec.key
        if time_from == "payload" and spec.time is not None:
            fields.append(("t", int | float))
            rename["t"] = spec.time
        # gc=False: records hold only scalars, and untracked objects spare the collector
        # a pass over every batch
        record = msgspec.defstruct("Record", fields, rename=rename, gc=False)
        self._decode_one = self.make_codec(record)
        names = [f"f{i}" for i in range(self.F)]
        self._values_of = operator.attrgetter(*names) if self.F > 1 else None
        self._key_of = operator.attrgetter("k")
        self._time_of = operator.attrgetter("t")

    def make_codec(self, record: type) -> Callable[[bytes], Any]:
        """The msgspec decode function for ``record``."""
        raise NotImplementedError

    def decode(
        self,
        payloads: Sequence[bytes],
        message_keys: Sequence[str] | None = None,
        times_ns: Sequence[int] | None = None,
    ) -> Decoded:
        bad: list[tuple[int, str]] = []
        try:
            records = list(map(self._decode_one, payloads))
            good = None
        except (msgspec.DecodeError, msgspec.ValidationError):
            records, good = [], []
            for i, p in enumerate(payloads):
                try:
                    records.append(self._decode_one(p))
                    good.append(i)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    bad.append((i, f"{type(exc).__name__}: {exc}"))
        n = len(records)
        row_msg = np.arange(n, dtype=np.int64) if good is None else np.array(good, np.int64)
        values, overflow = self._values(records, n)
        keys = (list(map(self._key_of, records)) if self.key_from == "payload"
                else [message_keys[i] for i in row_msg.tolist()] if message_keys is not None
                else [None] * n)
        if self.time_from == "payload" and self.spec.time is not None:
            ts, ok = self.payload_times_to_ns(list(map(self._time_of, records)))
        else:
            ts = (np.asarray(times_ns, dtype=np.int64)[row_msg] if times_ns is not None
                  else np.zeros(n, np.int64))
            ok = None
        drop: list[int] = []
        for r in overflow:
            bad.append((int(row_msg[r]), f"a value does not fit {self.dtype.name}"))
            drop.append(r)
        if ok is not None and not ok.all():
            for r in np.flatnonzero(~ok).tolist():
                bad.append((int(row_msg[r]), f"event time {self.spec.time!r} out of range: "
                            f"{self._time_of(records[r])!r} ({self.spec.time_unit})"))
                drop.append(r)
        if self.key_from == "message_key":
            for r, k in enumerate(keys):
                if not k:
                    bad.append((int(row_msg[r]), "the message has no key (key_from = "
                                "'message_key')"))
                    drop.append(r)
        rows = self.nonfinite_reason(values)
        if rows is not None:
            for r in rows.tolist():
                bad.append((int(row_msg[r]), self.field_of_nonfinite(values[r])))
                drop.append(r)
        if drop:
            keep = np.ones(n, bool)
            keep[drop] = False
            idx = np.flatnonzero(keep).tolist()
            keys = [keys[i] for i in idx]
            values, ts, row_msg = values[keep], ts[keep], row_msg[keep]
        bad.sort()
        return Decoded(keys, values, ts, row_msg, bad)

    def _values(self, records: list[Any], n: int) -> tuple[np.ndarray, list[int]]:
        F = self.F
        rows = (map(operator.attrgetter("f0"), records) if self._values_of is None
                else itertools.chain.from_iterable(map(self._values_of, records)))
        try:
            if self.dtype.char == "d":  # a Python float always fits float64
                flat = np.fromiter(rows, self.dtype, n * F)
            else:
                # a float beyond float32 becomes inf here, and is rejected as non-finite
                with np.errstate(over="ignore"):
                    flat = np.fromiter(rows, self.dtype, n * F)
        except OverflowError:  # an int beyond int32/int64: msgspec took it, numpy will not
            return self._values_checked(records, n)
        return flat.reshape(n, F), []

    def _values_checked(self, records: list[Any], n: int) -> tuple[np.ndarray, list[int]]:
        """Slow path: find the rows whose integers do not fit the dtype."""
        info = np.iinfo(self.dtype)
        out = np.zeros((n, self.F), self.dtype)
        overflow = []
        for r, rec in enumerate(records):
            row = [getattr(rec, f"f{j}") for j in range(self.F)]
            if all(info.min <= v <= info.max for v in row):
                out[r] = row
            else:
                overflow.append(r)
        return out, overflow
