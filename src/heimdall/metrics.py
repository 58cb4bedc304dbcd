"""What the pipeline counts, and its Prometheus endpoint.

The hot path never touches ``prometheus_client``: it adds to plain counters once per batch and
records durations into ``Histogram`` (numpy bucket counts, many samples per call). The
exporter reads them when Prometheus scrapes. Labels are per stream, never per key.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Seconds: 50 us .. 10 s, for apply times, publish-to-window latency and GC pauses.
BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
)


class Histogram:
    """Bucket counts plus a ring of the most recent samples (for p50/p99 in the live view).

    Thread-safe. Recording a batch (``observe_many``) only copies it into the ring: the
    samples are put in buckets later, many batches at once, when they would otherwise be
    overwritten or when the buckets are read. A worker woken for a burst of messages pays
    ~10-20 us for each numpy call (its dispatch code is cold by then), so the bucketing's
    four calls are paid once per half ring instead of once per batch.
    """

    def __init__(self, recent: int = 8192) -> None:
        self._bounds = np.array(BUCKETS_S)
        self._counts = np.zeros(len(BUCKETS_S) + 1, np.int64)
        self._sum = 0.0
        self._recent = np.zeros(recent)
        self._n = 0  # samples recorded
        self._binned = 0  # of those, the first ``_binned`` are in ``_counts`` and ``_sum``
        self._lock = threading.Lock()

    def observe_many(self, seconds: np.ndarray) -> None:
        """Record samples (seconds)."""
        n = len(seconds)
        if not n:
            return
        size = len(self._recent)
        with self._lock:
            if self._n + n - self._binned > size // 2:  # keep the ring's older half binned
                self._bin_pending()
                if n > size // 2:  # more than the ring holds unbinned: bin this batch now
                    self._bin(seconds)
                    self._binned += n
            tail = seconds[-size:]
            start = (self._n + n - len(tail)) % size
            first = min(len(tail), size - start)  # up to the ring's end, then from its start
            self._recent[start:start + first] = tail[:first]
            self._recent[:len(tail) - first] = tail[first:]
            self._n += n

    def observe(self, seconds: float) -> None:
        """Record one sample (seconds): one scalar write (binned later, as above)."""
        size = len(self._recent)
        with self._lock:
            if self._n + 1 - self._binned > size // 2:
                self._bin_pending()
            self._recent[self._n % size] = seconds
            self._n += 1

    def _bin(self, seconds: np.ndarray) -> None:
        idx = np.searchsorted(self._bounds, seconds, side="left")
        self._counts += np.bincount(idx, minlength=len(self._counts))
        self._sum += float(seconds.sum())

    def _bin_pending(self) -> None:
        """Put the samples recorded since the last binning in buckets (the lock held)."""
        size = len(self._recent)
        a, b = self._binned, self._n
        if a == b:
            return
        start, stop = a % size, b % size
        if start < stop:
            self._bin(self._recent[start:stop])
        else:
            self._bin(np.concatenate([self._recent[start:], self._recent[:stop]]))
        self._binned = b

    @property
    def count(self) -> int:
        """How many samples were recorded."""
        return self._n

    def recent(self) -> np.ndarray:
        """The samples held (the most recent ``recent`` of them), oldest first."""
        with self._lock:
            n, size = self._n, len(self._recent)
            if n <= size:
                return self._recent[:n].copy()
            start = n % size
            return np.concatenate([self._recent[start:], self._recent[:start]])

    def quantiles(self, qs: Iterable[float] = (0.5, 0.99)) -> list[float]:
        """Quantiles of the recent samples, in seconds (NaN before the first)."""
        with self._lock:
            recent = self._recent[: min(self._n, len(self._recent))].copy()
        if not len(recent):
            return [float("nan") for _ in qs]
        return [float(v) for v in np.quantile(recent, list(qs))]

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative buckets in Prometheus form, and the sum."""
        with self._lock:
            self._bin_pending()
            cum = np.cumsum(self._counts).tolist()
            total = self._sum
        out = [(repr(b), float(c)) for b, c in zip(BUCKETS_S, cum, strict=False)]
        out.append(("+Inf", float(cum[-1])))
        return out, total


@dataclass
class StreamCounters:
    """Per-stream counters of the ingest path. Written under the stream's ingest lock."""

    messages: int = 0
    bytes: int = 0
    rows: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    batches: int = 0
    pushed: int = 0  # rows written by the gRPC Push call (no broker message)
    before_boundary: int = 0  # rows at or before a backfill's boundary: in the windows already
    lag_s: float = 0.0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    apply_s: Histogram = field(default_factory=Histogram)
    latency_s: Histogram = field(default_factory=Histogram)

    def count_reason(self, reason: str) -> None:
        """Count a dead letter under its kind (the reason up to the first colon)."""
        kind = reason.split(":", 1)[0][:60]
        self.dead_letter_reasons[kind] = self.dead_letter_reasons.get(kind, 0) + 1


class GcPauses:
    """Python's garbage-collector pauses, timed through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses_s = Histogram()
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0:
            self.pauses_s.observe(time.perf_counter() - self._t0)

    def install(self) -> None:
        """Start timing collections."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Stop timing collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


class Collector:
    """A Prometheus collector reading the pipeline's counters at scrape time."""

    def __init__(self, streams: Callable[[], dict[str, StreamCounters]],
                 store_stats: Callable[[], dict[str, Any]], gc_pauses: GcPauses,
                 models: Callable[[], dict[str, Any]] = dict,
                 checkpoint: Callable[[], Any] = lambda: None) -> None:
        self._streams = streams
        self._checkpoint = checkpoint  # the Checkpointer, or None when checkpoints are off
        self._store_stats = store_stats
        self._gc = gc_pauses
        self._models = models  # name -> ModelRunner (its .stats and .skipped)

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by prometheus_client)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        streams = self._streams()
        counters = {
            "events_in": ("Messages received", "messages"),
            "bytes_in": ("Payload bytes received", "bytes"),
            "rows_applied": ("Rows written to windows", "rows"),
            "dead_letters": ("Messages sent to the dead-letter topic", "dead_letters"),
            "redeliveries_dropped": ("Messages already applied, dropped", "duplicates"),
            "batches": ("Batches applied", "batches"),
            "rows_before_boundary": ("Rows at or before a backfill's boundary, left out",
                                     "before_boundary"),
        }
        for name, (doc, attr) in counters.items():
            fam = CounterMetricFamily(f"heimdall_{name}", doc, labels=["stream"])
            for s, c in streams.items():
                fam.add_metric([s], getattr(c, attr))
            yield fam
        lag = GaugeMetricFamily("heimdall_consumer_lag_seconds",
                                "Age of the newest message applied, at apply time",
                                labels=["stream"])
        for s, c in streams.items():
            lag.add_metric([s], c.lag_s)
        yield lag
        for name, doc, attr in (
            ("batch_apply_seconds", "Time to decode and apply one batch", "apply_s"),
            ("publish_to_window_seconds", "From publish to applied in the window",
             "latency_s"),
        ):
            hist = HistogramMetricFamily(f"heimdall_{name}", doc, labels=["stream"])
            for s, c in streams.items():
                b, total = getattr(c, attr).buckets()
                hist.add_metric([s], b, total)
            yield hist
        stats = self._store_stats()
        keys = GaugeMetricFamily("heimdall_keys", "Keys held", labels=["stream"])
        ev = CounterMetricFamily("heimdall_evictions", "Keys evicted (LRU)", labels=["stream"])
        late = CounterMetricFamily("heimdall_late_events", "Events rejected as too late",
                                   labels=["stream"])
        for s, st in stats.get("streams", {}).items():
            keys.add_metric([s], st.get("keys", 0))
            ev.add_metric([s], st.get("evictions", 0))
            late.add_metric([s], st.get("late_rejected", 0))
        yield keys
        yield ev
        yield late
        b, total = self._gc.pauses_s.buckets()
        gc_h = HistogramMetricFamily("heimdall_gc_pause_seconds",
                                     "Python garbage-collector pauses")
        gc_h.add_metric([], b, total)
        yield gc_h
        yield from self._collect_models(CounterMetricFamily, HistogramMetricFamily)
        yield from self._collect_checkpoint(CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)

    def _collect_checkpoint(self, counter: Any, gauge: Any, histogram: Any) -> Iterator[Any]:
        ck = self._checkpoint()
        if ck is None:
            return
        st = ck.stats
        for name, doc, value in (
            ("checkpoints_written", "Checkpoints written", st.written),
            ("checkpoints_failed", "Checkpoints that failed to write", st.failed),
            ("checkpoint_acked", "Messages acknowledged after a checkpoint", st.acked),
        ):
            fam = counter(f"heimdall_{name}", doc)
            fam.add_metric([], value)
            yield fam
        for name, doc, value in (
            ("checkpoint_bytes", "Size of the newest checkpoint", st.bytes),
            ("checkpoint_pending_messages", "Messages applied, awaiting a checkpoint",
             ck.pending()),
            ("checkpoint_write_seconds", "Time to write the newest checkpoint",
             st.last_write_s),
        ):
            g = gauge(f"heimdall_{name}", doc)
            g.add_metric([], value)
            yield g
        b, total = st.pause_s.buckets()
        pause = histogram("heimdall_checkpoint_pause_seconds",
                          "Time a stream's ingest waited for a checkpoint's copy")
        pause.add_metric([], b, total)
        yield pause

    def _collect_models(self, counter: Any, histogram: Any) -> Iterator[Any]:
        runners = self._models()
        if not runners:
            return
        for name, doc, attr in (
            ("model_keys_scored", "Keys scored (batch size = keys scored / batches)", "scored"),
            ("model_batches", "Model calls", "batches"),
            ("model_failures", "Model calls that raised", "failed"),
            ("model_wrong_outputs", "Model outputs of the wrong shape or dtype",
             "wrong_output"),
            ("model_too_short", "Keys left out for min_rows", "too_short"),
            ("model_sink_errors", "Sink deliveries that failed", "sink_errors"),
        ):
            fam = counter(f"heimdall_{name}", doc, labels=["model"])
            for m, r in runners.items():
                fam.add_metric([m], getattr(r.stats, attr))
            yield fam
        skipped = counter("heimdall_model_skipped", "Scorings coalesced into a newer one",
                          labels=["model"])
        for m, r in runners.items():
            skipped.add_metric([m], r.skipped)
        yield skipped
        for name, doc, attr in (
            ("model_seconds", "Time in one model call", "model_s"),
            ("event_to_prediction_seconds", "From the triggering event's publish to its "
             "prediction", "latency_s"),
        ):
            hist = histogram(f"heimdall_{name}", doc, labels=["model"])
            for m, r in runners.items():
                b, total = getattr(r.stats, attr).buckets()
                hist.add_metric([m], b, total)
            yield hist


def serve_metrics(address: str, collector: Collector) -> tuple[Any, int]:
    """Start the Prometheus endpoint on ``host:port`` (port 0: a free one).

    Returns the server (call ``shutdown()`` to stop it) and the port it listens on.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = address.rpartition(":")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    return server, int(server.server_address[1])
