"""append_batch into a full store whose keys churn: more keys arrive than max_keys holds, so
batches evict (least recently updated first). Each figure beside baselines run in this
process: the same store fed keys it all holds (no eviction), and what a user writes by
hand, an OrderedDict of deque(maxlen=W) kept in LRU order, row by row.

    .venv/bin/python benchmarks/bench_churn.py [--events N] [--keys K] [--passes P]

With ``--passes P`` the store takes the events P times over and the figure is the median of
the passes after the first: the steady rate, once the store's first pass (which sizes its
heap and index) is behind it.
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict, deque

import numpy as np
from rich.console import Console
from rich.table import Table

import heimdall as hd
from heimdall.window import warm_up

W = 256
CHUNK = 10_000
SPEC = hd.StreamSpec("s", fields=["a", "b", "c", "d"], window=hd.CountWindow(W))


def store_rate(keys: list[str], names: list[str], values: np.ndarray, ts: np.ndarray,
               max_keys: int, passes: int = 1) -> tuple[float, int]:
    """rows/s of append_batch in chunks, into a store first filled with max_keys keys: of one
    pass over ``keys``, or the median of passes 2 to ``passes``; and the evictions."""
    store = hd.WindowStore([SPEC], max_keys=max_keys)
    store.append_batch("s", names[:max_keys], values[:max_keys], ts[:max_keys])
    rates = []
    for p in range(passes):
        later = ts + p * len(keys)
        t0 = time.perf_counter()
        for i in range(0, len(keys), CHUNK):
            store.append_batch("s", keys[i : i + CHUNK], values[i : i + CHUNK],
                               later[i : i + CHUNK])
        rates.append(len(keys) / (time.perf_counter() - t0))
    rate = float(np.median(rates[1:])) if passes > 1 else rates[0]
    return rate, int(store.stats()["streams"]["s"]["evictions"])


def lru_rate(keys: list[str], rows: list[tuple[float, ...]], max_keys: int) -> float:
    """rows/s of a hand-written LRU of deques, row by row."""
    lru: OrderedDict[str, deque[tuple[int, tuple[float, ...]]]] = OrderedDict()
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        dq = lru.get(key)
        if dq is None:
            if len(lru) >= max_keys:
                lru.popitem(last=False)
            dq = lru[key] = deque(maxlen=W)
        else:
            lru.move_to_end(key)
        dq.append((i, rows[i]))
    return len(keys) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10_000, help="max_keys of the store")
    ap.add_argument("--passes", type=int, default=1,
                    help="feed the events this many times; report the median after the first")
    args = ap.parse_args()
    N, K, P = args.events, args.keys, max(1, args.passes)
    rng = np.random.default_rng(0)
    warm_up([SPEC])  # the kernels compiled (or loaded) first, as `heimdall serve` does
    values = rng.normal(size=(N, 4))
    ts = np.arange(N, dtype=np.int64)
    rows = [tuple(r) for r in values.tolist()]
    table = Table(title=f"bench_churn: max_keys {K:,}, CountWindow({W}), 4 float64 fields, "
                        f"{N:,} events with uniform keys, chunks of {CHUNK:,}"
                        + (f", median of passes 2-{P}" if P > 1 else ""))
    for col in ("keys arriving", "evictions", "heimdall rows/s", "baselines (same process)",
                "ratio"):
        table.add_column(col)
    for universe in (K, int(K * 1.02), int(K * 1.2), 2 * K):
        names = [f"k-{i}" for i in range(universe)]
        keys = [names[i] for i in rng.integers(0, universe, N).tolist()]
        rate, evictions = store_rate(keys, names, values, ts, K, P)
        held = [names[i] for i in rng.integers(0, K, N).tolist()]  # keys it all holds
        steady, _ = store_rate(held, names, values, ts, K, P)
        by_hand = lru_rate(keys, rows, K)
        table.add_row(
            f"{universe:,} ({universe / K:.2f}x max_keys)", f"{evictions:,}", f"{rate:,.0f}",
            f"{steady:,.0f} no eviction; {by_hand:,.0f} OrderedDict LRU of deques",
            f"{rate / steady:.2f}x no eviction, {rate / by_hand:.1f}x LRU",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
