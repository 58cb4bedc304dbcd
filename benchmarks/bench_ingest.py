"""Ingest from Pulsar: Heimdall's pipeline against a bare client loop, on the same broker.

    .venv/bin/python benchmarks/bench_ingest.py [--events 500000] [--keys 10000] [--url URL]
                                                [--only drain|steady]

1. Puts ``--events`` JSON events (``--keys`` keys, 4 fields) on a topic, then drains the
   backlog twice on separate subscriptions: a bare loop (receive + batch_receive, decode with
   the same msgspec decoder, acknowledge cumulatively) and the Heimdall pipeline (one worker,
   failover subscription, as on the embedded broker). Prints events/s and the ratio.
2. Steady load: ``--rate`` events/s for ``--seconds``, published from another process;
   publish-to-receive of a bare consumer (``receive()`` one message at a time) against
   Heimdall's publish-to-window, p50/p99 over the run after its first tenth.
3. The decoders on the same payloads: msgspec (typed struct) against orjson (dict).

The broker is the embedded pulsar-lite unless ``--url`` names another.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import operator
import tempfile
import threading
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pulsar
from rich.console import Console
from rich.table import Table

from heimdall.config import SourceConfig, build_config
from heimdall.metrics import Histogram
from heimdall.pipeline import Pipeline
from heimdall.sources._embedded import EmbeddedPulsar

FIELDS = ["f0", "f1", "f2", "f3"]


def client(url: str) -> pulsar.Client:
    return pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))


def payloads(n: int, keys: int, t0: int | None = None) -> list[tuple[bytes, str]]:
    """Event i has ``ts = t0 + i`` (ms): a unique stamp the bare loop counts distinct events by."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, keys, n).tolist()
    vals = rng.normal(size=(n, 4)).tolist()
    enc = msgspec.json.Encoder().encode
    if t0 is None:
        t0 = time.time_ns() // 1_000_000
    return [(enc({"id": f"k{k}", "ts": t0 + i, "f0": v[0], "f1": v[1], "f2": v[2], "f3": v[3]}),
             f"k{k}") for i, (k, v) in enumerate(zip(ids, vals, strict=True))]


def produce(url: str, topic: str, items: list[tuple[bytes, str]]) -> float:
    c = client(url)
    p = c.create_producer(topic, block_if_queue_full=True, batching_enabled=True,
                          batching_max_messages=1000, batching_max_publish_delay_ms=5)
    t = time.perf_counter()
    for data, key in items:
        p.send_async(data, None, partition_key=key)
    p.flush()
    dt = time.perf_counter() - t
    c.close()
    return len(items) / dt


Record = msgspec.defstruct("Record", [("id", str), ("ts", int)] + [(f, float) for f in FIELDS])


def bare_drain(url: str, topic: str, n: int, t0: int) -> tuple[float, int]:
    """The ceiling: batch_receive + decode (msgspec, to arrays) + cumulative acknowledge,
    until all ``n`` distinct events are in (pulsar-lite dispatches some twice; the bare loop
    tells them apart by the events' unique ``ts``, which costs it one vectorised step).
    Events/s, and how many duplicates it received."""
    c = client(url)
    # the pipeline's receiver queue (a smaller one draws more duplicates from pulsar-lite)
    queue = SourceConfig().receiver_queue_size
    cons = c.subscribe(topic, f"bare-{uuid.uuid4().hex[:6]}",
                       consumer_type=pulsar.ConsumerType.Failover, receiver_queue_size=queue,
                       initial_position=pulsar.InitialPosition.Earliest,
                       batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(10_000, 64 << 20,
                                                                              1))
    raw = cons._consumer
    dec = msgspec.json.Decoder(Record).decode
    getter = operator.attrgetter(*FIELDS)
    ts_of = operator.attrgetter("ts")
    got = np.zeros(n, bool)
    seen = received = 0
    t = time.perf_counter()
    while seen < n:
        try:
            first = raw.receive(10_000)
        except pulsar.Timeout:
            raise SystemExit(f"bare loop: stalled at {seen:,} of {n:,} events") from None
        msgs = [first, *raw.batch_receive()]
        recs = list(map(dec, [m.data() for m in msgs]))
        np.fromiter(itertools.chain.from_iterable(map(getter, recs)), np.float64,
                    4 * len(recs))
        got[np.fromiter(map(ts_of, recs), np.int64, len(recs)) - t0] = True
        raw.acknowledge_cumulative(msgs[-1])
        received += len(msgs)
        seen = int(np.count_nonzero(got))
    dt = time.perf_counter() - t
    c.close()
    return n / dt, received - n


def heimdall_cfg(url: str, topic: str, keys: int, data_dir: str, workers: int = 1,
                 checkpoint: dict[str, object] | None = None) -> Pipeline:
    """The benchmarks' pipeline; ``checkpoint``: a ``[checkpoint]`` section (None: off)."""
    data: dict[str, object] = {
        "source": {"url": url, "subscription": f"heimdall-{uuid.uuid4().hex[:6]}",
                   "subscription_type": "failover", "workers": workers, "data_dir": data_dir},
        "store": {"max_keys": keys},
        "server": {"metrics": ""},
        "streams": [{"name": "s", "topic": topic, "key": "id", "time": "ts", "fields": FIELDS,
                     "dtype": "float64", "window": {"count": 64}}],
    }
    if checkpoint is not None:
        data["checkpoint"] = checkpoint
    return Pipeline(build_config(data))


def heimdall_drain(url: str, topic: str, n: int, keys: int, data_dir: str,
                   checkpoint: dict[str, object] | None = None) -> tuple[float, int]:
    """Events/s, and how many duplicate deliveries the pipeline dropped on the way."""
    pipe = heimdall_cfg(url, topic, keys, data_dir, checkpoint=checkpoint)
    c = pipe.counters["s"]
    with pipe:  # timed from subscribed, as the bare loop is
        t = time.perf_counter()
        last, idle = -1, time.perf_counter()
        while c.messages < n:
            time.sleep(0.002)
            if c.messages != last:
                last, idle = c.messages, time.perf_counter()
            elif time.perf_counter() - idle > 10:
                raise SystemExit(f"heimdall: stalled at {last:,} of {n:,} events "
                                 f"({c.duplicates:,} duplicates dropped)")
        dt = time.perf_counter() - t
    return n / dt, c.duplicates


def publish_steady(url: str, topic: str, rate: float, seconds: float, keys: int) -> None:
    """Publish ``rate`` events/s for ``seconds``, from another process (as producers are:
    in this one, the publisher's Python would take GIL time from the consumer measured)."""
    p = mp.get_context("spawn").Process(target=_publish_steady,
                                        args=(url, topic, rate, seconds, keys))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"the publisher process failed (exit code {p.exitcode})")


def _publish_steady(url: str, topic: str, rate: float, seconds: float, keys: int) -> None:
    """In 5 ms ticks, then flush."""
    c = client(url)
    p = c.create_producer(topic, block_if_queue_full=True, batching_enabled=True,
                          batching_max_publish_delay_ms=1)
    items = payloads(int(rate * seconds), keys)
    t0 = time.perf_counter()
    per = max(1, int(rate * 0.005))
    for i in range(0, len(items), per):
        for data, key in items[i:i + per]:
            p.send_async(data, None, partition_key=key)
        delay = t0 + (i + per) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    p.flush()
    p.close()
    c.close()


def steady(url: str, rate: float, seconds: float, keys: int, data_dir: str,
           mode: str) -> tuple[float, float, int]:
    """p50, p99 (ms) of publish-to-receive (bare) or publish-to-window (heimdall)."""
    topic = f"persistent://public/default/steady-{uuid.uuid4().hex[:8]}"
    c = client(url)
    lat: list[float] = []
    stop = threading.Event()
    pipe = None
    if mode == "bare":
        cons = c.subscribe(topic, "bare", consumer_type=pulsar.ConsumerType.Failover)
        raw = cons._consumer

        def consume() -> None:
            while not stop.is_set():
                try:
                    m = raw.receive(100)
                except pulsar.Timeout:
                    continue
                lat.append(time.time_ns() / 1e6 - m.publish_timestamp())
                raw.acknowledge(m)

        th = threading.Thread(target=consume)
        th.start()
    else:
        pipe = heimdall_cfg(url, topic, keys, data_dir)
        # hold every sample (the live view keeps the last 8,192), to read the same span
        pipe.counters["s"].latency_s = Histogram(recent=4 * int(rate * seconds))
        pipe.start()
    publish_steady(url, topic, rate, seconds, keys)
    time.sleep(0.5)
    if mode == "bare":
        stop.set()
        th.join()
    else:
        assert pipe is not None
        pipe.stop()
        lat = (pipe.counters["s"].latency_s.recent() * 1e3).tolist()
    c.close()
    return skip_warmup(lat)


def skip_warmup(lat_ms: list[float]) -> tuple[float, float, int]:
    """p50, p99 (ms) and count of latency samples, the first tenth (the warm-up) left out:
    both sides of a comparison are read over the same span."""
    arr = np.array(lat_ms[len(lat_ms) // 10:])
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(arr)


def decoders(items: list[tuple[bytes, str]]) -> tuple[float, float]:
    data = [d for d, _ in items[:100_000]]
    dec = msgspec.json.Decoder(Record).decode
    getter = operator.attrgetter(*FIELDS)
    best_m = best_o = 1e9
    for _ in range(3):
        t = time.perf_counter()
        recs = list(map(dec, data))
        np.fromiter(itertools.chain.from_iterable(map(getter, recs)), np.float64, 4 * len(data))
        best_m = min(best_m, time.perf_counter() - t)
        t = time.perf_counter()
        dicts = list(map(orjson.loads, data))
        np.array([[d[f] for f in FIELDS] for d in dicts], np.float64)
        best_o = min(best_o, time.perf_counter() - t)
    return len(data) / best_m, len(data) / best_o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--url", default=None, help="a Pulsar URL (default: embedded pulsar-lite)")
    ap.add_argument("--only", choices=("drain", "steady"), default=None,
                    help="run one part (and skip the decoders)")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        broker = None
        url = args.url
        if url is None:
            broker = EmbeddedPulsar(Path(tmp) / "broker").start()
            url = broker.url
        try:
            if args.only != "steady":
                drain_part(console, url, args.events, args.keys, tmp)
            if args.only != "drain":
                steady_part(console, url, args.rate, args.seconds, args.keys, tmp)
            if args.only is None:
                m, o = decoders(payloads(100_000, args.keys))
                dt = Table(title="JSON decode to a (n, 4) array, 100,000 payloads")
                for col in ("decoder", "events/s", "ratio"):
                    dt.add_column(col)
                dt.add_row("msgspec, typed struct (used)", f"{m:,.0f}", f"{m / o:.2f}x")
                dt.add_row("orjson, dict + lookups", f"{o:,.0f}", "1.00x")
                console.print(dt)
        finally:
            if broker is not None:
                broker.stop()


def drain_part(console: Console, url: str, events: int, keys: int, tmp: str) -> None:
    """A backlog drained by the bare loop, Heimdall, and the bare loop again."""
    topic = f"persistent://public/default/bench-{uuid.uuid4().hex[:8]}"
    console.print(f"broker {url}; encoding {events:,} events ...")
    t0 = time.time_ns() // 1_000_000
    rate_in = produce(url, topic, payloads(events, keys, t0))
    console.print(f"published {events:,} at {rate_in:,.0f} msg/s; draining ...")
    bare, bdups = bare_drain(url, topic, events, t0)
    hd_rate, dups = heimdall_drain(url, topic, events, keys, tmp)
    bare2, bdups2 = bare_drain(url, topic, events, t0)
    t = Table(title=f"backlog of {events:,} JSON events, {keys:,} keys")
    for col in ("run", "events/s", "vs bare (mean of both)"):
        t.add_column(col)
    ceiling = (bare + bare2) / 2
    t.add_row(f"bare loop, before ({bdups:,} duplicates received)", f"{bare:,.0f}",
              f"{bare / ceiling:.2f}x")
    t.add_row(f"heimdall pipeline ({dups:,} duplicates dropped)", f"{hd_rate:,.0f}",
              f"{hd_rate / ceiling:.2f}x")
    t.add_row(f"bare loop, after ({bdups2:,} duplicates received)", f"{bare2:,.0f}",
              f"{bare2 / ceiling:.2f}x")
    console.print(t)


def steady_part(console: Console, url: str, rate: float, seconds: float, keys: int,
                tmp: str) -> None:
    """Publish-to-receive of a bare consumer against Heimdall's publish-to-window."""
    console.print(f"steady {rate:,.0f} events/s for {seconds} s, twice ...")
    b50, b99, bn = steady(url, rate, seconds, keys, tmp, "bare")
    h50, h99, hn = steady(url, rate, seconds, keys, tmp, "heimdall")
    lt = Table(title="latency at a steady rate (ms)")
    for col in ("", "p50", "p99", "samples"):
        lt.add_column(col)
    lt.add_row("bare consumer: publish -> receive", f"{b50:.2f}", f"{b99:.2f}", f"{bn:,}")
    lt.add_row("heimdall: publish -> window", f"{h50:.2f}", f"{h99:.2f}", f"{hn:,}")
    lt.add_row("heimdall adds", f"{h50 - b50:+.2f}", f"{h99 - b99:+.2f}", "")
    console.print(lt)


if __name__ == "__main__":
    main()
