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


