"""A batch's new keys into a full ring, evicting, with the batch written in one scatter.
Internal.

Row by row, a new key at row ``r`` of a full ring evicts the least recently updated key at
that moment, which depends on the rows before ``r``: each one written makes its key the most
recent. Written so, a batch needs a write before every eviction (the rows before it) and a
search of the LRU heap that meets every key the batch touched since.

The plan here needs neither. A key some row before ``r`` touched is more recent than any key
no row before ``r`` touched, so while an untouched key is left, the victim at ``r`` is the
least recently updated of those, by the times they had before the batch. Such a victim has
no row before ``r``; its rows after ``r``, if any, bring its key back there as a new key.
So every row's final slot is known before any row is written: the evictions and new keys
are applied in row order, then the whole batch is one scatter. Only when no untouched key is
left (a batch touching nearly every key) does the plan stop at that row, and the caller
applies the rest row by row, as before.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator

import numpy as np

from heimdall.window import _kernels as k
from heimdall.window._ring import Ring
from heimdall.window._shared import encode_key


def _oldest_first(live: np.ndarray, ticks: np.ndarray, m: int) -> Iterator[int]:
    """The slots ``live``, least recently updated first by ``ticks`` (unique: one per row
    written). Sorts ``m`` first, then more as they are read."""
    done = 0
    while done < len(live):
        m = min(len(live), m)
        part = np.argpartition(ticks, m - 1)[:m] if m < len(live) else np.arange(len(live))
        part = part[np.argsort(ticks[part], kind="stable")]
        yield from live[part[done:]].tolist()
        done, m = m, 4 * m


def admit_batch(ring: Ring, keys: list[Hashable], slots: np.ndarray) -> int:
    """Give the batch's new keys slots as ``Ring.new_slot`` would, row by row, with nothing
    written (lock held; eviction on). ``slots``: the rows' slots from ``lookup``, ``ABSENT``
    for a key not held; each row's slot is written in place. Returns the rows so placed: all
    of them, or the row where the plan stops (the rows from there on the caller takes row by
    row, looking their keys up again)."""
    n = len(keys)
    absent = np.flatnonzero(slots < 0)
    group_of: dict[Hashable, int] = {}
    new_keys: list[Hashable] = []
    groups: list[int] = []  # the new key of each absent row
    events: list[tuple[int, int]] = []  # (row, g): key g >= 0 of new_keys, or old slot -1 - g
    for i in absent.tolist():
        key = keys[i]
        g = group_of.get(key)
        if g is None:
            g = group_of[key] = len(new_keys)
            new_keys.append(key)
            events.append((i, g))  # rows ascending: already a heap
        groups.append(g)
    if ring.shared_index is not None:
        for key in new_keys:
            encode_key(key)  # a key the shared index cannot hold fails before any change
    first = np.full(ring.high_water, n, dtype=np.int64)  # each held slot's first row
    rows = np.flatnonzero(slots >= 0)
    np.minimum.at(first, slots[rows], rows)
    live = np.flatnonzero(ring.live[: ring.high_water])  # the keys held before the batch
    # victims are old keys no earlier row touched: with uniform keys, a third or so of them
    want = 4 * (len(new_keys) - len(ring.free) - (ring.max_keys - ring.high_water)) + 64
    candidates = _oldest_first(live, ring.meta[live, k.TICK], want)
    placed = [0] * len(new_keys)
    back: dict[int, int] = {}  # an evicted slot whose key came back -> its new slot
    gone: dict[int, Hashable] = {}  # an evicted slot whose key has rows later -> the key
    evicted: list[int] = []
    owners: list[int] = []  # the slots new keys take, in row order; their keys:
    owned: list[Hashable] = []
    stop = n
    while events:
        row, g = heapq.heappop(events)
        slot = ring.spare_slot()
        if slot is None:
            for slot in candidates:
                f = int(first[slot])
                if f > row:  # no row before this one touched it
                    break
            else:
                stop = row  # every key left was touched by this batch: row by row from here
                break
            if f < n:
                gone[slot] = ring.slot_keys[slot]
                heapq.heappush(events, (f, -1 - slot))
            evicted.append(slot)
        owners.append(slot)
        if g >= 0:
            owned.append(new_keys[g])
            placed[g] = slot
        else:
            owned.append(gone[-1 - g])
            back[-1 - g] = slot
    # all evictions, then all new keys: no new key is evicted, and a key evicted and back
    # leaves the index before it comes back, as row by row
    ring.evict_slots(evicted)
    ring.own_slots(owners, owned)
    # rows of evicted keys that came back, by their old slot (before the new keys' rows
    # are written in, as a new key may have taken such a slot)
    if back:
        rows = np.flatnonzero(np.isin(slots[:stop], np.fromiter(back, np.int64, len(back))))
        slots[rows] = [back[s] for s in slots[rows].tolist()]
    if len(absent):
        slots[absent] = np.asarray(placed, dtype=np.int64)[groups]  # past stop: not read
    return stop
