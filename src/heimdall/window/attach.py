"""``hd.attach(name)``: a shared-memory store, read from another process on the host.

The reader maps the writer's segment and reads windows itself: no message to the writer,
which never waits for readers and does not notice them come or go (or die). It has the read
methods of ``WindowStore`` and returns the same types; a ``window()`` is a zero-copy view
into the shared ring (``valid`` turns False once the writer overwrites it), ``windows()``
and ``aggregate()`` are consistent copies. Every read first checks the writer: once it has
closed the store, died, or restarted (a new generation under the same name), reads raise
``SharedMemoryError`` saying which; ``hd.attach`` again to follow a restarted writer.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heimdall import _core as core
from heimdall.errors import (
    HeimdallError,
    KeyNotFoundError,
    SchemaError,
    SharedMemoryError,
    shown,
)
from heimdall.schema import StreamSpec
from heimdall.window._ring import Ring
from heimdall.window._shared import (
    STATE_LIVE,
    Segment,
    SharedIndex,
    _pid_alive,
    encode_key,
    spec_from_json,
)
from heimdall.window.reader import DEFAULT_AGGREGATES
from heimdall.window.reads import Reads
from heimdall.window.view import Window, WindowBatch, view

_CHECK_EVERY_S = 0.25
# a slot's KEYGEN in its metadata line, as the core lays it out (bound once: window() is hot)
_COLS, _KEYGEN = core.META_COLS, core.KEYGEN


class _Memo:
    """What a reader learnt of one stream's slots, checked against each slot's KEYGEN (which the
    writer bumps whenever a slot loses its key) before it is used: key -> (slot, KEYGEN) and
    slot -> (KEYGEN, key). An entry is made from a KEYGEN read *before* the key was read, so
    it can only be too old (a miss), never vouch for another owner: the writer clears a
    slot's key bytes before it bumps KEYGEN and writes the next key's bytes after."""

    def __init__(self, shared: SharedIndex, meta_mv: memoryview, max_keys: int) -> None:
        self.shared = shared
        self.mv = meta_mv
        self.max_keys = max_keys
        self.slot_of: dict[Any, tuple[int, int]] = {}
        self.key_of: dict[int, tuple[int, Any]] = {}

    def remember(self, key: Any, slot: int, gen: int) -> None:
        if len(self.slot_of) >= self.max_keys:
            self.slot_of.clear()  # keys come and go: the memo stays bounded
        self.slot_of[key] = (slot, gen)
        self.key_of[slot] = (gen, key)


class _Index:
    """The shared hash index, as the mapping the store's read paths expect."""

    def __init__(self, memo: _Memo) -> None:
        self._m = memo
        self._s = memo.shared

    def __getitem__(self, key: Any) -> int:
        slot: int | None = self.get(key)
        if slot is None:
            raise KeyError(key)
        return slot

    def get(self, key: Any, default: Any = None) -> Any:
        hit = self._m.slot_of.get(key)
        if hit is not None and self._m.mv[hit[0] * _COLS + _KEYGEN] == hit[1]:
            return hit[0]
        slot = self._s.lookup(key)
        return default if slot is None else slot

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._s)

    def __len__(self) -> int:
        return len(self._s)

    def lookup(self, keys: list[Any], absent: int | None = None) -> np.ndarray | None:
        """``KeyIndex.lookup`` over the shared index: each key's slot, ``absent`` for one
        not held, or None for the whole answer when ``absent`` is None."""
        out = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            slot = self.get(key)
            if slot is None:
                if absent is None:
                    return None
                slot = absent
            out[i] = slot
        return out


class _SlotKeys:
    def __init__(self, memo: _Memo) -> None:
        self._m = memo

    def __getitem__(self, slot: int) -> Any:
        m = self._m
        slot = int(slot)
        gen = m.mv[slot * _COLS + _KEYGEN]  # before the key: see _Memo
        hit = m.key_of.get(slot)
        if hit is not None and hit[0] == gen:
            return hit[1]
        key = m.shared.key_at(slot)
        if key is not None:
            m.remember(key, slot, gen)
        return key


class AttachedStore:
    """The read methods of ``WindowStore`` (``hd.WindowReader``) over another process's
    shared-memory store: the same read paths (``Reads``), over rings mapped from the
    segment, each read after a check of the writer. It writes nothing."""

    def __init__(self, name: str) -> None:
        seg = Segment.attach(name)
        self._seg = seg
        self._generation = seg.generation
        self._writer = seg.writer_pid
        self._next_check = 0.0
        self.max_keys = int(seg.layout["max_keys"])
        rings: dict[str, Ring] = {}
        memos: dict[str, _Memo] = {}
        for s in seg.layout["streams"]:
            spec = spec_from_json(s["spec"])
            W = spec.window.rows
            arrays = seg.arrays[spec.name]
            ring = Ring(spec, self.max_keys, evict=True,
                        slack_fraction=(s["cap"] - W - 0.5) / W, shared=arrays)
            if ring.cap != s["cap"]:  # pragma: no cover - the arithmetic above guarantees it
                raise SharedMemoryError(f"stream {spec.name!r}: ring geometry mismatch")
            memo = _Memo(SharedIndex(arrays), ring.meta_mv, self.max_keys)
            ring.index = _Index(memo)
            ring.slot_keys = _SlotKeys(memo)
            rings[spec.name] = ring
            memos[spec.name] = memo
        self._rings = rings
        self._reads = Reads(rings)
        self._memos = memos
        self._state = seg.header.data.cast("B").cast("q")
        self._closed = False
        self.name = name

    # ---- the writer's state ----------------------------------------------------------------

    def check(self) -> None:
        """Raise SharedMemoryError if the writer closed the store, died or restarted."""
        if self._closed:
            raise SharedMemoryError(f"shared-memory store {self.name!r}: this reader is closed")
        if self._state[2] != STATE_LIVE:
            raise SharedMemoryError(f"shared-memory store {self.name!r}: the writer closed it")
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _CHECK_EVERY_S
        if not _pid_alive(self._writer):
            raise SharedMemoryError(
                f"shared-memory store {self.name!r}: its writer (pid {self._writer}) died; "
                f"`heimdall shm remove {self.name}` cleans up once no one reads it")
        gen = _generation_on_disk(self.name)
        if gen != self._generation:
            raise SharedMemoryError(
                f"shared-memory store {self.name!r}: the writer restarted (or removed it); "
                f"call hd.attach({self.name!r}) again")

    # ---- reads: WindowStore's, after the check ---------------------------------------------

    def window(self, stream: str, key: str | int) -> Window:
        """As ``WindowStore.window``: a zero-copy view, here of the shared ring.

        A key's slot is remembered with the slot's KEYGEN, which the writer bumps whenever
        the slot loses its key: while it reads the same, the slot still holds this key and
        no probe of the shared index is needed. Otherwise the index is probed and the key's
        bytes are checked again after the bounds are read, so a slot reused for another key
        is never returned under this one."""
        self.check()
        try:
            ring = self._rings[stream]
            slot, gen = self._memos[stream].slot_of[key]
        except (KeyError, TypeError):
            return self._window_probe(stream, key)
        got = ring.core.bounds(slot)  # (a, b, c0, KEYGEN) by the seqlock, or None
        if got is not None and got[3] == gen:
            return view(ring, key, slot, got[0], got[1], got[2])
        return self._window_probe(stream, key)

    def _window_probe(self, stream: str, key: str | int) -> Window:
        try:
            ring = self._rings[stream]
            memo = self._memos[stream]
            kb = encode_key(key)
        except (KeyError, SchemaError):
            return self._reads.window_slow(stream, key)  # raises what WindowStore raises
        shared = memo.shared
        for _ in range(1000):
            slot = shared.lookup_encoded(kb)
            if slot is None:
                memo.slot_of.pop(key, None)
                raise KeyNotFoundError(f"stream {stream!r} holds no key {shown(key)}")
            # KEYGEN read before the key check: a later read may be a new owner's
            got = ring.core.bounds(slot)
            if got is not None and shared.holds(slot, kb):
                memo.remember(key, slot, got[3])
                return view(ring, key, slot, got[0], got[1], got[2])
            time.sleep(0)  # the writer is mid-append, or the slot changed hands
        raise HeimdallError(f"stream {stream!r}, key {shown(key)}: no consistent read")

    def windows(self, stream: str, keys: Sequence[str | int], *, rows: int | None = None,
                seconds: float | None = None) -> WindowBatch:
        """As ``WindowStore.windows``: consistent copies, right-aligned (B, W, F)."""
        self.check()
        return self._reads.windows(stream, keys, rows=rows, seconds=seconds)

    def aggregate(self, stream: str, keys: str | int | Sequence[str | int],
                  aggs: Iterable[str] = DEFAULT_AGGREGATES, *,
                  rows: int | None = None, seconds: float | None = None
                  ) -> dict[str, np.ndarray]:
        """As ``WindowStore.aggregate``."""
        self.check()
        return self._reads.aggregate(stream, keys, aggs, rows=rows, seconds=seconds)

    def keys(self, stream: str) -> list[Any]:
        """The keys the stream holds now."""
        self.check()
        return self._reads.keys(stream)

    def __contains__(self, item: tuple[str, Any]) -> bool:
        self.check()
        return self._reads.contains(item)

    def stats(self) -> dict[str, Any]:
        """As ``WindowStore.stats``, from the writer's counters in shared memory."""
        self.check()
        return self._reads.stats()

    @property
    def streams(self) -> dict[str, StreamSpec]:
        """The stream specs, by name."""
        return self._reads.streams

    def append(self, *_a: Any, **_k: Any) -> None:
        """Refused: the process that created the store writes (a clear error for a reader
        given where a store was expected)."""
        raise HeimdallError(f"shared-memory store {self.name!r} is read-only here; the "
                            f"process that created it writes")

    append_batch = append

    def close(self) -> None:
        """Unmap the segment (never unlinks it). Idempotent. Views taken from it must be gone
        first: reading one afterwards reads unmapped memory."""
        if not self._closed:
            self._closed = True
            self._state = memoryview(bytearray(32)).cast("q")
            self._memos = {}
            self._seg.close()

    def __enter__(self) -> AttachedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AttachedStore {self.name!r} streams={list(self._rings)} (read-only)>"


def _generation_on_disk(name: str) -> int | None:
    try:
        with open(Path("/dev/shm") / name, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    return struct.unpack("<q", head[8:16])[0] if len(head) == 16 else None


def attach(name: str) -> AttachedStore:
    """Attach to the shared-memory store ``name`` created by another process on this host
    (``WindowStore(..., shared_memory=name)``, or ``store.shared_memory`` in config).
    Raises SharedMemoryError if there is none."""
    return AttachedStore(name)


__all__ = ["AttachedStore", "attach"]
