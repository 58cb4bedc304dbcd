"""The read paths over a set of rings: ``window`` (its Python path), ``windows``,
``aggregate``, ``keys``, ``in`` and ``stats``, written once for the two places rings live:
a ``WindowStore`` (its own, in this process or in shared memory it created) and an
``AttachedStore`` (another process's, mapped). Each holds a ``Reads`` and calls it; neither
subclasses the other.

Reads take no lock and never block a writer: a slot is read by its seqlock (CSEQ, the rows,
WSEQ) and checked against its owner's KEYGEN (see ``_ring.py``).
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from heimdall import _core as core
from heimdall.errors import (
    HeimdallError,
    KeyNotFoundError,
    SchemaError,
    StreamNotFoundError,
    shown,
)
from heimdall.schema import MAX_SECONDS, StreamSpec
from heimdall.window._ring import Ring
from heimdall.window.reader import DEFAULT_AGGREGATES
from heimdall.window.view import Window, WindowBatch, view

AGGREGATES: tuple[str, ...] = tuple(core.AGGREGATES)  # the order of the core's reductions
_AGG_INDEX = {name: i for i, name in enumerate(AGGREGATES)}
_MAX_RETRIES = 10_000


class Reads:
    """The read methods over ``rings`` (stream name -> Ring)."""

    def __init__(self, rings: dict[str, Ring]) -> None:
        self.rings = rings

    def ring(self, stream: str) -> Ring:
        """The stream's ring; StreamNotFoundError naming the streams there are."""
        try:
            return self.rings[stream]
        except (KeyError, TypeError):
            raise StreamNotFoundError(
                f"no stream {shown(stream)}; streams are {list(self.rings)}"
            ) from None

    @property
    def streams(self) -> dict[str, StreamSpec]:
        """The stream specs, by name."""
        return {name: r.spec for name, r in self.rings.items()}

    def window_slow(self, stream: str, key: str | int) -> Window:
        """A key's window as a view, by the index: ``WindowStore.window``'s path when the
        core's does not apply (the key absent or just replaced, a writer mid-append)."""
        ring = self.ring(stream)
        check_key(stream, key)
        for _ in range(_MAX_RETRIES):
            slot = ring.index.get(key)
            if slot is None:
                raise KeyNotFoundError(f"stream {stream!r} holds no key {shown(key)}")
            got = ring.core.bounds(slot)  # by the seqlock; None while a writer is mid-write
            if got is not None and ring.slot_keys[slot] == key:
                return view(ring, key, slot, got[0], got[1], got[2])
            time.sleep(0)  # a writer is mid-append: let it finish
        raise HeimdallError(
            f"stream {stream!r}, key {shown(key)}: no consistent read after retries")

    def windows(
        self,
        stream: str,
        keys: Sequence[str | int],
        *,
        rows: int | None = None,
        seconds: float | None = None,
    ) -> WindowBatch:
        """``WindowStore.windows``: the core's gather when every key reads whole and is
        still its slot's, else the core's kernel under ``_consistent``."""
        ring = self.ring(stream)
        W = _rows_arg(ring, rows)
        span = _span_arg(seconds)
        key_list = list(keys)
        slots = ring.lookup(key_list, core.ABSENT)
        done = ring.core.gather(slots, key_list, W, span)  # every key read whole, or None
        if done is not None:
            return WindowBatch(stream, key_list, ring.fields, *done, slots >= 0)
        B = len(key_list)
        values = np.empty((B, W, ring.F), dtype=ring.dtype)  # the kernel writes every row
        ts = np.empty((B, W), dtype=np.int64)
        lengths = np.zeros(B, dtype=np.int64)
        ok = np.zeros(B, dtype=np.bool_)
        self._consistent(
            ring,
            stream,
            slots,
            key_list,
            lambda s, o: core.gather(
                ring.data, ring.ts, ring.meta, s, W, span, values, ts, lengths, o
            ),
            ok,
        )
        return WindowBatch(stream, key_list, ring.fields, values, ts, lengths, slots >= 0)

    def _consistent(
        self,
        ring: Ring,
        stream: str,
        slots: np.ndarray,
        keys: list[Any],
        run: Callable[[np.ndarray, np.ndarray], None],
        ok: np.ndarray,
    ) -> None:
        """Run a read kernel over all slots; then again over those a writer was changing, or
        that changed hands meanwhile (the key evicted and its slot reused: the kernel's read
        was consistent, but of another key's rows). Each slot's KEYGEN is read before the
        kernel; after it, the slot's owner is read and then its KEYGEN again: unchanged, the
        slot had that owner from before the kernel until after the owner was read, so even
        a slot that went to another key and back is seen. The kernel writes every output of
        a row it reads (a re-read overwrites all of it)."""
        meta, slot_keys, index = ring.meta, ring.slot_keys, ring.index
        if len(slots) and slots.min() >= 0:  # every key held: the common case, in few calls
            gens = meta[slots, core.KEYGEN]
            run(slots, ok)
            if ok.all():
                # owners first, KEYGEN after (see below)
                owners = list(map(slot_keys.__getitem__, slots.tolist()))
                if owners == keys and (meta[slots, core.KEYGEN] == gens).all():
                    return
        else:
            gens = np.zeros(len(slots), dtype=np.int64)
            found = slots >= 0
            gens[found] = meta[slots[found], core.KEYGEN]
            run(slots, ok)

        def pin(i: int) -> None:
            """Point slots[i] at the key's slot now and remember its KEYGEN."""
            for _ in range(_MAX_RETRIES):
                s = index.get(keys[i], core.ABSENT)
                if s < 0:
                    slots[i] = core.ABSENT
                    return
                gens[i] = meta[s, core.KEYGEN]
                if slot_keys[s] == keys[i]:  # after the KEYGEN read: it was this key's then
                    slots[i] = s
                    return
            slots[i] = core.ABSENT  # pragma: no cover - the key kept moving

        for _ in range(_MAX_RETRIES):
            # a read stands if its slot kept its owner throughout (KEYGEN unchanged) and that
            # owner is the key asked for (the slot may have changed hands before the KEYGEN
            # was read)
            done = np.flatnonzero(ok & (slots >= 0))
            moved = np.zeros(len(slots), dtype=np.bool_)
            # owners first, KEYGEN after: an unchanged KEYGEN then proves the owner read was
            # the owner all along (read the other way round, the slot could change hands in
            # between and come back to the key asked for, after the kernel read another's rows)
            owners = list(map(slot_keys.__getitem__, slots[done].tolist()))
            moved[done] = meta[slots[done], core.KEYGEN] != gens[done]
            asked = keys if len(done) == len(keys) else list(map(keys.__getitem__, done.tolist()))
            if owners != asked:  # one C-level pass; a key by key look only when one differs
                moved[done] |= np.fromiter(map(operator.ne, owners, asked), np.bool_, len(done))
            ok &= ~moved
            if ok.all():
                return
            time.sleep(0)
            todo = np.flatnonzero(~ok)
            sub = slots.copy()
            sub[ok] = core.SKIP  # already read: the kernel leaves them as they are
            for i in todo.tolist():
                if moved[i] or slots[i] < 0:
                    pin(i)
                    sub[i] = slots[i]
            run(sub, ok)
        raise HeimdallError(f"stream {stream!r}: no consistent read after retries")

    def aggregate(
        self,
        stream: str,
        keys: str | int | Sequence[str | int],
        aggs: Iterable[str] = DEFAULT_AGGREGATES,
        *,
        rows: int | None = None,
        seconds: float | None = None,
    ) -> dict[str, np.ndarray]:
        """``WindowStore.aggregate``: the native core's reductions, read consistently."""
        ring = self.ring(stream)
        names = [aggs] if isinstance(aggs, str) else list(aggs)
        for name in names:
            if name not in _AGG_INDEX:
                raise SchemaError(
                    f"unknown aggregate {shown(name)}; choose from {list(AGGREGATES)}")
        single = isinstance(keys, (str, int))
        key_list: list[Any] = [keys] if single else list(keys)  # type: ignore[arg-type]
        slots = ring.lookup(key_list, core.ABSENT)
        if single and slots[0] < 0:
            raise KeyNotFoundError(f"stream {stream!r} holds no key {shown(keys)}")
        R = 0 if rows is None else _rows_arg(ring, rows)
        span = _span_arg(seconds)
        out = np.empty((len(key_list), len(AGGREGATES), ring.F), dtype=np.float64)
        ok = np.zeros(len(key_list), dtype=np.bool_)
        self._consistent(
            ring,
            stream,
            slots,
            key_list,
            lambda s, o: core.aggregate(ring.data, ring.ts, ring.meta, s, R, span, out, o),
            ok,
        )
        result: dict[str, np.ndarray] = {}
        for name in names:
            col = out[:, _AGG_INDEX[name], :]
            if name == "count":
                col = col.astype(np.int64)
            result[name] = col[0] if single else col
        return result

    def keys(self, stream: str) -> list[Any]:
        """The keys the stream holds now (a copy)."""
        return list(self.ring(stream).index)

    def contains(self, item: tuple[str, Any]) -> bool:
        """``(stream, key) in`` the rings."""
        stream, key = item
        return key in self.ring(stream).index

    def stats(self) -> dict[str, Any]:
        """Counters per stream and memory, as plain data: ``memory_bytes`` is what is reserved
        (fixed at start, for ``max_keys`` keys), ``memory_used_bytes`` what the keys held now
        take of it."""
        streams = {}
        total = used_total = 0
        for name, r in self.rings.items():
            nbytes = r.nbytes()
            used = r.used_bytes()
            total += nbytes
            used_total += used
            events, evictions, expired = r.totals()
            streams[name] = {
                "keys": len(r.index),
                "max_keys": r.max_keys,
                "window": r.describe_window(),
                "events": events,
                "late_rejected": int(r.counters[core.C_LATE]),
                "out_of_order": int(r.counters[core.C_OOO]),
                "expired_on_arrival": int(r.counters[core.C_EXPIRED]),
                "evictions": evictions,
                "expired_keys": expired,
                "reads_retried": r.core.reread,  # keys windows() read again: changed mid-copy
                "memory_bytes": nbytes,
                "memory_used_bytes": used,
            }
        return {"streams": streams, "memory_bytes": total, "memory_used_bytes": used_total}


def check_key(stream: str, key: Any) -> None:
    """SchemaError unless ``key`` is a str or an int."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise SchemaError(
            f"stream {stream!r}: a key must be str or int; received {shown(key)} "
            f"({type(key).__name__})"
        )


def check_rows(rows: int | None) -> None:
    """Raise SchemaError unless ``rows`` is None or a whole number >= 1."""
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise SchemaError(f"rows must be a whole number >= 1; received {rows!r}")


def check_seconds(seconds: float | None) -> None:
    """Raise SchemaError unless ``seconds`` is None or > 0."""
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float))
        or not 0 < seconds < math.inf
    ):
        raise SchemaError(f"seconds must be finite and > 0; received {seconds!r}")


def _rows_arg(ring: Ring, rows: int | None) -> int:
    check_rows(rows)
    return ring.W if rows is None else min(rows, ring.W)


def _span_arg(seconds: float | None) -> int:
    check_seconds(seconds)
    if seconds is None or seconds > MAX_SECONDS:
        return 0  # all rows: a span past ~146 years holds every int64 time a window keeps
    return int(seconds * 1e9)
