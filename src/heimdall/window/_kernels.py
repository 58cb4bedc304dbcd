"""Numba kernels over one stream's ring buffers, and the eviction plan of a batch
(``plan_evictions``, for _admit.py). Internal.

All kernels hold the GIL (no ``nogil``), so to other Python threads of this process a
kernel's writes appear at once. Layout: ``data`` (max_keys, cap, F), ``ts`` (max_keys, cap)
int64, ``meta`` (max_keys, 8) int64 with the columns below; a key's window is the rows
``[POS - FILL, POS)`` of its slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

POS, FILL, WSEQ, CSEQ, NEWEST, TOUCH, TICK = 0, 1, 2, 3, 4, 5, 6
KEYGEN = 7  # bumped each time the slot loses its key: a read can tell the slot changed hands
META_COLS = 8  # one 64-byte line per key (as in _native.c)

# slot values in the read kernels' input besides real slots
ABSENT = -1  # a key the store does not hold: length 0, count 0, NaN
SKIP = -2  # already read: the kernel leaves its outputs as they are

# counters written by the scatter (_native.c)
C_LATE, C_OOO, C_EXPIRED = 0, 1, 2
N_COUNTERS = 3


@njit(cache=True)
def _copy(src, dst):
    """dst[:] = src[:] for 1-D arrays of one length (they may overlap if dst starts first).

    Indexing from ``range`` keeps numba from checking each index for wrap-around, so the
    loop vectorizes: several times faster than the same copy indexed by offsets.
    """
    for x in range(src.shape[0]):
        dst[x] = src[x]


@njit(cache=True)
def _select(ts, meta, slot, rows, span_ns):
    """Bounds [a, b) of the last ``rows`` rows (0 = all) within ``span_ns`` (0 = all)."""
    b = meta[slot, POS]
    n = meta[slot, FILL]
    if rows > 0 and rows < n:
        n = rows
    if span_ns > 0:
        lo = meta[slot, NEWEST] - span_ns
        while n > 0 and ts[slot, b - n] < lo:
            n -= 1
    return b - n, b


@njit(cache=True)
def gather(data, ts, meta, slots, rows, span_ns, out_values, out_ts, out_len, ok):
    """Copy each slot's window right-aligned into out_values[i, -n:] and zero the rows before
    it (every output of row i is written, or none when the read was torn); ok[i] = consistent.
    """
    W = out_values.shape[1]
    for i in range(slots.shape[0]):
        s = slots[i]
        if s == SKIP:
            continue
        if s < 0:
            out_values[i] = 0
            out_ts[i] = 0
            out_len[i] = 0
            ok[i] = True
            continue
        c0 = meta[s, CSEQ]
        if meta[s, WSEQ] != c0:
            ok[i] = False
            continue
        a, b = _select(ts, meta, s, rows, span_ns)
        n = min(b - a, W)
        a = b - n
        out_values[i, :W - n] = 0
        out_ts[i, :W - n] = 0
        _copy(ts[s, a:b], out_ts[i, W - n:])
        _copy(data[s, a:b].reshape(-1), out_values[i, W - n:].reshape(-1))
        out_len[i] = n
        ok[i] = meta[s, WSEQ] == c0


@njit(cache=True)
def aggregate(data, ts, meta, slots, rows, span_ns, out, ok):
    """out[i, k, j] for k in (count, sum, mean, std, min, max, last); NaN when empty."""
    F = data.shape[2]
    for i in range(slots.shape[0]):
        s = slots[i]
        if s == SKIP:
            continue
        for j in range(F):
            out[i, 0, j] = 0.0
            for k in range(1, 7):
                out[i, k, j] = np.nan
        if s < 0:
            ok[i] = True
            continue
        c0 = meta[s, CSEQ]
        if meta[s, WSEQ] != c0:
            ok[i] = False
            continue
        a, b = _select(ts, meta, s, rows, span_ns)
        n = b - a
        if n > 0:
            for j in range(F):
                tot = 0.0
                lo = np.inf
                hi = -np.inf
                for r in range(a, b):
                    v = float(data[s, r, j])
                    tot += v
                    lo = min(lo, v)
                    hi = max(hi, v)
                mean = tot / n
                acc = 0.0
                for r in range(a, b):
                    d = float(data[s, r, j]) - mean
                    acc += d * d
                out[i, 0, j] = n
                out[i, 1, j] = tot
                out[i, 2, j] = mean
                out[i, 3, j] = np.sqrt(acc / n)
                out[i, 4, j] = lo
                out[i, 5, j] = hi
                out[i, 6, j] = data[s, b - 1, j]
        ok[i] = meta[s, WSEQ] == c0



@njit(cache=True)
def open_clears(meta, slots, cap):
    """The first step of clearing ``slots`` (``Ring._clear_slots``): each WSEQ raised past any
    write (every view of the slot ends) and KEYGEN bumped (the slot changes hands)."""
    for s in slots:
        meta[s, WSEQ] += cap + 1
        meta[s, KEYGEN] += 1


@njit(cache=True)
def empty_slots(meta, slots):
    """The next step: each slot's rows gone (its CSEQ still below WSEQ: no view reads it)."""
    for s in slots:
        meta[s, POS] = 0
        meta[s, FILL] = 0
        meta[s, NEWEST] = 0


@njit(cache=True)
def close_clears(meta, slots):
    """The last step, in a call of its own so that it comes after the others: each CSEQ set
    to its WSEQ."""
    for s in slots:
        meta[s, CSEQ] = meta[s, WSEQ]

@njit(cache=True)
def plan_evictions(new_rows, held, first, candidates, n, exhaustive, victims, who):
    """The eviction loop of ``_admit.admit_batch``: each event, in row order, takes the next
    of ``candidates`` (slots, least recently updated first) that no earlier row touched.

    Events: a new key's first row (``new_rows``, ascending: key g), and the first row
    ``first[v]`` of a victim ``v`` the batch touches later (its key comes back there; ``held``
    gives a row's slot before the batch). Eviction e takes slot ``victims[e]`` for
    ``who[e]``: g, or ``-v - 1`` for the key of slot v coming back. Returns (evictions, stop):
    stop is ``n`` when every event has its slot, or the row of the first event no candidate
    is left for when ``candidates`` holds every live slot (``exhaustive``); evictions is -1
    when more candidates are needed (not ``exhaustive``)."""
    heap = np.empty(len(candidates), np.int64)  # rows of keys coming back: at most one each
    h = 0
    g = 0
    c = 0
    e = 0
    while g < len(new_rows) or h > 0:
        if h > 0 and (g == len(new_rows) or heap[0] < new_rows[g]):
            row = heap[0]
            old = held[row]
            h -= 1  # pop: the last entry sifts down from the root
            x = heap[h]
            i = 0
            while True:
                j = 2 * i + 1
                if j >= h:
                    break
                if j + 1 < h and heap[j + 1] < heap[j]:
                    j += 1
                if heap[j] >= x:
                    break
                heap[i] = heap[j]
                i = j
            heap[i] = x
            tag = -old - 1
        else:
            row = new_rows[g]
            tag = g
            g += 1
        while c < len(candidates) and first[candidates[c]] <= row:
            c += 1  # touched by a row before this one: more recent than any untouched key
        if c == len(candidates):
            if exhaustive:
                return e, row
            return -1, n
        v = candidates[c]
        c += 1
        f = first[v]
        if f < n:  # push: the victim's key comes back at its first row
            i = h
            h += 1
            while i > 0 and heap[(i - 1) // 2] > f:
                heap[i] = heap[(i - 1) // 2]
                i = (i - 1) // 2
            heap[i] = f
        victims[e] = v
        who[e] = tag
        e += 1
    return e, n
