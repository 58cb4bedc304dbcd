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
    new_keys: list[Hashable] = []  # in order of their first rows:
    new_rows: list[int] = []
    groups: list[int] = []  # the new key of each absent row
    for i in absent.tolist():
        key = keys[i]
        g = group_of.get(key)
        if g is None:
            g = group_of[key] = len(new_keys)
            new_keys.append(key)
            new_rows.append(i)
        groups.append(g)
    if ring.shared_index is not None:
        for key in new_keys:
            encode_key(key)  # a key the shared index cannot hold fails before any change
    first = np.full(ring.high_water, n, dtype=np.int64)  # each held slot's first row
    rows = np.flatnonzero(slots >= 0)
    np.minimum.at(first, slots[rows], rows)
    live = np.flatnonzero(ring.live[: ring.high_water])  # the keys held before the batch
    # the first new keys take the slots no key holds (no eviction comes before them)
    spare = min(len(new_keys), len(ring.free) + ring.max_keys - ring.high_water)
    owners = ring.spare_slots(spare)
    owned: list[Hashable] = new_keys[:spare]  # the keys of owners
    placed = owners + [0] * (len(new_keys) - spare)  # each new key's slot
    # victims are old keys no earlier row touched: with uniform keys, a third or so of them
    candidates = _oldest_first(live, ring.meta[live, k.TICK], 4 * (len(new_keys) - spare) + 64)
    first_row = first.item
    slot_keys = ring.slot_keys
    evicted: list[int] = []
    back: dict[int, int] = {}  # an evicted slot whose key came back -> its new slot
    coming: list[tuple[int, int]] = []  # a heap of (row, evicted slot) for keys coming back
    gone: dict[int, Hashable] = {}  # those slots' keys
    g, stop = spare, n
    while g < len(new_keys) or coming:
        if coming and (g == len(new_keys) or coming[0][0] < new_rows[g]):
            row, old = heapq.heappop(coming)
            key = gone[old]
        else:
            row, old, key = new_rows[g], -1, new_keys[g]
            g += 1
        for slot in candidates:
            f = first_row(slot)
            if f > row:  # no row before this one touched it
                break
        else:
            stop = row  # every key left was touched by this batch: row by row from here
            break
        if f < n:
            gone[slot] = slot_keys[slot]
            heapq.heappush(coming, (f, slot))
        evicted.append(slot)
        owners.append(slot)
        owned.append(key)
        if old < 0:
            placed[g - 1] = slot
        else:
            back[old] = slot
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
