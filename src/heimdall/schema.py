"""Stream specifications: what a stream's events look like and which window it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from heimdall.errors import ConfigError

NanPolicy = Literal["reject", "allow"]
TimeUnit = Literal["s", "ms", "us", "ns"]

SUPPORTED_DTYPES = ("float32", "float64", "int32", "int64")
# the longest span of event time a window or a read may name: 2**62 ns, ~146 years (the
# span is kept in int64 nanoseconds and subtracted from event times)
MAX_SECONDS = 2**62 / 1e9
NS_PER_UNIT: dict[str, int] = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


@dataclass(frozen=True)
class CountWindow:
    """The last ``n`` events of each key, in arrival order.

    >>> CountWindow(256).rows
    256
    """

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ConfigError(f"CountWindow needs a whole number n >= 1; received {self.n!r}")

    @property
    def rows(self) -> int:
        """The most rows a window of this kind holds."""
        return self.n


@dataclass(frozen=True)
class TimeWindow:
    """The events within ``seconds`` of each key's newest event time, at most ``max_rows``.

    Events are kept in event-time order; one arriving up to ``allowed_lateness_s`` (a
    StreamSpec setting) behind the key's newest event is placed in order, a later one is
    rejected and counted.

    >>> TimeWindow(seconds=300, max_rows=4096).rows
    4096
    """

    seconds: float
    max_rows: int = 4096

    def __post_init__(self) -> None:
        if (isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float))
                or not 0 < self.seconds <= MAX_SECONDS):
            raise ConfigError(
                f"TimeWindow needs 0 < seconds <= {MAX_SECONDS:.0e} (a span in int64 "
                f"nanoseconds); received {self.seconds!r}"
            )
        if (
            not isinstance(self.max_rows, int)
            or isinstance(self.max_rows, bool)
            or self.max_rows < 1
        ):
            raise ConfigError(f"TimeWindow needs max_rows >= 1; received {self.max_rows!r}")

    @property
    def rows(self) -> int:
        """The most rows a window of this kind holds."""
        return self.max_rows


Window_ = CountWindow | TimeWindow


@dataclass(frozen=True)
class StreamSpec:
    """One stream: its entity key, event time, numeric fields, dtype and window.

    ``key`` and ``time`` name payload fields (used by decoders, and by ``append`` when it is
    given a dict); ``time=None`` means arrival time. ``time_unit`` is the unit of the payload's
    time field. ``nan="reject"`` (the default) refuses NaN and infinite values.

    >>> s = StreamSpec("sensors", key="machine_id", fields=["temp", "rpm"], window=CountWindow(8))
    >>> s.fields, s.dtype
    (('temp', 'rpm'), 'float64')
    """

    name: str
    key: str = "key"
    time: str | None = None
    fields: Sequence[str] = field(default_factory=tuple)
    dtype: str = "float64"
    window: CountWindow | TimeWindow = field(default_factory=lambda: CountWindow(256))
    allowed_lateness_s: float = 0.0
    nan: NanPolicy = "reject"
    time_unit: TimeUnit = "ms"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a stream needs a non-empty name; received {self.name!r}")
        fields = tuple(self.fields) if not isinstance(self.fields, str) else (self.fields,)
        if not fields:
            raise ConfigError(f"stream {self.name!r} needs at least one field")
        for f in fields:
            if not isinstance(f, str) or not f:
                raise ConfigError(
                    f"stream {self.name!r}: field names must be strings; received {f!r}"
                )
        if len(set(fields)) != len(fields):
            raise ConfigError(f"stream {self.name!r}: field names repeat: {list(fields)}")
        object.__setattr__(self, "fields", fields)
        dtype = np.dtype(self.dtype).name if _is_dtype(self.dtype) else str(self.dtype)
        if dtype not in SUPPORTED_DTYPES:
            raise ConfigError(
                f"stream {self.name!r}: dtype {self.dtype!r} is not supported; "
                f"use one of {SUPPORTED_DTYPES}"
            )
        object.__setattr__(self, "dtype", dtype)
        if not isinstance(self.window, (CountWindow, TimeWindow)):
            raise ConfigError(
                f"stream {self.name!r}: window must be CountWindow or TimeWindow; "
                f"received {self.window!r}"
            )
        if not isinstance(self.allowed_lateness_s, (int, float)) or self.allowed_lateness_s < 0:
            raise ConfigError(
                f"stream {self.name!r}: allowed_lateness_s must be >= 0; "
                f"received {self.allowed_lateness_s!r}"
            )
        if self.nan not in ("reject", "allow"):
            raise ConfigError(
                f"stream {self.name!r}: nan must be 'reject' or 'allow'; received {self.nan!r}"
            )
        if self.time_unit not in NS_PER_UNIT:
            raise ConfigError(
                f"stream {self.name!r}: time_unit must be one of {list(NS_PER_UNIT)}; "
                f"received {self.time_unit!r}"
            )


def _is_dtype(value: object) -> bool:
    try:
        np.dtype(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True
