"""``heimdall demo``: synthetic sensor events into a store, then reads, batches and aggregates.

Until Pulsar ingest lands this demo runs in-process, with no broker.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from heimdall.schema import CountWindow, StreamSpec
from heimdall.window import WindowStore

SPARK = "▁▂▃▄▅▆▇█"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the in-process demo on synthetic sensor data",
        description="Synthetic sensor events (machines x 3 sensors) into a window store, then "
        "zero-copy reads, a batched read and aggregates, printed as tables.",
    )
    p.add_argument(
        "--machines", type=int, default=1_000, help="number of machines (keys), default 1000"
    )
    p.add_argument("--events", type=int, default=500_000, help="events to ingest, default 500000")
    p.add_argument("--window", type=int, default=256, help="rows per window, default 256")
    p.add_argument("--seed", type=int, default=7, help="random seed")
    p.set_defaults(run=run)


def sparkline(x: np.ndarray, width: int = 40) -> str:
    """A one-line sketch of ``x`` (its last ``width`` points)."""
    x = np.asarray(x, dtype=np.float64)[-width:]
    if x.size == 0:
        return ""
    lo, hi = float(x.min()), float(x.max())
    scale = (len(SPARK) - 1) / (hi - lo) if hi > lo else 0.0
    return "".join(SPARK[int((v - lo) * scale)] for v in x)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.machines < 1 or args.events < 1 or args.window < 1:
        console.print("[red]--machines, --events and --window must be >= 1[/red]")
        return 2
    rng = np.random.default_rng(args.seed)
    spec = StreamSpec(
        "sensors",
        key="machine_id",
        time="ts",
        fields=["temp", "vibration", "rpm"],
        dtype="float32",
        window=CountWindow(args.window),
    )
    store = WindowStore([spec], max_keys=args.machines)
    machines = [f"m-{i}" for i in range(args.machines)]
    drifting = set(
        rng.choice(args.machines, size=max(1, args.machines // 100), replace=False).tolist()
    )
    console.print(
        f"[bold]Heimdall demo[/bold]: {args.events:,} events from {args.machines:,} machines "
        f"into CountWindow({args.window}); {len(drifting)} machines drift into anomalies."
    )
    chunk = 10_000
    t0 = time.perf_counter()
    start_ns = time.time_ns()
    done = 0
    with console.status("ingesting...") as status:
        while done < args.events:
            n = min(chunk, args.events - done)
            ids = rng.integers(0, args.machines, n)
            vals = np.column_stack(
                [
                    70 + rng.normal(0, 1.5, n),
                    0.03 + rng.normal(0, 0.005, n),
                    1500 + rng.normal(0, 20, n),
                ]
            ).astype(np.float32)
            drift = np.isin(ids, list(drifting))
            vals[drift, 0] += 15 * done / args.events
            vals[drift, 1] += 0.05 * done / args.events
            ts = start_ns + (done + np.arange(n)) * 50_000
            store.append_batch("sensors", [machines[i] for i in ids.tolist()], vals, ts)
            done += n
            status.update(f"ingesting... {done:,}/{args.events:,}")
    elapsed = time.perf_counter() - t0
    console.print(
        f"ingested {done:,} events in {elapsed:.2f}s ({done / elapsed:,.0f} events/s, batches of "
        f"{chunk:,}, including the kernels' first compile)"
    )

    keys = machines[: min(8, args.machines)] + [machines[i] for i in sorted(drifting)[:2]]
    reads = Table(title="store.window(): zero-copy views")
    for col in ("key", "rows", "temp (last 40)", "latest temp", "read time"):
        reads.add_column(col)
    for key in keys:
        r0 = time.perf_counter_ns()
        w = store.window("sensors", key)
        temp = w["temp"]
        dt = time.perf_counter_ns() - r0
        reads.add_row(key, str(len(w)), sparkline(temp), f"{temp[-1]:.1f}", f"{dt / 1000:.1f} us")
    console.print(reads)

    store.windows("sensors", machines[:2])  # the first call compiles the gather kernel
    t1 = time.perf_counter()
    batch = store.windows("sensors", machines[:512])
    bt = time.perf_counter() - t1
    console.print(
        f"store.windows() for 512 keys: values {batch.values.shape} {batch.values.dtype}, "
        f"{bt * 1000:.2f} ms"
    )

    agg = store.aggregate("sensors", keys, ["count", "mean", "std", "max"])
    table = Table(title="store.aggregate(): per key, vectorized")
    for col in ("key", "count", "temp mean", "temp std", "vibration max", "rpm mean", "drifting"):
        table.add_column(col)
    for i, key in enumerate(keys):
        table.add_row(
            key,
            str(agg["count"][i, 0]),
            f"{agg['mean'][i, 0]:.2f}",
            f"{agg['std'][i, 0]:.2f}",
            f"{agg['max'][i, 1]:.3f}",
            f"{agg['mean'][i, 2]:.0f}",
            "yes" if int(key[2:]) in drifting else "",
        )
    console.print(table)
    s = store.stats()["streams"]["sensors"]
    console.print(
        f"keys {s['keys']:,}/{s['max_keys']:,}  events {s['events']:,}  "
        f"evictions {s['evictions']}  "
        f"memory {s['memory_bytes'] / 2**20:.1f} MiB"
    )
    return 0
