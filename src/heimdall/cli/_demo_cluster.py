"""``heimdall demo --nodes N``: a cluster of N ``heimdall serve`` processes on a real Apache
Pulsar standalone broker (fetched once with Maven, as the tests do), the synthetic producer,
a live view of every node; midway one node is killed with kill -9, and its keys come back on
the others, each window continuing the one read before the kill."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from heimdall._signals import stop_on_signals
from heimdall.cli._synthetic import SyntheticProducer
from heimdall.cluster.client import ClusterStore
from heimdall.cluster.standalone import PulsarStandalone, lib_dir
from heimdall.errors import HeimdallError, SourceError

TOPIC = "persistent://public/default/sensors"
FIELDS = ("temp", "vibration", "rpm")


class _Node:
    def __init__(self, name: str, broker: PulsarStandalone, window: int, machines: int,
                 workdir: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{s.getsockname()[1]}"
        self.name = name
        self.config = workdir / f"{name}.toml"
        self.config.write_text(f"""
[source]
url = "{broker.url}"
workers = 1
data_dir = "{workdir / name}"
[store]
max_keys = {machines}
[server]
metrics = ""
grpc = "{self.address}"
[cluster]
node = "{name}"
admin_url = "{broker.admin_url}"
refresh_s = 0.5
[[streams]]
name = "sensors"
topic = "{TOPIC}"
key = "machine_id"
time = "ts"
fields = {json.dumps(list(FIELDS))}
dtype = "float32"
window = {{ count = {window} }}
""")
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "heimdall.cli", "serve", "-c", str(self.config)],
                stdout=log, stderr=log, start_new_session=True)  # out of the terminal's reach
        deadline = time.monotonic() + timeout_s
        while b"serving;" not in self.log.read_bytes().split(b"starting:")[-1]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SourceError(f"node {self.name} did not start; see {self.log}")
            time.sleep(0.1)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive and self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.alive and self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _keep_history(broker: PulsarStandalone) -> None:
    req = urllib.request.Request(
        f"{broker.admin_url}/admin/v2/namespaces/public/default/retention",
        data=b'{"retentionTimeInMinutes": -1, "retentionSizeInMB": -1}',
        headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).close()


def _table(cluster: ClusterStore, nodes: list[_Node], note: str) -> Table:
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
        nodes: list[_Node] = []
        try:
            with console.status(f"starting Apache Pulsar standalone (jars in {jars}; the "
                                f"first run fetches ~235 MB from Maven Central) ..."):
                broker.start()
            _keep_history(broker)
            console.print(f"broker {broker.url} (admin {broker.admin_url}); the topic keeps "
                          f"its history: the cluster's durable state")
            nodes = [_Node(f"n{i}", broker, args.window, args.machines, workdir)
                     for i in range(nodes_n)]
            for n in nodes:
                with console.status(f"starting node {n.name} ..."):
                    n.start()
            import pulsar

            client = pulsar.Client(broker.url,
                                   logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
            producer = SyntheticProducer(client, TOPIC, args.machines, args.rate,
                                         seed=args.seed, key_based=True).start()
            cluster = ClusterStore([n.address for n in nodes])
            console.print(f"{nodes_n} nodes on one Key_Shared subscription; producing "
                          f"~{args.rate:,.0f} events/s from {args.machines:,} machines; "
                          f"{nodes[0].name} is killed at {duration / 2:.0f} s; Ctrl-C stops")
            t0 = time.monotonic()
            victim = nodes[0]
            before: dict[Any, np.ndarray] = {}
            killed_at = None
            report = ""
            while not stop.wait(2.0) and time.monotonic() - t0 < duration:
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
