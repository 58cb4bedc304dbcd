"""``heimdall demo``: the main job on embedded defaults, watched live.

An embedded Pulsar broker, a synthetic producer (1,000 machines, 3 sensors each, ~20,000
events/s, a few machines drifting into anomalies, a few malformed messages on purpose), the
pipeline with an anomaly detector scoring every machine's window as it changes, and a live
terminal view; at the end, the detector's precision and recall against the machines the
producer made drift. ``--in-process`` runs the older broker-less tour of the
store's read API instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from heimdall._signals import stop_on_signals
from heimdall.cli._anomaly import ZScoreDetector
from heimdall.cli._render import memory, positive_float, positive_int, sparkline
from heimdall.cli._synthetic import SyntheticProducer
from heimdall.config import build_config
from heimdall.pipeline import Pipeline
from heimdall.schema import CountWindow, StreamSpec
from heimdall.window import WindowStore

TOPIC = "persistent://public/default/sensors"
FIELDS = ("temp", "vibration", "rpm")
MODEL = "anomaly"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="live demo: embedded broker, synthetic sensors, the pipeline, a live view",
        description="Starts an embedded Pulsar broker, a synthetic producer (machines x 3 "
        "sensors, some drifting, a few malformed messages on purpose) and the pipeline, and "
        "shows events/s, keys, window fill, lag, publish-to-window latency, dead letters and "
        "one machine's window, live. Ctrl-C (or --duration) ends it with a summary.",
    )
    p.add_argument("--duration", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--machines", type=positive_int, default=1_000,
                   help="machines (keys), default 1000")
    p.add_argument("--rate", type=positive_float, default=20_000, help="events/s, default 20000")
    p.add_argument("--window", type=positive_int, default=256, help="rows per window, default 256")
    p.add_argument("--workers", type=positive_int, default=2, help="worker threads, default 2")
    p.add_argument("--data-dir", default=None,
                   help="broker data directory (default: a temporary one, removed after)")
    p.add_argument("--metrics", default="", metavar="HOST:PORT",
                   help="also serve Prometheus metrics there")
    p.add_argument("--seed", type=int, default=7, help="random seed")
    p.add_argument("--model-processes", type=positive_int, default=1, metavar="N",
                   help="run the anomaly detector in N worker processes that read the windows "
                   "from shared memory (default 1: on a thread of this process)")
    p.add_argument("--nodes", type=positive_int, default=1, metavar="N",
                   help="N > 1: a cluster of N `heimdall serve` processes on a real Apache "
                   "Pulsar standalone (needs java 17+ and mvn; ~235 MB fetched once); one is "
                   "killed midway and its keys come back on the others")
    p.add_argument("--in-process", action="store_true",
                   help="no broker: a one-shot tour of the store's read API")
    p.add_argument("--events", type=positive_int, default=500_000,
                   help="with --in-process: events to ingest, default 500000")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.in_process:
        return run_in_process(args, console)
    if args.nodes > 1:
        from heimdall.cli._demo_cluster import run_cluster

        return run_cluster(args, console)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="heimdall-demo-")
    cfg = build_config({
        "source": {"data_dir": data_dir, "workers": args.workers},
        "store": {"max_keys": args.machines,
                  "shared_memory": (f"heimdall-demo-{os.getpid()}"
                                    if args.model_processes > 1 else None)},
        "server": {"metrics": args.metrics},
        "streams": [{
            "name": "sensors", "topic": TOPIC, "format": "json", "key": "machine_id",
            "time": "ts", "fields": list(FIELDS), "dtype": "float32",
            "window": {"count": args.window},
        }],
    }, origin="demo")
    pipe = Pipeline(cfg)
    console.print(f"[bold]Heimdall demo[/bold]: starting the embedded broker in {data_dir} ...")
    t_start = time.monotonic()
    producer = None
    # Ctrl-C (SIGINT to the terminal's foreground group) or SIGTERM ends the live view; the
    # broker and model workers are shielded from it, and everything stops in order below
    with stop_on_signals() as stop:
        try:
            with pipe:
                import pulsar

                client = pulsar.Client(pipe.url,
                                       logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
                try:
                    producer = SyntheticProducer(client, TOPIC, args.machines, args.rate,
                                                 seed=args.seed)
                    detector = ZScoreDetector(FIELDS).fit(producer.normal_sample())
                    pipe.add_model(detector, "sensors", every=1, max_batch=512, min_rows=16,
                                   name=MODEL, processes=args.model_processes)
                    if args.model_processes > 1:
                        console.print(f"anomaly detector in {args.model_processes} worker "
                                      f"processes, reading windows from shared memory "
                                      f"{cfg.store.shared_memory!r}")
                    producer.start()
                    gc.freeze()  # start-up's objects out of the collector's way (as in serve)
                    console.print(
                        f"broker {pipe.url}; producing ~{args.rate:,.0f} events/s from "
                        f"{args.machines:,} machines; Ctrl-C stops"
                        + (f"; metrics on :{pipe.metrics_port}" if pipe.metrics_port else "")
                    )
                    console.print(f"publish your own: heimdall publish {TOPIC} FILE.jsonl "
                                  f"--url {pipe.url} --key machine_id", soft_wrap=True)
                    watch = producer.names[producer.drifting[0]]
                    _live(console, pipe, producer, watch, args.duration, stop)
                    if stop.is_set():
                        console.print("stopping: producer, pipeline, then the broker ...")
                finally:
                    if producer is not None:
                        producer.stop()
                    client.close()
                summary = _summary(pipe, producer, time.monotonic() - t_start)
        finally:
            pipe.close()  # worker processes end; shared memory is unlinked
            if args.data_dir is None:
                shutil.rmtree(data_dir, ignore_errors=True)
    console.print(summary)
    return 0


def _live(console: Console, pipe: Pipeline, producer: SyntheticProducer, watch: str,
          duration: float | None, stop: threading.Event) -> None:
    c = pipe.counters["sensors"]
    end = None if duration is None else time.monotonic() + duration
    last_n, last_t = c.messages, time.monotonic()
    rate = 0.0
    interactive = console.is_terminal
    with Live(console=console, refresh_per_second=4, transient=False,
              auto_refresh=False) if interactive else contextlib.nullcontext() as live:
        while end is None or time.monotonic() < end:
            if stop.wait(0.5 if interactive else 1.0):
                return
            now = time.monotonic()
            rate = (c.messages - last_n) / (now - last_t)
            last_n, last_t = c.messages, now
            view = _view(pipe, producer, watch, rate)
            if live is not None:
                live.update(view, refresh=True)
            else:
                console.print(_line(pipe, rate))


def _fill(pipe: Pipeline, keys: list[str]) -> float:
    store = pipe.store
    W = store.streams["sensors"].window.rows
    lens = [len(store.window("sensors", k)) for k in keys if ("sensors", k) in store]
    return float(np.mean(lens)) / W if lens else 0.0


def _line(pipe: Pipeline, rate: float) -> str:
    s = pipe.stats()["ingest"]["sensors"]
    keys = pipe.store.stats()["streams"]["sensors"]["keys"]
    return (f"events/s {rate:,.0f}  events {s['messages']:,}  keys {keys:,}  "
            f"lag {s['lag_s'] * 1e3:.1f} ms  latency p50 {s['latency_p50_s'] * 1e3:.2f} ms "
            f"p99 {s['latency_p99_s'] * 1e3:.2f} ms  dead letters {s['dead_letters']}  "
            f"duplicates dropped {s['duplicates']}  anomalies {len(_flagged(pipe))}")


def _view(pipe: Pipeline, producer: SyntheticProducer, watch: str, rate: float) -> Group:
    s = pipe.stats()["ingest"]["sensors"]
    st = pipe.store.stats()["streams"]["sensors"]
    t = Table(title="Heimdall: sensors <- Pulsar (embedded)", show_header=False,
              min_width=72)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("events/s", f"{rate:,.0f}")
    t.add_row("events in", f"{s['messages']:,} (sent {producer.sent:,})")
    t.add_row("keys", f"{st['keys']:,} / {st['max_keys']:,}")
    t.add_row("window fill", f"{_fill(pipe, producer.names[:50]) * 100:.0f}% of {st['window']}")
    t.add_row("consumer lag", f"{s['lag_s'] * 1e3:.1f} ms")
    t.add_row("publish->window", f"p50 {s['latency_p50_s'] * 1e3:.2f} ms   "
                                 f"p99 {s['latency_p99_s'] * 1e3:.2f} ms")
    reasons = ", ".join(f"{k} {v}" for k, v in s["dead_letter_reasons"].items())
    t.add_row("dead letters", f"{s['dead_letters']} ({reasons or 'none'}) "
                              f"of {producer.bad_sent} bad sent")
    t.add_row("redeliveries dropped", f"{s['duplicates']:,}")
    t.add_row("memory", memory(st))
    m = pipe.stats()["models"].get(MODEL)
    if m is not None:
        t.add_row("model", f"{MODEL}: {m['scored']:,} scored in batches of "
                           f"{m['mean_batch']:.0f}, {m['skipped']:,} coalesced, "
                           f"{m['failed']} failed")
        t.add_row("event->prediction", f"p50 {m['latency_p50_s'] * 1e3:.2f} ms   "
                                       f"p99 {m['latency_p99_s'] * 1e3:.2f} ms")
        flagged = _flagged(pipe)
        drifting = {producer.names[i] for i in producer.drifting}
        top = sorted(flagged.items(), key=lambda kv: -kv[1])[:5]
        shown = ", ".join(f"{k} z={v:.0f}{'' if k in drifting else ' (false alarm)'}"
                          for k, v in top)
        t.add_row("anomalies now", f"{len(flagged)} of {len(drifting)} drifting: "
                                   f"{shown or 'none yet'}")
    if ("sensors", watch) in pipe.store:
        w = pipe.store.window("sensors", watch)
        t.add_row(f"{watch} temp", f"{sparkline(w['temp'], 32)} {w['temp'][-1]:.1f}")
        t.add_row(f"{watch} vibration", f"{sparkline(w['vibration'], 32)} "
                                        f"{w['vibration'][-1]:.3f}")
    return Group(t)


def _flagged(pipe: Pipeline) -> dict[Any, float]:
    """Machines whose newest score is past the detector's threshold, with the score."""
    runner = pipe.runners.get(MODEL)
    if runner is None:
        return {}
    threshold = getattr(runner.spec.fn, "threshold", 6.0)
    return {k: float(p.score) for k, p in pipe.predictions.snapshot(MODEL).items()
            if isinstance(p.score, float) and p.score > threshold}


def precision_recall(flagged: set[Any], truth: set[Any]) -> tuple[float, float]:
    """Precision and recall of ``flagged`` against ``truth`` (NaN when undefined)."""
    hits = len(flagged & truth)
    precision = hits / len(flagged) if flagged else float("nan")
    recall = hits / len(truth) if truth else float("nan")
    return precision, recall


def _summary(pipe: Pipeline, producer: SyntheticProducer, elapsed: float) -> str:
    s = pipe.stats()["ingest"]["sensors"]
    st = pipe.store.stats()["streams"]["sensors"]
    m = pipe.stats()["models"].get(MODEL, {})
    flagged = set(_flagged(pipe))
    truth = {producer.names[i] for i in producer.drifting}
    precision, recall = precision_recall(flagged, truth)
    model = (f"\n[bold]anomaly detector[/bold]: {m.get('scored', 0):,} windows scored, "
             f"{m.get('skipped', 0):,} coalesced, event->prediction "
             f"p50 {m.get('latency_p50_s', float('nan')) * 1e3:.2f} ms "
             f"p99 {m.get('latency_p99_s', float('nan')) * 1e3:.2f} ms; flagged "
             f"{len(flagged)} machines, {len(truth)} drifting: precision "
             f"{'n/a (none flagged)' if np.isnan(precision) else f'{precision:.2f}'}, "
             f"recall {recall:.2f} (the drift grows over 60 s: a short run catches less)")
    return (f"[bold]summary[/bold] after {elapsed:.1f} s: sent {producer.sent:,} "
            f"({producer.bad_sent} malformed on purpose), windows took {s['rows']:,} events "
            f"into {st['keys']:,} keys, dead letters {s['dead_letters']} "
            f"{dict(s['dead_letter_reasons'])}, redeliveries dropped {s['duplicates']:,}, "
            f"publish->window p50 {s['latency_p50_s'] * 1e3:.2f} ms "
            f"p99 {s['latency_p99_s'] * 1e3:.2f} ms" + model)


def run_in_process(args: argparse.Namespace, console: Console) -> int:
    """The broker-less tour: ingest synthetic events, then reads, a batch and aggregates."""
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
        f"memory {memory(s)}"
    )
    return 0
