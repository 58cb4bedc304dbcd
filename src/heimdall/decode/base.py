"""The decoder interface, and what every decoder shares.

A decoder turns a batch of message payloads into rows for one stream. It never raises for a
bad message: it returns the message's index and the reason, and the source dead-letters it.
Decoders are stateless after construction and safe to share between threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall._core import first_nonfinite
from heimdall.schema import NS_PER_UNIT, StreamSpec

if TYPE_CHECKING:
    from heimdall.config import Format, KeyFrom, TimeFrom

# Event times must fall within 1970 .. 2262 (int64 nanoseconds).
_MAX_TS_NS = np.iinfo(np.int64).max


@dataclass
class Decoded:
    """The rows decoded from a batch of messages.

    ``keys`` (n,), ``values`` (n, F) in the stream's dtype, ``ts_ns`` (n,) int64, and
    ``row_msg`` (n,): the index of the message each row came from (an Arrow message carries
    many rows). ``bad`` lists ``(message index, reason)`` for messages that gave no rows.
    """

    keys: list[Any]
    values: np.ndarray
    ts_ns: np.ndarray
    row_msg: np.ndarray
    bad: list[tuple[int, str]]

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, keep: np.ndarray) -> Decoded:
        """The rows where ``keep`` is True (bad messages kept as they are)."""
        idx = np.flatnonzero(keep)
        return Decoded([self.keys[i] for i in idx.tolist()], self.values[idx],
                       self.ts_ns[idx], self.row_msg[idx], self.bad)


class Decoder(ABC):
    """Payloads of one stream's topic to rows.

    ``message_keys`` is given when keys come from the message key (``key_from =
    "message_key"``); ``times_ns`` when event time comes from the message (its event or
    publish timestamp, or the arrival time) rather than from the payload.
    """

    def __init__(self, spec: StreamSpec, key_from: KeyFrom = "payload",
                 time_from: TimeFrom = "payload") -> None:
        self.spec = spec
        self.key_from = key_from
        self.time_from = time_from
        self.dtype = np.dtype(spec.dtype)
        self.F = len(spec.fields)
        self.ns_per_unit = NS_PER_UNIT[spec.time_unit]
        self.reject_nan = spec.nan == "reject" and self.dtype.kind == "f"

    @abstractmethod
    def decode(
        self,
        payloads: Sequence[bytes],
        message_keys: Sequence[str] | None = None,
        times_ns: Sequence[int] | None = None,
    ) -> Decoded:
        """Decode a batch; never raises for a bad payload (it goes to ``Decoded.bad``)."""

    # ---- shared by the decoders ------------------------------------------------------------

    def payload_times_to_ns(self, times: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Payload event times (in ``time_unit``) to int64 ns; also a mask of the valid ones,
        or None when all are known valid (ints in range: the common case).

        A list of ints in range (what JSON and msgpack records give) takes one numpy call:
        in a worker woken for a burst of 100 messages each numpy call costs ~10-20 us, its
        dispatch code cold, ten times its cost back to back; the checks run in C builtins."""
        limit = _MAX_TS_NS // self.ns_per_unit
        if (type(times) is list and times and set(map(type, times)) == {int}
                and min(times) >= 0 and max(times) <= limit):
            ts = np.fromiter(times, np.int64, len(times))
            ts *= self.ns_per_unit
            return ts, None
        raw = np.asarray(times)
        if raw.dtype.kind in "iu":
            if len(raw) and raw.min() >= 0 and raw.max() <= limit:
                return raw.astype(np.int64, copy=False) * self.ns_per_unit, None
            ok = (raw >= 0) & (raw <= limit)
            ts = np.where(ok, raw, 0).astype(np.int64) * self.ns_per_unit
            return ts, ok
        f = raw.astype(np.float64) * self.ns_per_unit
        ok = np.isfinite(f) & (f >= 0) & (f < 2.0**63 - 1024)
        return np.where(ok, np.rint(f), 0).astype(np.int64), ok

    def nonfinite_reason(self, values: np.ndarray) -> np.ndarray | None:
        """Rows holding NaN or infinity under ``nan = "reject"``; None when all are finite."""
        if not self.reject_nan or not len(values):
            return None
        if first_nonfinite(np.ascontiguousarray(values)) < 0:  # one pass, no temporary
            return None
        return np.flatnonzero(~np.isfinite(values).all(axis=1))

    def field_of_nonfinite(self, row: np.ndarray) -> str:
        """The reason string for one row that holds a non-finite value."""
        bad = [f for f, v in zip(self.spec.fields, row.tolist(), strict=True)
               if not np.isfinite(v)]
        return f"non-finite value in field(s) {bad} (nan='reject')"


def make_decoder(
    spec: StreamSpec,
    format: Format = "json",
    key_from: KeyFrom = "payload",
    time_from: TimeFrom = "payload",
) -> Decoder:
    """The decoder for a stream's payload format."""
    if format == "json":
        from heimdall.decode.json import JsonDecoder

        return JsonDecoder(spec, key_from, time_from)
    if format == "msgpack":
        from heimdall.decode.msgpack import MsgpackDecoder

        return MsgpackDecoder(spec, key_from, time_from)
    if format == "arrow":
        from heimdall.decode.arrow import ArrowDecoder

        return ArrowDecoder(spec, key_from, time_from)
    from heimdall.errors import ConfigError  # type: ignore[unreachable]  # not in the Literal

    raise ConfigError(
        f"stream {spec.name!r}: unknown format {format!r}; use json, msgpack, arrow"
    )
