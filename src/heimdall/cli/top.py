"""``heimdall top ADDRESS``: a live view of a running Heimdall's stats."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from heimdall.cli._render import (
    add_remote_args,
    memory,
    mib,
    open_remote,
    positive_float,
    positive_int,
)
from heimdall.cluster.client import ClusterStore


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="live view of a running Heimdall's streams and models (gRPC)",
        description="Poll a Heimdall's stats over gRPC and show, per stream, keys, events "
        "and rates, dead letters, lag and latency, and per model what it scored and how "
        "fast. Ctrl-C quits.",
    )
    add_remote_args(p)
    p.add_argument("--interval", type=positive_float, default=1.0, metavar="S",
                   help="seconds between refreshes (default: 1)")
    p.add_argument("-n", "--iterations", type=positive_int, default=None,
                   help="stop after N refreshes (default: until Ctrl-C)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    with open_remote(args) as remote:
        prev: dict[str, Any] | None = None
        t_prev = time.monotonic()
        done = 0
        with Live(console=console, refresh_per_second=4, transient=False) as live, \
                contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how top is left: exit 0
            while True:
                stats = remote.server_stats()
                now = time.monotonic()
                if isinstance(remote, ClusterStore):
                    live.update(cluster_view(remote, stats, prev, now - t_prev))
                else:
                    live.update(view(args.address, stats, prev, now - t_prev))
                prev, t_prev = stats, now
                done += 1
                if args.iterations and done >= args.iterations:
                    break
                time.sleep(args.interval)
    return 0


def cluster_view(cluster: ClusterStore, stats: dict[str, Any], prev: dict[str, Any] | None,
                 dt: float) -> Group:
    """Every node: its address, the share of the key-hash space it owns per stream, then its
    streams and models as for one node."""
    from heimdall.cluster._hash import RANGE_SIZE

    parts: list[Any] = []
    for address, name in sorted(cluster.nodes.items(), key=lambda kv: kv[1]):
        owned = cluster.ranges.get(name, {})
        share = ", ".join(
            f"{stream} {sum(b - a + 1 for a, b in rs) / (RANGE_SIZE - 1):.0%} "
            f"({len(rs)} ranges)" for stream, rs in owned.items())
        parts.append(view(f"{name} ({address}; owns {share or 'nothing'})",
                          stats.get(name, {}), (prev or {}).get(name), dt))
    return Group(*parts)


def view(address: str, stats: dict[str, Any], prev: dict[str, Any] | None,
         dt: float) -> Group:
    """The tables of one refresh; rates from the difference with the previous stats."""
    store = stats.get("store", {})
    ingest = stats.get("ingest", {})
    streams = Table(title=f"Heimdall at {address}: windows {memory(store)}",
                    title_justify="left")
    for col in ("stream", "keys", "events", "events/s", "dead letters", "pushed", "lag s",
                "p99 ms", "evictions", "memory in use / reserved"):
        streams.add_column(col, justify="left" if col == "stream" else "right")
    for name, s in store.get("streams", {}).items():
        before = ((prev or {}).get("store", {}).get("streams", {}).get(name, {})
                  .get("events", s["events"]))
        rate = (s["events"] - before) / dt if prev and dt > 0 else 0.0
        i = ingest.get(name, {})
        p99 = i.get("latency_p99_s")
        streams.add_row(
            name, f"{s['keys']:,}/{s['max_keys']:,}", f"{s['events']:,}", f"{rate:,.0f}",
            f"{i.get('dead_letters', 0):,}", f"{i.get('pushed', 0):,}",
            f"{i.get('lag_s', 0.0):.2f}", "-" if p99 is None else f"{p99 * 1e3:.1f}",
            f"{s['evictions']:,}",
            f"{mib(s.get('memory_used_bytes', 0))} / {mib(s.get('memory_bytes', 0))}")
    parts: list[Any] = [streams]
    models = stats.get("models", {})
    if models:
        t = Table(title="models", title_justify="left")
        for col in ("model", "stream", "scored", "mean batch", "failed", "skipped",
                    "model p50 ms", "p99 ms"):
            t.add_column(col, justify="left" if col in ("model", "stream") else "right")
        for name, m in models.items():
            p50, p99 = m.get("model_p50_s"), m.get("latency_p99_s")
            t.add_row(name, m["stream"], f"{m['scored']:,}", f"{m['mean_batch']:.1f}",
                      f"{m['failed'] + m['wrong_output']:,}", f"{m['skipped']:,}",
                      "-" if p50 is None else f"{p50 * 1e3:.2f}",
                      "-" if p99 is None else f"{p99 * 1e3:.1f}")
        parts.append(t)
    return Group(*parts)
