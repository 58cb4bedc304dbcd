"""One stream's preallocated ring buffers and its key index. Internal.

Ring design: a ring with slack that compacts. Each key owns ``cap = W + slack`` rows
(``slack = ceil(W * slack_fraction)``, default 0.25). Rows are appended at ``POS``; the
window is always the contiguous run ``[POS - FILL, POS)``, so a view is one slice. When a
key's ring is full, its newest ``W - 1`` rows move to the front (a compaction) and
appending goes on. Cost: memory ``cap / W`` = 1.25x the rows' raw bytes at the default,
and each append writes on average ``1 + (W - 1) / slack`` ~= 5 rows (one new, four moved
by compactions), all sequential memory.

Consistency (a seqlock split in two counters per key): the writer raises ``WSEQ`` before
it writes any row memory and sets ``CSEQ = WSEQ`` when done. A reader reads ``CSEQ``, the
bounds, then ``WSEQ``; equal means the bounds are consistent. A view ``[a, b)`` taken at
``CSEQ = c0`` stays intact while ``WSEQ - c0 <= (cap - b) + max(0, a - (W - 1))``: that
many appends go to rows after ``b``, and a compaction only overwrites rows before ``W - 1``.
Out-of-order inserts, evictions and expiry raise ``WSEQ`` by ``cap + 1`` and so end every
view of the slot. A ring left full (``POS == cap``) by a large batch may be compacted ahead
of its next append, on the helper thread while the next large batch's keys are looked up
(the core's ``write.rs``): its ``FILL`` rows move to the front, counted as one write, so the
formula holds as it is.

Composition: a ``Ring`` holds its core, ``heimdall._core.RingCore`` (the ring memory's write
path and batch reads), and its ``KeyIndex`` (key -> slot, slot -> key), and calls them; it
keeps the policy the core does not: new keys and their slots, eviction, expiry, checkpoints.
"""

from __future__ import annotations

import heapq
import math
import operator
import struct
import threading
from collections.abc import Hashable
from typing import Any, overload

import numpy as np

from heimdall import _core as core
from heimdall.errors import CapacityError, SchemaError, shown
from heimdall.schema import NS_PER_UNIT, CountWindow, StreamSpec, TimeWindow
from heimdall.window._shared import SharedIndex, encode_key

_STRUCT_CODE = {"float32": "f", "float64": "d", "int32": "i", "int64": "q"}


class Ring:
    """Storage, key index and counters of one stream. Writers hold ``lock``; readers never do.

    ``core`` (a ``RingCore``) writes and gathers rows; ``index`` (a ``KeyIndex``) maps keys to
    slots, ``slot_keys`` slots to keys (an attached reader replaces both with views of the
    shared-memory index).
    """

    def __init__(
        self,
        spec: StreamSpec,
        max_keys: int,
        *,
        evict: bool,
        slack_fraction: float,
        ttl_ns: int = 0,
        shared: dict[str, np.ndarray] | None = None,
    ) -> None:
        """``shared``: the stream's arrays in a shared-memory segment (``_shared.views``);
        the ring then lives there and keeps the shared key index and stats up to date."""
        self.spec = spec
        self.name = spec.name
        self.max_keys = max_keys
        self.evict = evict
        self.ttl_ns = ttl_ns
        self.sweep_every_ns = max(1_000_000_000, ttl_ns // 10) if ttl_ns else 0
        self.W = spec.window.rows
        self.slack = max(1, math.ceil(self.W * slack_fraction))
        self.cap = self.W + self.slack
        self.F = len(spec.fields)
        self.dtype = np.dtype(spec.dtype)
        self.time_ordered = isinstance(spec.window, TimeWindow)
        self.span_ns = int(spec.window.seconds * 1e9) if isinstance(spec.window, TimeWindow) else 0
        self.lateness_ns = int(spec.allowed_lateness_s * 1e9)
        self.reject_nan = spec.nan == "reject" and self.dtype.kind == "f"
        self.fields: tuple[str, ...] = tuple(spec.fields)
        # np.zeros is calloc: pages of slots never used are never committed (and a new
        # shared-memory segment is zero pages, committed as they are written, likewise).
        self.shared_index: SharedIndex | None = None
        self.shared_stats: np.ndarray | None = None
        if shared is not None:
            self.data, self.ts, self.meta = shared["data"], shared["ts"], shared["meta"]
            self.shared_index = SharedIndex(shared)
            self.shared_stats = shared["stats"]
        else:
            self.data = np.zeros((max_keys, self.cap, self.F), dtype=self.dtype)
            self.ts = np.zeros((max_keys, self.cap), dtype=np.int64)
            self.meta = np.zeros((max_keys, core.META_COLS), dtype=np.int64)
        # read-only views with the slots laid end to end: a key's rows [a, b) are the rows
        # [slot * cap + a, slot * cap + b), one slice (cheaper than indexing slot and rows)
        self.values_flat = self.data.reshape(-1, self.F).view()
        self.values_flat.flags.writeable = False
        self.ts_flat = self.ts.reshape(-1).view()
        self.ts_flat.flags.writeable = False
        self.meta_mv = self.meta.data.cast("B").cast("q")
        row_struct = struct.Struct("<" + _STRUCT_CODE[self.dtype.name] * self.F)
        self.pack_row = row_struct.pack_into
        self.scratch_row = bytearray(row_struct.size)
        self.get_fields = operator.itemgetter(*self.fields)
        self.row_bytes = self.F * self.dtype.itemsize
        self.index: Any = core.KeyIndex(max_keys)  # a Mapping[Hashable, int] with lookup()
        self.slot_keys: Any = self.index.slot_keys  # a list, kept in step by the index
        # LRU: a min-heap of (tick, KEYGEN, slot), built at the first eviction and checked
        # lazily: an entry whose slot changed hands since (its KEYGEN bumped) is dropped, one
        # whose slot was updated since is pushed again with its new tick.
        self.lru_heap: list[tuple[int, int, int]] | None = None
        self.live = shared["live"] if shared is not None else np.zeros(max_keys, dtype=bool)
        self.free: list[int] = []
        self.high_water = 0
        self.lock = threading.Lock()
        at = core.S_COUNTERS
        self.counters = (self.shared_stats[at:at + core.N_COUNTERS] if self.shared_stats is not None
                         else np.zeros(core.N_COUNTERS, dtype=np.int64))
        self.evictions = 0
        self.expired = 0
        self.core = core.RingCore(
            self.data, self.ts, self.meta, self.shared_stats, self.counters, self.index,
            self.lock, window_rows=self.W, span_ns=self.span_ns, lateness_ns=self.lateness_ns,
            time_ordered=self.time_ordered, reject_nan=self.reject_nan, ttl_ns=ttl_ns,
            values_flat=self.values_flat, ts_flat=self.ts_flat, fields=self.fields)

    # ---- the core's counters -------------------------------------------------------------

    @property
    def tick(self) -> int:
        """Writes so far (the LRU clock)."""
        return int(self.core.tick)

    @tick.setter
    def tick(self, value: int) -> None:
        self.core.tick = value

    @property
    def events(self) -> int:
        """Events appended."""
        return int(self.core.events)

    @events.setter
    def events(self, value: int) -> None:
        self.core.events = value

    @property
    def next_sweep_ns(self) -> int:
        """When the next idle sweep is due."""
        return int(self.core.next_sweep_ns)

    @next_sweep_ns.setter
    def next_sweep_ns(self, value: int) -> None:
        self.core.next_sweep_ns = value

    @overload
    def lookup(self, keys: list[Any], absent: None = None) -> np.ndarray | None: ...
    @overload
    def lookup(self, keys: list[Any], absent: int) -> np.ndarray: ...

    def lookup(self, keys: list[Any], absent: int | None = None) -> np.ndarray | None:
        """Each key's slot as an int64 array; a key not held: ``absent``, or, when None,
        the whole answer is None (``KeyIndex.lookup``)."""
        result: np.ndarray | None = self.index.lookup(keys, absent)
        return result

    # ---- keys ----------------------------------------------------------------------------

    def check_shareable(self, keys: list[Hashable]) -> None:
        """SchemaError for a key the shared index cannot hold (a shared-memory store), before
        any change is made for these keys."""
        if self.shared_index is not None:
            for key in keys:
                encode_key(key)

    def new_slot(self, key: Hashable) -> int:
        """A slot for a key not in the index (lock held). Evicts the least recently updated."""
        self.check_shareable([key])
        slot = self.spare_slot()
        if slot is None:
            if not self.evict:
                raise CapacityError(
                    f"stream {self.spec.name!r} holds max_keys={self.max_keys} keys and "
                    f"eviction is off; cannot add key {shown(key)}"
                )
            slot = self._victim()
            self.evict_slot(slot)
        self.own_slots([slot], [key])
        return slot

    def spare_slot(self) -> int | None:
        """A slot no key holds, taken (lock held); None when ``max_keys`` keys are held."""
        if self.free:
            return self.free.pop()
        if self.high_water < self.max_keys:
            self.high_water += 1
            return self.high_water - 1
        return None

    def evict_slot(self, slot: int) -> None:
        """Evict the key in ``slot`` (lock held): cleared and counted."""
        self._clear_slots([slot])
        self._count_evictions(1)

    def new_slots(self, keys: list[Hashable]) -> None:
        """``new_slot`` for each of ``keys`` (none in the index, no two equal) when there is
        room for all of them without evicting (lock held): the same slots, in one pass."""
        n = len(keys)
        if n > len(self.free) + self.max_keys - self.high_water:
            for key in keys:
                self.new_slot(key)
            return
        self.check_shareable(keys)
        self.own_slots(self.spare_slots(n), keys)

    def spare_slots(self, n: int) -> list[int]:
        """``spare_slot`` ``n`` times, in one pass: there are that many (lock held)."""
        reuse = min(n, len(self.free))
        slots = self.free[len(self.free) - reuse:][::-1]  # the order of free.pop()
        del self.free[len(self.free) - reuse:]
        hw = self.high_water
        slots.extend(range(hw, hw + n - reuse))
        self.high_water = hw + n - reuse
        return slots

    def own_slots(self, slots: list[int], keys: list[Hashable]) -> None:
        """Give each free slot of ``slots`` to its key of ``keys`` (keys not in the index,
        no two equal), in order (lock held)."""
        # A slot is all zeros when first used, and reset by _clear_slots when it was used before.
        self._mark_live(slots, True)  # live before the index entry
        if self.shared_index is not None:
            self.shared_index.put_many(slots, keys)
        self.index.own(slots, keys)  # slot_keys and the index, slot by slot
        heap = self.lru_heap
        if heap is not None and len(heap) + len(slots) > 2 * len(self.index) + 64:
            # only append()'s eviction pops the heap: batches alone would grow it without end;
            # past the size _victim rebuilds at, it is dropped (rebuilt when next needed)
            self.lru_heap = None
        elif heap is not None:
            tick, mv = self.tick, self.meta_mv
            for slot in slots:
                heapq.heappush(heap, (tick, mv[slot * core.META_COLS + core.KEYGEN], slot))

    def evict_slots(self, slots: list[int]) -> None:
        """``evict_slot`` for each of ``slots`` (distinct), at once (lock held)."""
        self._clear_slots(slots)
        self._count_evictions(len(slots))

    def _count_evictions(self, n: int) -> None:
        self.evictions += n
        if self.shared_stats is not None:
            self.shared_stats[core.S_EVICTIONS] = self.evictions

    def _victim(self) -> int:
        """The least recently updated live slot. Amortized O(log max_keys) per eviction."""
        heap = self.lru_heap
        if heap is None or len(heap) > 2 * len(self.index) + 64:
            live = np.flatnonzero(self.live)
            heap = list(zip(self.meta[live, core.TICK].tolist(),
                            self.meta[live, core.KEYGEN].tolist(), live.tolist(), strict=True))
            heapq.heapify(heap)
            self.lru_heap = heap
        mv = self.meta_mv
        while heap:
            tick, keygen, slot = heapq.heappop(heap)
            if mv[slot * core.META_COLS + core.KEYGEN] != keygen:
                continue  # the key left this slot (evicted or expired)
            now_tick = mv[slot * core.META_COLS + core.TICK]
            if now_tick != tick:
                heapq.heappush(heap, (now_tick, keygen, slot))
                continue
            return slot
        raise CapacityError(f"stream {self.spec.name!r}: no key to evict")  # pragma: no cover

    def _clear_slots(self, slots: list[int]) -> None:
        """Take the keys out of ``slots`` (distinct) and reset them; every view of them ends.
        Readers in other processes stop finding the keys first; then the core's steps, in
        the seqlock's order (``RingCore.free_slots``)."""
        if self.shared_index is not None:
            self.shared_index.remove_many(slots)
        self._mark_live(slots, False)
        self.core.free_slots(slots)

    def _mark_live(self, slots: list[int], value: bool) -> None:
        """``live[slots] = value``; a few slots one by one (an append's eviction: numpy's
        fancy indexing costs ~1 us a call, an item ~0.1 us)."""
        live = self.live
        if len(slots) < 8:
            for slot in slots:
                live[slot] = value
        else:
            live[slots] = value

    def maybe_expire(self, now_ns: int) -> int:
        """Expire idle keys if a sweep is due (lock held). Returns how many."""
        if self.ttl_ns and now_ns >= self.next_sweep_ns:
            self.next_sweep_ns = now_ns + self.sweep_every_ns
            return self.expire_idle(now_ns)
        return 0

    def discard(self, slots: list[int]) -> None:
        """Drop the keys in ``slots`` (distinct; lock held): cleared, their slots free."""
        self._clear_slots(slots)
        self.free.extend(slots)

    def expire_idle(self, now_ns: int) -> int:
        """Drop keys not updated for ``ttl_ns`` (lock held). Returns how many."""
        if not self.ttl_ns:
            return 0
        cutoff = now_ns - self.ttl_ns
        idle = np.flatnonzero(self.live & (self.meta[:, core.TOUCH] < cutoff)).tolist()
        self.discard(idle)
        self.expired += len(idle)
        if self.shared_stats is not None:
            self.shared_stats[core.S_EXPIRED] = self.expired
        return len(idle)

    def check_row(self, row: tuple[Any, ...]) -> None:
        """Raise SchemaError unless ``row`` packs into the stream's dtype (writes nothing)."""
        try:
            self.pack_row(self.scratch_row, 0, *row)
        except (struct.error, TypeError, OverflowError) as exc:
            raise self._row_error(row, exc) from exc

    def _row_error(self, row: tuple[Any, ...], exc: Exception) -> SchemaError:
        return SchemaError(
            f"stream {self.spec.name!r}: values {row!r} do not fit dtype {self.dtype.name} "
            f"for fields {list(self.fields)}: {exc}"
        )

    # ---- one event -----------------------------------------------------------------------

    def append_one(self, slot: int, row: tuple[Any, ...], t: int, now_ns: int) -> None:
        """Append one row (lock held): packed here (a bad value raises SchemaError, nothing
        written), written by the core's ``write_row``."""
        try:
            self.pack_row(self.scratch_row, 0, *row)
        except (struct.error, TypeError, OverflowError) as exc:
            raise self._row_error(row, exc) from exc
        if not self.core.write_row(slot, self.scratch_row, t, now_ns):
            self._append_slow(slot, row, t, now_ns)

    def _append_slow(self, slot: int, row: tuple[Any, ...], t: int, now_ns: int) -> None:
        values = np.asarray([row], dtype=self.dtype)
        self.core.scatter(np.array([slot], np.int64), values, np.array([t], np.int64), now_ns)

    # ---- checkpoints ---------------------------------------------------------------------

    def snapshot_buffers(self) -> dict[str, np.ndarray]:
        """Arrays shaped like the ring's, for ``export_state`` to copy into (lazily committed,
        like the ring; ``prefault`` commits the rows in use before a copy)."""
        return {"data": np.zeros_like(self.data), "ts": np.zeros_like(self.ts),
                "meta": np.zeros_like(self.meta), "live": np.zeros_like(self.live),
                "counters": np.zeros_like(self.counters)}

    def prefault(self, buffers: dict[str, np.ndarray], done: int) -> int:
        """Touch the buffers' rows [done, high_water) without the lock, so the copy under it
        meets no page fault. Returns the rows now touched."""
        hw = self.high_water
        if hw > done:
            for name in ("data", "ts", "meta", "live"):
                buffers[name][done:hw] = 0
        return max(done, hw)

    def export_state(self, into: dict[str, np.ndarray] | None = None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything a restore needs (lock held): plain state, and the arrays' used slots
        copied (into ``into``, from ``snapshot_buffers``, if given), so the writer may go on
        once the lock is released."""
        hw = self.high_water
        if into is None:
            into = {"data": np.empty_like(self.data[:hw]), "ts": np.empty_like(self.ts[:hw]),
                    "meta": np.empty_like(self.meta[:hw]), "live": np.empty_like(self.live[:hw]),
                    "counters": np.empty_like(self.counters)}
        arrays = {name: into[name][:hw] for name in ("data", "ts", "meta", "live")}
        arrays["counters"] = into["counters"]
        np.copyto(arrays["data"], self.data[:hw])
        np.copyto(arrays["ts"], self.ts[:hw])
        np.copyto(arrays["meta"], self.meta[:hw])
        np.copyto(arrays["live"], self.live[:hw])
        np.copyto(arrays["counters"], self.counters)
        state = {
            "high_water": hw, "cap": self.cap, "F": self.F, "dtype": self.dtype.name,
            "slot_keys": self.slot_keys[:hw], "free": list(self.free), "tick": self.tick,
            "events": self.events, "evictions": self.evictions, "expired": self.expired,
        }
        return state, arrays

    def import_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Load an ``export_state`` into this (empty) ring (lock held)."""
        hw = int(state["high_water"])
        if (state["cap"], state["F"], state["dtype"]) != (self.cap, self.F, self.dtype.name):
            raise SchemaError(
                f"stream {self.spec.name!r}: the checkpoint's rows are {state['cap']} x "
                f"{state['F']} {state['dtype']}; this stream's are {self.cap} x {self.F} "
                f"{self.dtype.name}"
            )
        if hw > self.max_keys:
            raise CapacityError(
                f"stream {self.spec.name!r}: the checkpoint holds {hw} key slots; max_keys "
                f"is {self.max_keys}"
            )
        self.data[:hw] = arrays["data"]
        self.ts[:hw] = arrays["ts"]
        self.meta[:hw] = arrays["meta"]
        self.live[:hw] = arrays["live"]
        self.counters[:] = arrays["counters"]
        self.high_water = hw
        live = np.flatnonzero(self.live[:hw]).tolist()
        self.index.clear()
        self.index.own(live, [state["slot_keys"][s] for s in live])
        self.lru_heap = None
        self.free = [int(x) for x in state["free"]]
        self.tick = int(state["tick"])
        self.events = int(state["events"])
        self.evictions = int(state["evictions"])
        self.expired = int(state["expired"])
        if self.shared_index is not None and self.shared_stats is not None:
            pairs = self.index.items()
            self.shared_index.put_many([s for _, s in pairs], [k for k, _ in pairs])
            st = self.shared_stats
            st[core.S_EVENTS], st[core.S_EVICTIONS], st[core.S_EXPIRED] = \
                self.events, self.evictions, self.expired

    # ---- helpers -------------------------------------------------------------------------

    def time_to_ns(self, value: Any) -> int:
        """A payload time value in the spec's unit, as int nanoseconds."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise SchemaError(
                f"stream {self.spec.name!r}: time field {self.spec.time!r} must be a number; "
                f"received {value!r}"
            )
        if not math.isfinite(value):
            raise SchemaError(
                f"stream {self.spec.name!r}: time field {self.spec.time!r} is not finite: {value!r}"
            )
        return int(value * NS_PER_UNIT[self.spec.time_unit])

    def totals(self) -> tuple[int, int, int]:
        """(events, evictions, expired keys). A shared-memory ring reads the copies the
        writer keeps in the segment, so a reader in another process sees the writer's."""
        st = self.shared_stats
        if st is not None:
            return int(st[core.S_EVENTS]), int(st[core.S_EVICTIONS]), int(st[core.S_EXPIRED])
        return self.events, self.evictions, self.expired

    def nbytes(self) -> int:
        """Bytes of the preallocated arrays, the key table and the list of full rings."""
        return int(self.data.nbytes + self.ts.nbytes + self.meta.nbytes + self.live.nbytes
                   + self.core.index.nbytes + 8 * self.core.full_cap)

    def used_bytes(self) -> int:
        """Bytes of the slots that hold a key now: each key's ring rows, timestamps and
        metadata line (what ``nbytes`` reserves for every one of ``max_keys``)."""
        per_slot = self.cap * (self.F * self.dtype.itemsize + 8) + 8 * self.meta.shape[1]
        return int(len(self.index) * per_slot)

    def describe_window(self) -> str:
        w = self.spec.window
        if isinstance(w, CountWindow):
            return f"count {w.n}"
        return f"{w.seconds:g}s (max {w.max_rows} rows)"
