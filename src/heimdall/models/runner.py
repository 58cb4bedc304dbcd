"""The model runner: scores each key's window as it changes, on its own thread.

One ``ModelRunner`` per registered model. Ingest threads only tell its ``ChangeTracker``
which keys changed (``notify``: a few dict updates per batch); the runner's thread takes up
to ``max_batch`` due keys, reads their windows in one ``store.windows`` call (a consistent
copy), calls the model once for all of them, checks what it returned, records the newest
prediction of each key and hands the batch to the sinks. A model never runs on an ingest
thread, and a model that raises, or returns the wrong shape, is logged, counted and skipped:
ingestion never waits for a model.

When the model is slower than the stream, keys that trigger again before they are scored
are coalesced (the model sees the newest window; ``skipped`` counts the scorings saved), so
nothing queues without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heimdall.errors import ConfigError, ModelError
from heimdall.metrics import Histogram
from heimdall.models._tracker import ChangeTracker, Key
from heimdall.models._workers import Scored, WorkerPool, score_batch
from heimdall.models.adapters import ModelFn
from heimdall.models.predictions import PredictionBatch, Predictions
from heimdall.sinks.base import Sink
from heimdall.window import WindowStore

log = logging.getLogger("heimdall.models")


@dataclass
class ModelSpec:
    """A registered model: what it scores, when, and where its predictions go."""

    name: str
    stream: str
    fn: ModelFn
    version: str = "1"
    every: int | None = None
    interval_s: float | None = None
    max_batch: int = 512
    min_rows: int = 1
    sinks: list[Sink] = field(default_factory=list)
    processes: int = 1
    # with processes > 1: (model object, features, method), adapted in each worker
    source: tuple[Any, Any, Any] | None = None

    def __post_init__(self) -> None:
        if (self.every is None) == (self.interval_s is None):
            if self.every is None:
                self.every = 1  # the default trigger: every event
            else:
                raise ConfigError(f"model {self.name!r}: give every=N or interval_s=S, "
                                  f"not both (received every={self.every}, "
                                  f"interval_s={self.interval_s})")
        if self.every is not None and (isinstance(self.every, bool)
                                       or not isinstance(self.every, int) or self.every < 1):
            raise ConfigError(f"model {self.name!r}: every must be a whole number >= 1; "
                              f"received {self.every!r}")
        if self.interval_s is not None and not self.interval_s > 0:
            raise ConfigError(f"model {self.name!r}: interval_s must be > 0; "
                              f"received {self.interval_s!r}")
        for what, v in (("max_batch", self.max_batch), ("min_rows", self.min_rows)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"model {self.name!r}: {what} must be a whole number >= 1; "
                                  f"received {v!r}")
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) \
                or self.processes < 1:
            raise ConfigError(f"model {self.name!r}: processes must be a whole number >= 1; "
                              f"received {self.processes!r}")
        if not callable(self.fn):
            raise ConfigError(f"model {self.name!r}: {self.fn!r} is not callable")


@dataclass
class ModelStats:
    """What a runner counts. Written by its thread; read anywhere."""

    scored: int = 0  # keys scored
    batches: int = 0
    failed: int = 0  # batches whose model call raised
    wrong_output: int = 0  # batches whose output had the wrong shape or dtype
    too_short: int = 0  # keys left out for min_rows
    sink_errors: int = 0
    model_s: Histogram = field(default_factory=Histogram)
    latency_s: Histogram = field(default_factory=Histogram)


def check_output(model: str, out: Any, n: int) -> np.ndarray:
    """The model's output as (n,) or (n, K) numbers; ``ModelError`` naming the model and
    what it returned otherwise."""
    try:
        arr = np.asarray(out)
    except Exception as exc:  # e.g. a ragged list
        raise ModelError(f"model {model!r} returned {type(out).__name__} that is not an "
                         f"array for a batch of {n} keys: {exc}") from None
    if arr.dtype.kind not in "fiub":
        raise ModelError(f"model {model!r} returned dtype {arr.dtype} for a batch of {n} keys; "
                         f"expected numbers, shape ({n},) or ({n}, K)")
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ModelError(f"model {model!r} returned shape {arr.shape} for a batch of {n} keys; "
                         f"expected ({n},) or ({n}, K)")
    return arr


def _id_text(mid: Any) -> str | None:
    if mid is None:
        return None
    return mid.hex() if isinstance(mid, bytes) else str(mid)


class ModelRunner:
    """Runs one model over one stream of a store. ``start()``/``stop()`` its thread, or call
    ``run_once()`` to score one batch on the calling thread (tests, notebooks)."""

    def __init__(self, spec: ModelSpec, store: WindowStore, predictions: Predictions,
                 id_text: Callable[[Any], str | None] = _id_text) -> None:
        if spec.stream not in store.streams:
            from heimdall.errors import StreamNotFoundError

            raise StreamNotFoundError(f"model {spec.name!r}: no stream {spec.stream!r}; "
                                      f"streams are {list(store.streams)}")
        self.spec = spec
        self.store = store
        self.predictions = predictions
        self.id_text = id_text
        max_keys = int(store.stats()["streams"][spec.stream]["max_keys"])
        self.tracker = ChangeTracker(spec.every, spec.interval_s, max_keys)
        self.stats = ModelStats()
        self._stop = threading.Event()
        self._scoring = False
        self._thread: threading.Thread | None = None
        self._pool: WorkerPool | None = None
        if spec.processes > 1:
            segment = getattr(store, "segment", None)
            if segment is None:
                raise ConfigError(
                    f"model {spec.name!r}: processes={spec.processes} needs the store in "
                    f"shared memory (WindowStore(..., shared_memory=NAME) or "
                    f"[store] shared_memory)")
            if spec.source is None:
                raise ConfigError(f"model {spec.name!r}: processes > 1 needs the model "
                                  f"object (ModelSpec.source)")
            self._pool = WorkerPool(spec.processes, segment.name, spec.stream, spec.source,
                                    spec.min_rows, spec.name)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def skipped(self) -> int:
        """Scorings saved by coalescing (a key triggered again before it was scored)."""
        return self.tracker.coalesced

    def notify(self, keys: Sequence[Key], ids: Sequence[Any],
               sent_ms: Sequence[float]) -> None:
        """Rows were applied to the model's stream (called by ingest, once per batch)."""
        self.tracker.notify(keys, ids, sent_ms)

    # ---- the thread ------------------------------------------------------------------------

    def start(self) -> ModelRunner:
        """Start the runner's thread. Non-blocking."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name=f"heimdall-model-{self.name}")
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the batch in hand. Idempotent."""
        self._stop.set()
        self.tracker.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def close(self) -> None:
        """Stop, and end the worker processes (if any)."""
        self.stop()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _loop(self) -> None:
        interval = self.spec.interval_s
        next_tick = time.monotonic() + (interval or 0.0)
        while not self._stop.is_set():
            if interval is not None:
                delay = next_tick - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                next_tick = max(next_tick + interval, time.monotonic())
                self.tracker.tick()
            elif not self.tracker.wait(0.1):
                continue
            while self.tracker.pending and not self._stop.is_set():
                self.run_once()

    # ---- one batch -------------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every key due so far is scored: none due, none being scored (rows
        applied after the call may be scored too). Raises ModelError after ``timeout_s``,
        or at once if the runner is not running."""
        deadline = time.monotonic() + timeout_s
        while self.tracker.pending or self._scoring:
            if self._thread is None or not self._thread.is_alive():
                raise ModelError(f"model {self.name!r} is not running: start the pipeline")
            if time.monotonic() > deadline:
                raise ModelError(f"model {self.name!r}: {self.tracker.pending} key(s) still "
                                 f"due after {timeout_s:g} s")
            time.sleep(0.002)

    def run_once(self) -> int:
        """Score up to ``max_batch`` due keys now (with worker processes: every due key, in
        batches of ``max_batch``, one per process at a time); returns how many were scored."""
        self._scoring = True  # before the keys leave the tracker: flush() sees one or other
        try:
            return self._run_once()
        finally:
            self._scoring = False

    def _run_once(self) -> int:
        spec = self.spec
        pool = self._pool
        if pool is None:
            keys = self.tracker.take(spec.max_batch)
            if not keys:
                return 0
            return self._finish(score_batch(self.store, spec.stream, spec.fn, spec.min_rows,
                                            keys))
        # keep every worker busy: a worker that hands back a batch gets the next one before
        # its result is recorded here
        return pool.drain(lambda: None if self._stop.is_set()
                          else self.tracker.take(spec.max_batch) or None, self._finish)

    def _finish(self, r: Scored) -> int:
        """Check a scored batch, record its predictions and hand them to the sinks."""
        spec, st = self.spec, self.stats
        if r.gone:
            self.tracker.forget(r.gone)
        st.too_short += r.too_short
        n = len(r.keys)
        if not n:
            return 0
        if r.error is not None:
            st.failed += 1
            log.error("model %r (version %s) failed on a batch of %d keys; skipped:\n%s",
                      spec.name, spec.version, n, r.error)
            return 0
        st.model_s.observe(r.model_s)
        try:
            scores = check_output(spec.name, r.out, n)
        except ModelError as exc:
            st.wrong_output += 1
            log.error("%s; batch skipped", exc)
            return 0
        preds = self._predictions(r.keys, r.newest_ts, r.rows, r.last_ts, scores)
        st.scored += n
        st.batches += 1
        self.predictions.record(spec.name, preds)
        for sink in spec.sinks:
            try:
                sink.emit(preds)
            except Exception:
                st.sink_errors += 1
                log.exception("model %r: sink %s failed on %d predictions", spec.name,
                              type(sink).__name__, n)
        st.latency_s.observe_many(preds.latency_ms / 1e3)
        return n

    def _predictions(self, keys: list[Key], newest: list[int], rows: list[int],
                     last: list[int], scores: np.ndarray) -> PredictionBatch:
        spec = self.spec
        mids, sent_ms = self.tracker.triggers_of(keys)
        sent = np.array(sent_ms, dtype=np.float64)
        now_ns = time.time_ns()
        latency = now_ns / 1e6 - sent
        return PredictionBatch(spec.name, spec.version, keys,
                               scores.astype(np.float64, copy=False), newest, mids, latency,
                               now_ns, self.id_text, rows, last)
