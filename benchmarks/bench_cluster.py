"""A cluster of `heimdall serve` processes on a real Apache Pulsar standalone broker (started
here, as the tests start it: `tests/real_pulsar`, jars fetched once by Maven).

    .venv/bin/python benchmarks/bench_cluster.py [--events 200000] [--keys 10000] [--rows 256]

1. Ingest: a backlog of ``--events`` events over ``--keys`` keys, drained by N = 1, 2, 3 nodes
   on one Key_Shared subscription: events/s (aggregate and per node) and CPU-seconds per event
   (user + system time of the node processes), beside a bare `pulsar-client` receive loop in
   one process (the ceiling for one consumer) in the same run. This host has 2 cores: three
   nodes and the broker share them, so the aggregate rate cannot scale; the CPU per event says
   whether the total cost stays flat.
2. Failover: ``--keys`` keys x ``--rows`` rows in 3 nodes; one is killed with kill -9; seconds
   until every window read through the cluster client is exact again (the survivors replay
   the topic for the ranges they take over).
3. Routed single-key reads (`hd.connect([...]).window`) p50/p99 beside a direct read from the
   owning node (`hd.connect(owner).window`), and a fan-out read of 512 keys over 3 nodes
   beside the same read from one node holding every key.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pulsar
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import heimdall as hd  # noqa: E402
from heimdall.cluster.local import NodeProcess, keep_history  # noqa: E402
from heimdall.cluster.standalone import PulsarStandalone  # noqa: E402

F = 4


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12)) / ticks


STREAMS = """
[[streams]]
name = "s"
topic = "{topic}"
key = "id"
fields = {fields}
window = {{ count = {rows} }}
"""


def make_node(name: str, broker: PulsarStandalone, topic: str, sub: str, rows: int,
              keys: int, tmp: Path) -> NodeProcess:
    streams = STREAMS.format(topic=topic, fields=json.dumps([f"f{i}" for i in range(F)]),
                             rows=rows)
    return NodeProcess(name, broker.url, broker.admin_url, streams, tmp, max_keys=keys + 16,
                       refresh_s=1.0, subscription=sub)


def make_events(n: int, keys: int, rows: int, seed: int = 0
                ) -> tuple[list[tuple[bytes, str]], dict[str, np.ndarray]]:
    """``n`` events over ``keys`` keys as (payload, key), and each key's last ``rows`` values
    (the oracle of its count window)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, keys, n).tolist()
    vals = rng.normal(size=(n, F)).round(3).tolist()
    items = []
    want: dict[str, list[list[float]]] = {}
    for i, k in enumerate(ids):
        key = f"k{k}"
        body = {"id": key, **{f"f{j}": v for j, v in enumerate(vals[i])}}
        items.append((json.dumps(body).encode(), key))
        want.setdefault(key, []).append(vals[i])
    return items, {k: np.array(v[-rows:]) for k, v in want.items()}


def send(url: str, topic: str, items: list[tuple[bytes, str]]) -> None:
    c = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    p = c.create_producer(topic, block_if_queue_full=True, batching_enabled=True,
                          batching_type=pulsar.BatchingType.KeyBased,
                          batching_max_publish_delay_ms=5, batching_max_messages=1000)
    for data, key in items:
        p.send_async(data, None, partition_key=key)
    p.flush()
    c.close()


def exact(cluster: hd.ClusterStore, want: dict[str, np.ndarray], chunk: int = 500) -> bool:
    """Every key's window read through the cluster equals the oracle (read ``chunk`` keys a
    call: a reply is bounded by the server's ``max_message_bytes``)."""
    keys = sorted(want)
    for at in range(0, len(keys), chunk):
        part = keys[at:at + chunk]
        try:
            got = cluster.windows("s", part)
        except hd.HeimdallError:
            return False
        W = got.values.shape[1]
        if not all(np.array_equal(got.values[i, W - got.lengths[i]:], want[k])
                   for i, k in enumerate(part)):
            return False
    return True


def bare_loop(url: str, topic: str, items: list[tuple[bytes, str]]) -> tuple[float, float]:
    """A bare pulsar-client receive loop taking ``items`` as they are published:
    (events/s, CPU-s/event of the loop's thread)."""
    c = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    cons = c.subscribe(topic, f"bare-{uuid.uuid4().hex[:6]}", receiver_queue_size=25_000,
                       batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(10_000, 64 << 20,
                                                                              1))
    n = len(items)
    got = 0
    cpu = 0.0
    t0 = time.perf_counter()
    sender = threading.Thread(target=send, args=(url, topic, items))
    sender.start()
    while got < n:
        c0 = time.thread_time()
        msgs = cons.batch_receive()
        for m in msgs:
            m.data()
        if msgs:
            cons.acknowledge_cumulative(msgs[-1])
        got += len(msgs)
        cpu += time.thread_time() - c0
    dt = time.perf_counter() - t0
    sender.join()
    c.close()
    return n / dt, cpu / n


def drain_with(nodes: list[NodeProcess], url: str, topic: str, items: list[tuple[bytes, str]],
               want: dict[str, np.ndarray]) -> tuple[float, float]:
    """The nodes up and settled on the subscription, then ``items`` published: (events/s,
    CPU-s/event of the node processes) until every window is exact."""
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_serving()
    time.sleep(2.0)  # the broker's ranges settle (a node joining moves some)
    pids = [node.pid for node in nodes]
    t0, cpu0 = time.perf_counter(), sum(map(_cpu_s, pids))
    sender = threading.Thread(target=send, args=(url, topic, items))
    sender.start()
    with hd.connect([nd.address for nd in nodes], timeout_s=10) as cluster:
        # the rows counter first (cheap), then the windows themselves: reading every window
        # often would be the nodes' largest cost
        while sum(s["ingest"]["s"]["messages"] + s["ingest"]["s"]["duplicates"]
                  for s in cluster.server_stats().values()) < len(items):
            time.sleep(0.1)
        t1, cpu1 = time.perf_counter(), sum(map(_cpu_s, pids))
        while not exact(cluster, want):
            time.sleep(0.5)
    sender.join()
    return len(items) / (t1 - t0), (cpu1 - cpu0) / len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--reads", type=int, default=2_000)
    ap.add_argument("--no-ingest", action="store_true",
                    help="skip part 1 (the failover and the reads only)")
    args = ap.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    console.print("starting Apache Pulsar standalone ...")
    broker = PulsarStandalone(tmp / "pulsar").start()
    try:
        keep_history(broker.admin_url)
        if not args.no_ingest:
            ingest_figures(args, broker, console, tmp)
        failover_and_reads(args, broker, console, tmp)
    finally:
        broker.stop()


def ingest_figures(args: argparse.Namespace, broker: PulsarStandalone, console: Console,
                   tmp: Path) -> None:
    ingest = Table(title=f"1. ingest of a {args.events:,}-event backlog over "
                         f"{args.keys:,} keys")
    for col in ("consumers", "events/s", "per node", "CPU-us/event", "vs N=1"):
        ingest.add_column(col, justify="right")
    items, want0 = make_events(args.events, args.keys, args.rows)
    topic = f"persistent://public/default/bench-{uuid.uuid4().hex[:8]}"
    rate, cpu = bare_loop(broker.url, topic, items)
    ingest.add_row("bare pulsar-client loop", f"{rate:,.0f}", "", f"{cpu * 1e6:.1f}", "")
    base = None
    for n_nodes in (1, 2, 3):
        topic = f"persistent://public/default/bench-{uuid.uuid4().hex[:8]}"
        nodes = [make_node(f"node{i}", broker, topic, "ingest", args.rows, args.keys, tmp)
                 for i in range(n_nodes)]
        try:
            rate, cpu = drain_with(nodes, broker.url, topic, items, want0)
        finally:
            for nd in nodes:
                nd.stop()
        base = base or cpu
        ingest.add_row(f"Heimdall x{n_nodes}", f"{rate:,.0f}", f"{rate / n_nodes:,.0f}",
                       f"{cpu * 1e6:.1f}", f"{cpu / base:.2f}x")
    console.print(ingest)


def failover_and_reads(args: argparse.Namespace, broker: PulsarStandalone, console: Console,
                       tmp: Path) -> None:
    # 2. failover, and 3. reads, on one cluster over keys x rows
    topic = f"persistent://public/default/fail-{uuid.uuid4().hex[:8]}"
    total = args.keys * args.rows
    items, want = make_events(total, args.keys, args.rows, seed=1)
    nodes = [make_node(f"f{i}", broker, topic, "fail", args.rows, args.keys, tmp)
             for i in range(3)]
    try:
        # the nodes up first, then the events: each node takes its keys as they come (a node
        # started on a long history would replay all of it first)
        for nd in nodes:
            nd.start()
        time.sleep(2.0)  # the broker's ranges settle
        console.print(f"publishing {total:,} events ({args.keys:,} keys x {args.rows}) ...")
        t0 = time.perf_counter()
        send(broker.url, topic, items)
        addresses = [nd.address for nd in nodes]
        with hd.connect(addresses, timeout_s=10) as cluster:
            while not exact(cluster, want):
                time.sleep(2.0)
            console.print(f"  every window exact {time.perf_counter() - t0:.0f} s after the "
                          "first event was sent")
            keys = sorted(want)
            reads = Table(title="3. reads")
            for col in ("read", "p50 us", "p99 us", "vs direct"):
                reads.add_column(col, justify="right")
            sample = keys[: args.reads]
            routed, direct = [], []
            owners = {a: hd.connect(a) for a in addresses}
            for i, k in enumerate(sample):
                owner = owners[cluster.owner("s", k)]
                # each key read both ways, in turn first: the second read of a key finds
                # its rows in the node's cache, which would favour whichever goes second
                for way in ((cluster, routed), (owner, direct))[:: 1 if i % 2 else -1]:
                    reader, into = way
                    t0 = time.perf_counter()
                    reader.window("s", k)
                    into.append(time.perf_counter() - t0)

            def pct(xs: list[float], q: float) -> float:
                return float(np.percentile(xs, q)) * 1e6

            reads.add_row("single key, direct to its node", f"{pct(direct, 50):.0f}",
                          f"{pct(direct, 99):.0f}", "")
            reads.add_row("single key, routed (hd.connect([...]))",
                          f"{pct(routed, 50):.0f}", f"{pct(routed, 99):.0f}",
                          f"{pct(routed, 50) / pct(direct, 50):.2f}x")
            fan = []
            for _ in range(50):
                t0 = time.perf_counter()
                cluster.windows("s", keys[:512])
                fan.append(time.perf_counter() - t0)
            for o in owners.values():
                o.close()

            # failover
            victim = nodes[0]
            t_kill = time.perf_counter()
            victim.kill()
            # each check reads every window (keys x rows x 4 float64): not too often, it
            # would take the replaying nodes' CPU
            while not exact(cluster, want):
                time.sleep(1.0)
            failover_s = time.perf_counter() - t_kill
            for nd in nodes[1:]:
                for line in nd.log.read_text().splitlines():
                    if "replayed into" in line:
                        console.print(f"  {line}")
    finally:
        for nd in nodes:
            nd.stop()
    # one node holding every key, for the fan-out baseline
    single = make_node("solo", broker, topic, "solo", args.rows, args.keys, tmp)
    try:
        single.start()
        with hd.connect([single.address]) as solo:
            while not exact(solo, want):
                time.sleep(0.2)
            one = []
            for _ in range(50):
                t0 = time.perf_counter()
                solo.windows("s", keys[:512])
                one.append(time.perf_counter() - t0)
    finally:
        single.stop()
    reads.add_row("512 keys, fanned out over 3 nodes", f"{pct(fan, 50):.0f}",
                  f"{pct(fan, 99):.0f}",
                  f"{statistics.median(fan) / statistics.median(one):.2f}x one node")
    reads.add_row("512 keys, one node holding all", f"{pct(one, 50):.0f}",
                  f"{pct(one, 99):.0f}", "")
    console.print(reads)
    console.print(f"2. failover: kill -9 of one of 3 nodes holding {args.keys:,} keys x "
                  f"{args.rows} rows: every window exact again after {failover_s:.1f} s")


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # a dying node's calls in flight: not the figure
    main()
