"""``heimdall demo --nodes N``: a cluster of N ``heimdall serve`` processes on a real Apache
Pulsar standalone broker (fetched once with Maven, as the tests do), the synthetic producer,
a live view of every node; midway one node is killed with kill -9, and its keys come back on
the others, each window continuing the one read before the kill."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from heimdall._signals import stop_on_signals
from heimdall.cli._synthetic import SyntheticProducer
from heimdall.cluster.client import ClusterStore
from heimdall.cluster.local import NodeProcess, keep_history
from heimdall.cluster.standalone import PulsarStandalone, lib_dir
from heimdall.errors import HeimdallError

TOPIC = "persistent://public/default/sensors"
FIELDS = ("temp", "vibration", "rpm")


def _table(cluster: ClusterStore, nodes: list[NodeProcess], note: str) -> Table:
    from heimdall.cluster._hash import RANGE_SIZE

    t = Table(title=f"Heimdall cluster: {note}", min_width=72)
    for col in ("node", "address", "state", "owns", "keys", "events"):
        t.add_column(col, justify="left" if col in ("node", "address", "state") else "right")
    with contextlib.suppress(HeimdallError):
        cluster.refresh()
    for n in nodes:
        rs = cluster.ranges.get(n.name, {}).get("sensors", [])
        share = sum(b - a + 1 for a, b in rs) / (RANGE_SIZE - 1)
        keys = events = "-"
        if n.alive and n.address in cluster.nodes:
            with contextlib.suppress(HeimdallError):
                st = cluster._remote(n.address).server_stats()
                keys = f"{st['store']['streams']['sensors']['keys']:,}"
                events = f"{st['ingest']['sensors']['rows']:,}"
        t.add_row(n.name, n.address, "up" if n.alive else "[red]killed[/red]",
                  f"{share:.0%}", keys, events)
    return t


def _continues(before: np.ndarray, after: np.ndarray) -> bool:
    """``after`` holds ``before``'s newest rows, in order, followed only by newer rows (a count
    window slides: its oldest rows may have gone)."""
    if len(before) == 0:
        return True
    last = before[-1]
    at = [i for i in range(len(after)) if np.array_equal(after[i], last)]
    if not at:
        return False  # slid past it entirely: cannot tell; counted as not shown intact
    i = at[-1]
    k = min(i + 1, len(before))
    return bool(np.array_equal(after[i + 1 - k: i + 1], before[len(before) - k:]))


def run_cluster(args: argparse.Namespace, console: Console) -> int:
    nodes_n = args.nodes
    workdir = Path(args.data_dir or tempfile.mkdtemp(prefix="heimdall-cluster-demo-"))
    duration = args.duration or 40.0
    jars = lib_dir()
    with stop_on_signals() as stop:
        broker = PulsarStandalone(workdir / "pulsar")
        nodes: list[NodeProcess] = []
        try:
            with console.status(f"starting Apache Pulsar standalone (jars in {jars}; the "
                                f"first run fetches ~235 MB from Maven Central) ..."):
                broker.start()
            keep_history(broker.admin_url)
            console.print(f"broker {broker.url} (admin {broker.admin_url}); the topic keeps "
                          f"its history: the cluster's durable state")
            streams = f"""
[[streams]]
name = "sensors"
topic = "{TOPIC}"
key = "machine_id"
time = "ts"
fields = {json.dumps(list(FIELDS))}
dtype = "float32"
window = {{ count = {args.window} }}
"""
            nodes = [NodeProcess(f"n{i}", broker.url, broker.admin_url, streams, workdir,
                                 max_keys=args.machines) for i in range(nodes_n)]
            for n in nodes:
                with console.status(f"starting node {n.name} ..."):
                    n.start()
            import pulsar

            client = pulsar.Client(broker.url,
                                   logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
            producer = SyntheticProducer(client, TOPIC, args.machines, args.rate,
                                         seed=args.seed, key_based=True).start()
            # a short deadline: a call that meets the killed node's address fails fast
            cluster = ClusterStore([n.address for n in nodes], timeout_s=2.0)
            console.print(f"{nodes_n} nodes on one Key_Shared subscription; producing "
                          f"~{args.rate:,.0f} events/s from {args.machines:,} machines; "
                          f"{nodes[0].name} is killed at {duration / 2:.0f} s; Ctrl-C stops")
            t0 = time.monotonic()
            victim = nodes[0]
            before: dict[Any, np.ndarray] = {}
            killed_at = None
            report = ""
            while not stop.wait(2.0):
                # the duration, then on until the killed node's keys are shown back (2 min)
                waiting = killed_at is not None and not report and bool(before)
                if time.monotonic() - t0 >= duration and not (
                        waiting and time.monotonic() - (killed_at or 0.0) < 120):
                    break
                now = time.monotonic() - t0
                if killed_at is None and now >= duration / 2:
                    keys = [k for k in cluster.keys("sensors")
                            if cluster.owner("sensors", k) == victim.address]
                    batch = cluster.windows("sensors", keys)
                    W = batch.values.shape[1]
                    before = {k: batch.values[i, W - batch.lengths[i]:].copy()
                              for i, k in enumerate(keys)}
                    victim.kill()
                    killed_at = time.monotonic()
                    console.print(f"[bold]kill -9 {victim.name}[/bold]: it held "
                                  f"{len(before):,} machines")
                elif killed_at is not None and not report and before:
                    try:
                        cluster.refresh()
                        keys = list(before)
                        batch = cluster.windows("sensors", keys)
                    except HeimdallError:
                        continue
                    W = batch.values.shape[1]
                    ok = sum(_continues(before[k], batch.values[i, W - batch.lengths[i]:])
                             for i, k in enumerate(keys))
                    if ok == len(keys):
                        report = (f"{victim.name}'s {len(keys):,} machines are back on "
                                  f"{sorted({cluster.owner('sensors', k) for k in keys})} "
                                  f"after {time.monotonic() - killed_at:.1f} s: every window "
                                  f"continues the one read before the kill")
                        console.print(f"[green]{report}[/green]")
                console.print(_table(cluster, nodes, f"{now:.0f} s"))
            producer.stop()
            client.close()
            cluster.close()
            console.print(f"[bold]summary[/bold]: sent {producer.sent:,} events; "
                          + (report or "the killed node's keys were not all shown back yet"))
        finally:
            for n in nodes:
                n.stop()
            broker.stop()
            if args.data_dir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0
