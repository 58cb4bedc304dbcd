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

from collections.abc import Hashable

import numpy as np

from heimdall import _core as core
from heimdall.window._ring import Ring


def _oldest_first(live: np.ndarray, ticks: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` slots of ``live`` least recently updated, oldest first by ``ticks`` (unique:
    one per row written); all of them when ``m`` is that many or more."""
    if m >= len(live):
        return live[np.argsort(ticks, kind="stable")]
    part = np.argpartition(ticks, m - 1)[:m]
    return live[part[np.argsort(ticks[part], kind="stable")]]


def new_keys_of(keys: list[Hashable], slots: np.ndarray) -> tuple[np.ndarray, list[Hashable]]:
    """The keys of the rows ``lookup`` found no slot for (``slots`` < 0), once each, in order
    of their first rows (each the object at that row); and those rows, ascending."""
    absent = np.flatnonzero(slots < 0).tolist()
    at = keys.__getitem__
    # each new key's first row: the rows read backwards, so that the first one is kept
    first_of = dict(zip(map(at, reversed(absent)), reversed(absent), strict=True))
    rows = np.sort(np.fromiter(first_of.values(), np.int64, len(first_of)))
    return rows, list(map(at, rows.tolist()))


def admit_batch(ring: Ring, keys: list[Hashable], slots: np.ndarray, new_rows: np.ndarray,
                new_keys: list[Hashable]) -> int:
    """Give the batch's new keys slots as ``Ring.new_slot`` would, row by row, with nothing
    written (lock held; eviction on). ``slots``: the rows' slots from ``lookup``, ``ABSENT``
    for a key not held; each row's slot is written in place. ``new_rows``, ``new_keys``: from
    ``new_keys_of``. Returns the rows so placed: all of them, or the row where the plan stops
    (the rows from there on the caller takes row by row, looking their keys up again)."""
    n = len(keys)
    ring.check_shareable(new_keys)
    first = np.full(ring.high_water, n, dtype=np.int64)  # each held slot's first row
    rows = np.flatnonzero(slots >= 0)
    np.minimum.at(first, slots[rows], rows)
    live = np.flatnonzero(ring.live[: ring.high_water])  # the keys held before the batch
    # the first new keys take the slots no key holds (no eviction comes before them)
    spare = min(len(new_keys), len(ring.free) + ring.max_keys - ring.high_water)
    owners = ring.spare_slots(spare)
    owned: list[Hashable] = new_keys[:spare]  # the keys of owners
    # victims are old keys no earlier row touched: the oldest need / (the share of held keys
    # the batch leaves untouched), and a margin (the plan asks for more when that is too few)
    new_first = new_rows[spare:]
    ticks = ring.meta[live, core.TICK]
    untouched = len(live) - int(np.count_nonzero(first < n))
    m = int(1.25 * len(new_first) * len(live) / max(untouched, 1)) + 64
    while True:
        candidates = _oldest_first(live, ticks, m)
        victims = np.empty(len(candidates), dtype=np.int64)
        who = np.empty(len(candidates), dtype=np.int64)
        done, stop = core.plan_evictions(new_first, slots, first, candidates, n,
                                         len(candidates) == len(live), victims, who)
        if done >= 0:
            break
        m *= 4
    evicted: list[int] = victims[:done].tolist()
    owners += evicted
    # the key of each eviction: a new key (who = g), or an evicted key coming back (-v - 1)
    who = who[:done]
    tagged = new_keys + ring.slot_keys  # new key g at spare + g, slot v's at len(new_keys) + v
    owned += map(tagged.__getitem__,
                 np.where(who >= 0, spare + who, len(new_keys) - 1 - who).tolist())
    # all evictions, then all new keys: no new key is evicted, and a key evicted and back
    # leaves the index before it comes back, as row by row
    ring.evict_slots(evicted)
    ring.own_slots(owners, owned)
    # every row's slot before stop is now its key's in the index: a key held all along, a
    # new key, or a victim back in its new slot (all its rows come after its eviction)
    slots[:] = ring.lookup(keys, core.ABSENT)
    return stop
