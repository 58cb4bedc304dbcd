"""WindowStore: per-key sliding windows of many streams, read zero-copy.

Threads: any number of reader threads and writer threads. Writes to one stream are
serialized by that stream's lock (Heimdall's sources give each key one writer thread);
reads take no lock and never block a writer. See ``_ring.py`` for the ring design, its
memory cost and the consistency protocol.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from heimdall import _core as core
from heimdall.errors import (
    CapacityError,
    ConfigError,
    SchemaError,
    shown,
)
from heimdall.schema import StreamSpec
from heimdall.window._admit import admit_batch, new_keys_of
from heimdall.window._ring import Ring
from heimdall.window._shared import Segment, plan
from heimdall.window.reader import DEFAULT_AGGREGATES
from heimdall.window.reads import Reads, check_key
from heimdall.window.view import Window, WindowBatch

_TS_MIN, _TS_END = -(2**63), 2**63  # event times are int64 nanoseconds


class WindowStore:
    """Windows of every key of every stream, in preallocated ring buffers.

    >>> import heimdall as hd
    >>> spec = hd.StreamSpec("s", key="id", fields=["x", "y"], window=hd.CountWindow(3))
    >>> store = hd.WindowStore([spec], max_keys=10)
    >>> for i in range(5):
    ...     store.append("s", "a", {"x": i, "y": 10 * i}, ts_ns=i)
    >>> store.window("s", "a").values.tolist()
    [[2.0, 20.0], [3.0, 30.0], [4.0, 40.0]]
    >>> store.aggregate("s", "a", ["mean", "max"])["mean"].tolist()
    [3.0, 30.0]
    """

    def __init__(
        self,
        specs: Sequence[StreamSpec],
        max_keys: int = 100_000,
        *,
        evict: bool = True,
        idle_ttl_s: float | None = None,
        slack: float = 0.25,
        clock_ns: Callable[[], int] = time.time_ns,
        shared_memory: str | None = None,
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError(f"max_keys must be a whole number >= 1; received {max_keys!r}")
        if not isinstance(slack, (int, float)) or not 0 < slack <= 4:
            raise ConfigError(f"slack must be in (0, 4]; received {slack!r}")
        if idle_ttl_s is not None and not (isinstance(idle_ttl_s, (int, float)) and idle_ttl_s > 0):
            raise ConfigError(f"idle_ttl_s must be > 0 or None; received {idle_ttl_s!r}")
        specs = list(specs)
        if not specs:
            raise ConfigError("a WindowStore needs at least one StreamSpec")
        ttl_ns = int(idle_ttl_s * 1e9) if idle_ttl_s else 0
        names = set()
        for spec in specs:
            if not isinstance(spec, StreamSpec):
                raise ConfigError(f"expected StreamSpec; received {spec!r}")
            if spec.name in names:
                raise ConfigError(f"two streams are named {spec.name!r}")
            names.add(spec.name)
        self.segment: Segment | None = None
        arrays: dict[str, dict[str, np.ndarray]] = {}
        if shared_memory is not None:
            caps = {s.name: s.window.rows + max(1, math.ceil(s.window.rows * slack))
                    for s in specs}
            layout, size = plan(specs, max_keys, caps)
            self.segment = Segment.create(shared_memory, layout, size)
            arrays = self.segment.arrays
        rings: dict[str, Ring] = {}
        for spec in specs:
            rings[spec.name] = Ring(
                spec, max_keys, evict=evict, slack_fraction=slack, ttl_ns=ttl_ns,
                shared=arrays.get(spec.name),
            )
        self._rings = rings
        self._reads = Reads(rings)
        self._clock_ns = clock_ns
        self._ttl_ns = ttl_ns
        self.max_keys = max_keys
        # The per-event calls, whole in the core for the common case: bound as this store's
        # own methods (no Python frame on the way); each hands what it does not do itself,
        # unchanged, to its Python path here.
        self._core = core.StoreCore({name: r.core for name, r in rings.items()}, clock_ns,
                                    self._append_py, self._window_slow, Window)
        self.append, self.window = self._core.calls()  # type: ignore[method-assign]

    # ---- lookup --------------------------------------------------------------------------

    def _ring(self, stream: str) -> Ring:
        return self._reads.ring(stream)

    @property
    def streams(self) -> dict[str, StreamSpec]:
        """The stream specs, by name."""
        return self._reads.streams

    # ---- writes --------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        key: str | int,
        values: Mapping[str, Any] | Sequence[Any] | np.ndarray,
        ts_ns: int | None = None,
    ) -> None:
        """Append one event. Blocks only on other writers of the same stream.

        ``values`` is a mapping holding every field (other entries are ignored) or a sequence
        of F numbers in field order. Event time: ``ts_ns``, else the spec's time field in a
        mapping, else arrival time. Raises SchemaError (nothing is written) on bad input.
        (Each store binds its core's ``append`` in place of this.)
        """
        self._append_py(stream, key, values, ts_ns)

    def _append_py(
        self,
        stream: str,
        key: str | int,
        values: Mapping[str, Any] | Sequence[Any] | np.ndarray,
        ts_ns: int | None = None,
    ) -> None:
        """``append`` when the core's fast path does not apply: a mapping, a new key, a
        value to convert or to reject, a writer holding the lock, ..."""
        try:
            ring = self._rings[stream]
        except (KeyError, TypeError):
            ring = self._ring(stream)
        row: tuple[Any, ...]
        if type(values) is tuple:
            row = values
        elif type(values) is dict or isinstance(values, Mapping):
            event = values
            try:
                got = ring.get_fields(event)
            except KeyError:
                missing = [f for f in ring.fields if f not in event]
                raise SchemaError(
                    f"stream {stream!r}, key {shown(key)}: event lacks field(s) {missing}; "
                    f"received fields {list(event)}"
                ) from None
            row = (got,) if ring.F == 1 else got
            if ts_ns is None and ring.spec.time is not None and ring.spec.time in event:
                ts_ns = ring.time_to_ns(event[ring.spec.time])
        else:
            row = tuple(values)
        if len(row) != ring.F:
            raise SchemaError(
                f"stream {stream!r}, key {shown(key)}: expected {ring.F} values "
                f"({list(ring.fields)}); received {len(row)}"
            )
        # The clock is read only when it is needed: arrival time, or idle-key expiry.
        now = self._clock_ns() if (ts_ns is None or self._ttl_ns) else 0
        if ring.reject_nan:
            try:
                finite = math.isfinite(sum(row))
            except (TypeError, OverflowError):
                finite = True  # the dtype check below names the bad value
            if not finite and not all(_finite(v) for v in row):
                bad = [f for f, v in zip(ring.spec.fields, row, strict=True) if not _finite(v)]
                raise SchemaError(
                    f"stream {stream!r}, key {shown(key)}: non-finite value in field(s) {bad} "
                    f"(nan='reject'); received {row!r}"
                )
        if ts_ns is None:
            ts_ns = now
        elif type(ts_ns) is not int or not _TS_MIN <= ts_ns < _TS_END:
            ts_ns = _check_ts(stream, key, ts_ns)
        check_key(stream, key)  # before the index reads it: an unhashable key too
        with ring.lock:
            slot = ring.index.get(key)
            if slot is None:
                ring.check_row(row)  # before new_slot, which may evict a key
                ring.maybe_expire(now)
                slot = ring.new_slot(key)
                ring.append_one(slot, row, ts_ns, now)
            else:
                ring.append_one(slot, row, ts_ns, now)

    def append_batch(
        self,
        stream: str,
        keys: Sequence[str | int] | np.ndarray,
        values: np.ndarray | Sequence[Sequence[Any]],
        ts_ns: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        """Append n events in one vectorized call: keys (n,), values (n, F), ts_ns (n,) int64.

        Rows are applied in order. The whole batch is validated first: on SchemaError nothing
        is written. ``ts_ns=None`` stamps every row with the arrival time.
        """
        ring = self._ring(stream)
        now = self._clock_ns()
        # a list is read as given: the C lookup reads it whole, before any other thread runs
        key_list = (keys if type(keys) is list else
                    keys.tolist() if isinstance(keys, np.ndarray) else list(keys))
        n = len(key_list)
        arr = _as_values(ring, stream, values, n)
        if ts_ns is None:
            ts = np.full(n, now, dtype=np.int64)
        else:
            ts = as_ts_ns(stream, ts_ns, n)
        if n == 0:
            return
        with ring.lock:
            # the core: the lookup and the scatter; False if a key is new, None if a key is
            # not a plain str / int (then the index asks Python's __eq__)
            done = ring.core.append_rows(key_list, arr, ts, now)
            if done:
                return
            if done is None:
                slots = ring.lookup(key_list)  # None if a key is new (or unhashable)
                if slots is not None:
                    ring.core.scatter(slots, arr, ts, now)
                    return
            self._append_batch_new_keys(ring, stream, key_list, arr, ts, now)

    def _append_batch_new_keys(
        self,
        ring: Ring,
        stream: str,
        key_list: list[Any],
        arr: np.ndarray,
        ts: np.ndarray,
        now: int,
    ) -> None:
        """The batch holds keys not yet in the store: create them, in row order."""
        index = ring.index
        try:
            held = ring.lookup(key_list, core.ABSENT)  # which rows' keys are new
        except TypeError:  # an unhashable key
            for key in key_list:
                check_key(stream, key)
            raise
        new_rows, new = new_keys_of(key_list, held)
        if not {str, int}.issuperset(map(type, new)):  # the types of keys, then which one
            for key in new:
                check_key(stream, key)
        if not ring.evict:
            room = ring.max_keys - len(index)
            if len(new) > room:
                raise CapacityError(
                    f"stream {stream!r}: the batch brings {len(new)} new keys, room for {room} "
                    f"(max_keys={ring.max_keys}) and eviction is off"
                )
        if ring.maybe_expire(now):
            held = ring.lookup(key_list, core.ABSENT)  # keys expired: the rows' slots again
            new_rows, new = new_keys_of(key_list, held)
        if len(new) <= len(ring.free) + ring.max_keys - ring.high_water:
            # room for every new key without evicting: the slots they get in order of first
            # appearance are the ones the row-by-row loop below would give them
            ring.new_slots(new)
            slots = ring.lookup(key_list)
            if slots is not None:
                ring.core.scatter(slots, arr, ts, now)
                return
            start = 0
        else:
            # evicting: every row's slot planned first, then one scatter (_admit)
            start = admit_batch(ring, key_list, held, new_rows, new)
            if start:
                ring.core.scatter(held[:start], arr[:start], ts[:start], now)
            if start == len(key_list):
                return
        slots = np.empty(len(key_list), dtype=np.int64)
        for i in range(start, len(key_list)):
            key = key_list[i]
            slot = index.get(key)
            if slot is None:
                full = not ring.free and ring.high_water >= ring.max_keys
                if full and start < i:
                    # Eviction may pick a key this batch already wrote to: apply what came first.
                    ring.core.scatter(slots[start:i], arr[start:i], ts[start:i], now)
                    start = i
                slot = ring.new_slot(key)
            slots[i] = slot
        ring.core.scatter(slots[start:], arr[start:], ts[start:], now)

    def discard(self, stream: str, keys: Iterable[Any]) -> int:
        """Drop ``keys`` of ``stream`` now (those it holds); returns how many. A view of one
        turns invalid. A cluster node drops the keys whose range the broker moved away."""
        ring = self._ring(stream)
        with ring.lock:
            slots = list({ring.index[k] for k in keys if k in ring.index})
            ring.discard(slots)
        return len(slots)

    def expire_idle(self) -> int:
        """Drop keys idle longer than ``idle_ttl_s`` now; returns how many. Also done on writes."""
        now = self._clock_ns()
        dropped = 0
        for ring in self._rings.values():
            with ring.lock:
                dropped += ring.expire_idle(now)
        return dropped

    # ---- reads ---------------------------------------------------------------------------

    def window(self, stream: str, key: str | int) -> Window:
        """The key's window as a zero-copy read-only view. O(1); never blocks the writer.
        (Each store binds its core's ``window`` in place of this.)"""
        return self._window_slow(stream, key)

    def _window_slow(self, stream: str, key: str | int) -> Window:
        """``window`` when the core's fast path does not apply: the key absent or just
        replaced, or a writer mid-append (``Reads.window_slow``)."""
        return self._reads.window_slow(stream, key)

    def windows(
        self,
        stream: str,
        keys: Sequence[str | int],
        *,
        rows: int | None = None,
        seconds: float | None = None,
    ) -> WindowBatch:
        """Consistent copies of many keys' windows, right-aligned in one (B, W, F) array.

        ``rows`` keeps each key's last rows (W = rows), ``seconds`` the rows within that span
        of the key's newest event. Keys the store does not hold have ``found`` False.
        """
        return self._reads.windows(stream, keys, rows=rows, seconds=seconds)

    def aggregate(
        self,
        stream: str,
        keys: str | int | Sequence[str | int],
        aggs: Iterable[str] = DEFAULT_AGGREGATES,
        *,
        rows: int | None = None,
        seconds: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-field aggregates over each key's window (or its last ``rows`` / ``seconds``).

        One key: ``{agg: (F,) array}``, KeyNotFoundError if absent. A list of keys, in one
        vectorized call: ``{agg: (B, F) array}``, with count 0 and NaN for absent keys.
        ``std`` is the population standard deviation (ddof=0).
        """
        return self._reads.aggregate(stream, keys, aggs, rows=rows, seconds=seconds)

    # ---- checkpoints ---------------------------------------------------------------------

    def export_stream(self, stream: str, into: dict[str, np.ndarray] | None = None
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A stream's whole state, copied under its write lock (``heimdall.checkpoint``),
        into ``into`` (from ``snapshot_buffers``) if given."""
        ring = self._ring(stream)
        with ring.lock:
            return ring.export_state(into)

    def snapshot_buffers(self, stream: str) -> dict[str, np.ndarray]:
        """Reusable buffers for ``export_stream`` (as large as the stream's, committed only
        as ``prefault`` touches them)."""
        return self._ring(stream).snapshot_buffers()

    def prefault(self, stream: str, buffers: dict[str, np.ndarray], done: int) -> int:
        """Commit the buffers' rows the stream uses now (no lock); returns the rows done."""
        return self._ring(stream).prefault(buffers, done)

    def import_stream(self, stream: str, state: dict[str, Any],
                      arrays: dict[str, np.ndarray]) -> None:
        """Load an ``export_stream`` into this store's (empty) stream."""
        ring = self._ring(stream)
        with ring.lock:
            ring.import_state(state, arrays)

    def keys(self, stream: str) -> list[Any]:
        """The keys the stream holds now (a copy)."""
        return self._reads.keys(stream)

    def __contains__(self, item: tuple[str, Any]) -> bool:
        return self._reads.contains(item)

    def stats(self) -> dict[str, Any]:
        """Counters per stream and memory, as plain data: ``memory_bytes`` is what is reserved
        (fixed at start, for ``max_keys`` keys), ``memory_used_bytes`` what the keys held now
        take of it."""
        return self._reads.stats()

    def close(self) -> None:
        """Release a shared-memory store's segment (unlinked: readers then fail with
        SharedMemoryError). Idempotent; nothing to do for an in-process store."""
        if self.segment is not None:
            self.segment.close()
            self.segment = None

    def __enter__(self) -> WindowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shared = f" shared_memory={self.segment.name!r}" if self.segment else ""
        return f"<WindowStore streams={list(self._rings)} max_keys={self.max_keys}{shared}>"


# ---- validation helpers -------------------------------------------------------------------


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(v)
    except (TypeError, OverflowError):
        return True


def _check_ts(stream: str, key: Any, ts_ns: Any) -> int:
    if isinstance(ts_ns, (bool, np.bool_)) or not isinstance(
        ts_ns, (int, float, np.integer, np.floating)
    ):
        raise SchemaError(
            f"stream {stream!r}, key {shown(key)}: ts_ns must be an int; received {ts_ns!r}"
        )
    if not math.isfinite(ts_ns) or not _TS_MIN <= ts_ns < _TS_END:
        raise SchemaError(
            f"stream {stream!r}, key {shown(key)}: ts_ns {ts_ns!r} is non-finite or outside "
            f"int64 nanoseconds (+-9.2e18)"
        )
    return int(ts_ns)


def _as_values(ring: Ring, stream: str, values: Any, n: int) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except ValueError as exc:
        raise SchemaError(f"stream {stream!r}: values are not a rectangular array: {exc}") from exc
    if arr.ndim != 2 or arr.shape != (n, ring.F):
        raise SchemaError(
            f"stream {stream!r}: values must have shape ({n}, {ring.F}) for {n} keys and fields "
            f"{list(ring.spec.fields)}; received shape {arr.shape}"
        )
    if arr.dtype != ring.dtype:
        if arr.dtype.kind not in "biuf" or not np.can_cast(arr.dtype, ring.dtype, "same_kind"):
            raise SchemaError(
                f"stream {stream!r}: values of dtype {arr.dtype} cannot be stored as {ring.dtype}"
            )
        if ring.dtype.kind == "i" and not np.can_cast(arr.dtype, ring.dtype) and arr.size:
            _check_int_range(ring, stream, arr)  # a narrowing cast would wrap around
        arr = arr.astype(ring.dtype)
    arr = np.ascontiguousarray(arr)
    if ring.reject_nan and n:
        at = core.first_nonfinite(arr)  # one pass, no temporary (arr: the ring's dtype)
        if at >= 0:
            r, j = divmod(at, ring.F)
            raise SchemaError(
                f"stream {stream!r}: row {int(r)} field {ring.spec.fields[int(j)]!r} is "
                f"{arr[r, j]!r} (nan='reject'); nothing was written"
            )
    return arr


def _check_int_range(ring: Ring, stream: str, arr: np.ndarray) -> None:
    info = np.iinfo(ring.dtype)
    bad = (arr < info.min) | (arr > info.max)
    if bad.any():
        r, j = divmod(int(np.argmax(bad)), ring.F)
        raise SchemaError(
            f"stream {stream!r}: row {r} field {ring.spec.fields[j]!r} is {arr[r, j]!r}, "
            f"outside {ring.dtype} ({info.min}..{info.max}); nothing was written"
        )


def as_ts_ns(stream: str, ts_ns: Any, n: int) -> np.ndarray:
    """``ts_ns`` as (n,) int64 nanoseconds; SchemaError (naming the first bad entry) for a
    shape, dtype or value that is not one."""
    ts = np.asarray(ts_ns)
    if ts.shape != (n,):
        raise SchemaError(f"stream {stream!r}: ts_ns must have shape ({n},); received {ts.shape}")
    if ts.dtype.kind == "f":
        # float64 holds no int64 exactly past 2**53; what lies outside int64 would cast to
        # INT64_MIN
        bad = ~(np.isfinite(ts) & (ts >= _TS_MIN) & (ts < _TS_END))
        if n and bad.any():
            at = int(np.argmax(bad))
            raise SchemaError(
                f"stream {stream!r}: ts_ns[{at}] = {float(ts[at])!r} is non-finite or outside "
                f"int64 nanoseconds (+-9.2e18); nothing was written")
        return ts.astype(np.int64)
    if ts.dtype.kind not in "iu":
        raise SchemaError(
            f"stream {stream!r}: ts_ns must be int64 nanoseconds; received {ts.dtype}"
        )
    if ts.dtype.kind == "u" and ts.dtype.itemsize == 8 and n and int(ts.max()) >= _TS_END:
        at = int(np.argmax(ts >= _TS_END))
        raise SchemaError(
            f"stream {stream!r}: ts_ns[{at}] = {int(ts[at])} does not fit int64 nanoseconds; "
            f"nothing was written")
    return np.ascontiguousarray(ts, dtype=np.int64)
