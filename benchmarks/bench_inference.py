"""The model runner: scoring rate against the model called directly, and event-to-prediction
latency on the embedded broker.

    .venv/bin/python benchmarks/bench_inference.py [--keys 10000] [--rate 20000] [--seconds 8]

1. A store of ``--keys`` keys with full windows of 256 x 4 float32. The trivial model (mean
   of each window) scores every key: through the runner (every key due, ``run_once`` until
   none is left: take, ``windows()`` gather, call, check, predictions) against the same model
   called on batches gathered beforehand (the ceiling). Batches of 512.
2. The cost of ``store.windows()`` for 512 keys of 256 x 4.
3. A steady ``--rate`` events/s, published from another process, through the embedded broker
   into a pipeline with the model at ``every=1``: event (publish) to prediction p50/p99 over
   the run after its first tenth, beside the publish-to-receive of a bare consumer in the same
   run (``bench_ingest.steady``).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import heimdall as hd
from bench_ingest import heimdall_cfg, publish_steady, skip_warmup, steady
from heimdall.metrics import Histogram
from heimdall.models import ModelRunner, ModelSpec, Predictions
from heimdall.sources._embedded import EmbeddedPulsar

W, F, B = 256, 4, 512


def mean_model(batch: hd.WindowBatch) -> np.ndarray:
    """The trivial model: the mean of each window (full windows here)."""
    return batch.values.mean(axis=(1, 2))


def full_store(keys: int) -> tuple[hd.WindowStore, list[str]]:
    spec = hd.StreamSpec("s", key="id", fields=[f"f{i}" for i in range(F)], dtype="float32",
                         window=hd.CountWindow(W))
    store = hd.WindowStore([spec], max_keys=keys)
    names = [f"k{i}" for i in range(keys)]
    rng = np.random.default_rng(0)
    for t in range(W):
        store.append_batch("s", names, rng.normal(size=(keys, F)).astype(np.float32),
                           np.full(keys, t + 1, dtype=np.int64))
    return store, names


def runner_rate(store: hd.WindowStore, names: list[str]) -> float:
    runner = ModelRunner(ModelSpec("mean", "s", mean_model, max_batch=B), store, Predictions())
    runner.notify(names, [None] * len(names), [time.time() * 1e3] * len(names))
    t = time.perf_counter()
    while runner.run_once():
        pass
    dt = time.perf_counter() - t
    if runner.stats.scored != len(names):
        raise SystemExit(f"runner scored {runner.stats.scored} of {len(names)}")
    return len(names) / dt


def direct_rate(store: hd.WindowStore, names: list[str]) -> float:
    batches = [store.windows("s", names[i:i + B]) for i in range(0, len(names), B)]
    t = time.perf_counter()
    for b in batches:
        mean_model(b)
    return len(names) / (time.perf_counter() - t)


def windows_cost(store: hd.WindowStore, names: list[str], reps: int = 50) -> tuple[float, float]:
    """Median seconds of ``windows()`` for 512 keys, and of a plain numpy copy of as many bytes
    (the floor: the gather must copy them)."""
    keys = names[:B]
    src = np.ones((B, W, F), np.float32)
    ts = []
    floor = []
    for _ in range(reps):
        t = time.perf_counter()
        store.windows("s", keys)
        ts.append(time.perf_counter() - t)
        t = time.perf_counter()
        src.copy()
        floor.append(time.perf_counter() - t)
    return float(np.median(ts)), float(np.median(floor))


def latency(url: str, rate: float, seconds: float, data_dir: str) -> tuple[float, float, int]:
    """Event-to-prediction p50/p99 (ms) with ``every=1`` at a steady rate."""
    topic = f"persistent://public/default/infer-{uuid.uuid4().hex[:8]}"
    pipe = heimdall_cfg(url, topic, 10_000, data_dir)
    runner = pipe.add_model(mean_model, "s", every=1, max_batch=B, name="mean")
    # hold every sample (the live view keeps the last 8,192), to read the same span as the
    # bare consumer's
    runner.stats.latency_s = Histogram(recent=4 * int(rate * seconds))
    pipe.start()
    try:
        publish_steady(url, topic, rate, seconds, 10_000)
        done = threading.Event()
        deadline = time.monotonic() + 10
        while runner.tracker.pending and time.monotonic() < deadline:
            done.wait(0.05)
        return skip_warmup((runner.stats.latency_s.recent() * 1e3).tolist())
    finally:
        pipe.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    console = Console()
    console.print(f"filling {args.keys:,} windows of {W} x {F} ...")
    store, names = full_store(args.keys)
    runner_rate(store, names[:B])  # warm the kernels
    r = [runner_rate(store, names) for _ in range(3)]
    d = [direct_rate(store, names) for _ in range(3)]
    t = Table(title=f"scoring {args.keys:,} full windows, batches of {B}, trivial model")
    for col in ("", "windows/s (best of 3)", "ratio"):
        t.add_column(col)
    t.add_row("model on pre-gathered batches (ceiling)", f"{max(d):,.0f}", "1.00x")
    t.add_row("runner: take, windows(), model, predictions", f"{max(r):,.0f}",
              f"{max(r) / max(d):.2f}x")
    console.print(t)
    wc, floor = windows_cost(store, names)
    console.print(f"store.windows() for {B} keys of {W} x {F} float32: {wc * 1e3:.3f} ms "
                  f"(a numpy copy of the same {B * W * F * 4 / 2**20:.1f} MiB: "
                  f"{floor * 1e3:.3f} ms, {wc / floor:.2f}x)")

    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedPulsar(Path(tmp) / "broker").start()
        try:
            console.print(f"steady {args.rate:,.0f} events/s for {args.seconds} s, twice ...")
            b50, b99, bn = steady(broker.url, args.rate, args.seconds, 10_000, tmp, "bare")
            h50, h99, hn = latency(broker.url, args.rate, args.seconds, tmp)
        finally:
            broker.stop()
    lt = Table(title="latency at a steady rate, every=1 (ms)")
    for col in ("", "p50", "p99", "samples"):
        lt.add_column(col)
    lt.add_row("bare consumer: publish -> receive", f"{b50:.2f}", f"{b99:.2f}", f"{bn:,}")
    lt.add_row("heimdall: publish -> prediction", f"{h50:.2f}", f"{h99:.2f}", f"{hn:,}")
    console.print(lt)


if __name__ == "__main__":
    main()
