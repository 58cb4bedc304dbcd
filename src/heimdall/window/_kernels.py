"""Numba kernels over one stream's ring buffers. Internal.

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
META_COLS = 8  # one 64-byte line per key; _ring.append_one addresses a row as slot << 3

# slot values in the read kernels' input besides real slots
ABSENT = -1  # a key the store does not hold: length 0, count 0, NaN
SKIP = -2  # already read: the kernel leaves its outputs as they are

# counters written by scatter
C_LATE, C_OOO, C_EXPIRED = 0, 1, 2
N_COUNTERS = 3


@njit(cache=True)
def compact(data, ts, meta, slot, keep):
    """Move the newest ``keep`` rows of ``slot`` to the front of its ring."""
    pos = meta[slot, POS]
    _copy(ts[slot, pos - keep:pos], ts[slot, :keep])
    _copy(data[slot, pos - keep:pos].reshape(-1), data[slot, :keep].reshape(-1))
    meta[slot, POS] = keep


@njit(cache=True)
def _copy(src, dst):
    """dst[:] = src[:] for 1-D arrays of one length (they may overlap if dst starts first).

    Indexing from ``range`` keeps numba from checking each index for wrap-around, so the
    loop vectorizes: several times faster than the same copy indexed by offsets.
    """
    for x in range(src.shape[0]):
        dst[x] = src[x]


@njit(cache=True)
def _trim_span(ts, meta, slot, span_ns):
    if span_ns <= 0:
        return
    pos = meta[slot, POS]
    fill = meta[slot, FILL]
    lo = meta[slot, NEWEST] - span_ns
    while fill > 1 and ts[slot, pos - fill] < lo:
        fill -= 1
    meta[slot, FILL] = fill


@njit(cache=True)
def scatter(
    data,
    ts,
    meta,
    slots,
    values,
    ts_in,
    W,
    span_ns,
    lateness_ns,
    time_ordered,
    now_ns,
    tick0,
    counters,
):
    """Append row i of ``values`` to slot ``slots[i]``, in order; returns nothing.

    Per row: WSEQ goes up before any slot memory is written and CSEQ is set equal after,
    so a reader can tell a view that was overwritten (see store.py).
    """
    cap = data.shape[1]
    F = data.shape[2]
    invalidate = cap + 1
    for i in range(slots.shape[0]):
        s = slots[i]
        t = ts_in[i]
        pos = meta[s, POS]
        fill = meta[s, FILL]
        if time_ordered and fill > 0 and t < meta[s, NEWEST]:
            newest = meta[s, NEWEST]
            if t < newest - lateness_ns:
                counters[C_LATE] += 1
                continue
            if span_ns > 0 and t < newest - span_ns:
                counters[C_EXPIRED] += 1
                continue
            counters[C_OOO] += 1
            meta[s, WSEQ] += invalidate
            if pos == cap:
                compact(data, ts, meta, s, fill)
                pos = fill
            start = pos - fill
            ins = pos
            while ins > start and ts[s, ins - 1] > t:
                ins -= 1
            k = pos
            while k > ins:
                ts[s, k] = ts[s, k - 1]
                for j in range(F):
                    data[s, k, j] = data[s, k - 1, j]
                k -= 1
            ts[s, ins] = t
            for j in range(F):
                data[s, ins, j] = values[i, j]
            pos += 1
            fill = min(fill + 1, W)
            meta[s, POS] = pos
            meta[s, FILL] = fill
        else:
            meta[s, WSEQ] += 1
            if pos == cap:
                compact(data, ts, meta, s, min(fill, W - 1))
                pos = meta[s, POS]
            ts[s, pos] = t
            for j in range(F):
                data[s, pos, j] = values[i, j]
            meta[s, POS] = pos + 1
            meta[s, FILL] = min(fill + 1, W)
            if time_ordered:
                meta[s, NEWEST] = t
            else:
                meta[s, NEWEST] = max(t, meta[s, NEWEST]) if fill > 0 else t
            _trim_span(ts, meta, s, span_ns)
        meta[s, TOUCH] = now_ns
        meta[s, TICK] = tick0 + i
        meta[s, CSEQ] = meta[s, WSEQ]


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
