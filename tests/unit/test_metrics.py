"""The Prometheus endpoint: every metric the issues name, labelled by stream or model only."""

from __future__ import annotations

import gc
import urllib.request

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import heimdall as hd
from heimdall.metrics import Collector, GcPauses, StreamCounters, serve_metrics
from heimdall.models import ModelRunner, ModelSpec, Predictions


def test_the_endpoint_serves_ingest_store_gc_and_model_metrics() -> None:
    spec = hd.StreamSpec("s", key="id", fields=["a"], window=hd.CountWindow(4))
    store = hd.WindowStore([spec], max_keys=10)
    store.append_batch("s", ["k1", "k2"], np.ones((2, 1)), np.array([1, 2]))
    c = StreamCounters()
    c.messages, c.bytes, c.dead_letters, c.duplicates = 5, 100, 1, 2
    c.latency_s.observe_many(np.array([0.001, 0.002]))
    runner = ModelRunner(ModelSpec("m", "s", lambda b: np.zeros(len(b))), store, Predictions())
    runner.notify(["k1", "k2"], [b"1", b"2"], [0.0, 0.0])
    runner.run_once()
    pauses = GcPauses()
    pauses.install()
    gc.collect()
    pauses.remove()
    server, port = serve_metrics("127.0.0.1:0", Collector(lambda: {"s": c}, store.stats, pauses,
                                                          lambda: {"m": runner}))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        server.shutdown()
        server.server_close()
    lines = text.decode().splitlines()
    want = {
        'heimdall_events_in_total{stream="s"} 5.0', 'heimdall_bytes_in_total{stream="s"} 100.0',
        'heimdall_dead_letters_total{stream="s"} 1.0',
        'heimdall_redeliveries_dropped_total{stream="s"} 2.0', 'heimdall_keys{stream="s"} 2.0',
        'heimdall_evictions_total{stream="s"} 0.0',
        'heimdall_publish_to_window_seconds_count{stream="s"} 2.0',
        'heimdall_model_keys_scored_total{model="m"} 2.0',
        'heimdall_model_batches_total{model="m"} 1.0',
        'heimdall_event_to_prediction_seconds_count{model="m"} 2.0',
    }
    assert want <= set(lines), want - set(lines)
    names = {line.split("{")[0].split(" ")[0] for line in lines if not line.startswith("#")}
    for name in ("heimdall_consumer_lag_seconds", "heimdall_batch_apply_seconds_bucket",
                 "heimdall_gc_pause_seconds_count", "heimdall_model_seconds_bucket",
                 "heimdall_model_skipped_total", "heimdall_model_failures_total"):
        assert name in names
    gc_count = next(x for x in lines if x.startswith("heimdall_gc_pause_seconds_count"))
    assert float(gc_count.split()[-1]) >= 1
    assert not any("k1" in line for line in lines)  # no per-key labels


def test_checkpoint_metrics(tmp_path: object) -> None:
    from pathlib import Path

    from heimdall.checkpoint import Checkpointer
    from heimdall.config import CheckpointConfig

    spec = hd.StreamSpec("s", key="id", fields=["a"], window=hd.CountWindow(4))
    store = hd.WindowStore([spec], max_keys=10)
    store.append_batch("s", ["k1"], np.ones((1, 1)))
    ck = Checkpointer(CheckpointConfig(dir=str(Path(str(tmp_path)) / "c")), store, [])
    ck.checkpoint()
    ck.checkpoint()
    server, port = serve_metrics("127.0.0.1:0", Collector(dict, store.stats, GcPauses(),
                                                          dict, lambda: ck))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        server.shutdown()
        server.server_close()
    lines = set(text.decode().splitlines())
    assert "heimdall_checkpoints_written_total 2.0" in lines
    assert "heimdall_checkpoint_pause_seconds_count 2.0" in lines
    assert "heimdall_checkpoint_pending_messages 0.0" in lines
    size = next(x for x in lines if x.startswith("heimdall_checkpoint_bytes "))
    assert float(size.split()[-1]) > 0


def test_histogram_one_sample_and_many_samples_agree() -> None:
    from heimdall.metrics import BUCKETS_S, Histogram

    rng = np.random.default_rng(1)
    many, one = Histogram(recent=100), Histogram(recent=100)
    seen: list[float] = []
    for n in (1, 5, 99, 100, 150, 3, 250, 7):  # batches past the ring's size, and wrapping
        v = rng.exponential(0.01, size=n)
        v[0] = BUCKETS_S[n % len(BUCKETS_S)]  # a sample on a bucket's bound
        seen.extend(v.tolist())
        many.observe_many(v)
        for x in v.tolist():
            one.observe(x)
    (b_many, sum_many), (b_one, sum_one) = many.buckets(), one.buckets()
    assert b_many == b_one
    assert abs(sum_many - sum_one) < 1e-9
    assert many.count == one.count == len(seen)
    last = sorted(seen[-100:])  # the ring holds the newest samples
    assert sorted(many._recent.tolist()) == last
    assert sorted(one._recent.tolist()) == last
    assert many.quantiles() == one.quantiles()


def test_histogram_recent_is_the_newest_samples_oldest_first() -> None:
    from heimdall.metrics import Histogram

    h = Histogram(recent=8)
    assert h.recent().tolist() == []
    h.observe_many(np.arange(5.0))
    assert h.recent().tolist() == [0, 1, 2, 3, 4]  # not yet full
    h.observe(5.0)
    h.observe_many(np.arange(6.0, 11.0))  # wraps the ring
    assert h.recent().tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    h.observe_many(np.arange(11.0, 31.0))  # more than the ring holds in one call
    assert h.recent().tolist() == list(range(23, 31))


@given(st.integers(1, 10), st.lists(st.one_of(
    st.tuples(st.just("many"), st.integers(0, 25)),
    st.tuples(st.just("one"), st.just(1)),
    st.tuples(st.just("read"), st.just(0))), max_size=40))
def test_histogram_buckets_count_every_sample_once(size: int, ops: list[tuple[str, int]]) -> None:
    """Binning is deferred (half a ring at a time, and when read): the buckets still count
    each sample recorded exactly once, whatever the order of calls and reads."""
    from heimdall.metrics import BUCKETS_S, Histogram

    h = Histogram(recent=size)
    rng = np.random.default_rng(len(ops))
    seen: list[float] = []
    for op, n in ops:
        v = rng.exponential(0.01, size=n)
        if op == "many":
            h.observe_many(v)
        elif op == "one":
            h.observe(float(v[0]))
        seen.extend(v.tolist())
        if op == "read" or op == ops[-1][0]:
            b, total = h.buckets()
            idx = np.searchsorted(np.array(BUCKETS_S), np.array(seen), side="left")
            want = np.cumsum(np.bincount(idx, minlength=len(BUCKETS_S) + 1)).tolist()
            assert [c for _, c in b] == want
            assert abs(total - sum(seen)) < 1e-9
    assert h.count == len(seen)
    assert h.recent().tolist() == seen[-size:]
