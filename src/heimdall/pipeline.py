"""Pipeline: wires the stages of a configuration and owns their start and stop.

    broker --> PulsarSource (worker threads) --> StreamIngest (dedup, decode) --> WindowStore
                    |                                   |
                    +-- dead-letter topic <-- bad messages        metrics (Prometheus)

``Pipeline(config)`` builds the store at once (so it can be read before ``start``);
``start()`` starts the embedded broker if ``source.url = "embedded"``, the metrics endpoint
and the source; ``stop()`` undoes it in reverse. ``run()`` does both around a wait for
SIGINT/SIGTERM. ``with pipe:`` runs it in the background for the block.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from heimdall.config import HeimdallConfig, load_config
from heimdall.errors import ConfigError
from heimdall.metrics import Collector, GcPauses, StreamCounters, serve_metrics
from heimdall.sources._embedded import EmbeddedPulsar
from heimdall.sources._ingest import StreamIngest
from heimdall.sources.pulsar import PulsarSource
from heimdall.window import WindowStore, warm_up

log = logging.getLogger("heimdall")


class Pipeline:
    """Sources, streams, store and server of one ``heimdall.toml``.

    >>> from heimdall.config import build_config
    >>> cfg = build_config({"streams": [{"name": "s", "topic": "t", "fields": ["x"]}],
    ...                     "server": {"metrics": ""}})
    >>> pipe = Pipeline(cfg)
    >>> pipe.store.streams["s"].fields
    ('x',)
    """

    def __init__(self, config: HeimdallConfig, store: WindowStore | None = None) -> None:
        if not isinstance(config, HeimdallConfig):
            raise ConfigError(
                f"Pipeline takes a HeimdallConfig (see Pipeline.from_config); "
                f"received {type(config).__name__}"
            )
        self.config = config
        self.store = store or WindowStore([s.spec() for s in config.streams],
                                          **config.store_kwargs())
        self.ingests = [
            StreamIngest(s, self.store, config.source.dedup_window,
                         config.source.max_message_bytes)
            for s in config.streams
        ]
        self.broker: EmbeddedPulsar | None = None
        self.source: PulsarSource | None = None
        self.gc_pauses = GcPauses()
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self._stopped = threading.Event()
        self._running = False

    @classmethod
    def from_config(cls, path: str | os.PathLike[str]) -> Pipeline:
        """Build a pipeline from a ``heimdall.toml`` (``HEIMDALL_*`` variables override it)."""
        return cls(load_config(path))

    @property
    def url(self) -> str:
        """The broker's service URL (the embedded broker's once started)."""
        if self.broker is not None:
            return self.broker.url
        return self.config.source.url

    @property
    def counters(self) -> dict[str, StreamCounters]:
        """Per-stream ingest counters (live objects; read, do not write)."""
        return {i.name: i.counters for i in self.ingests}

    def start(self) -> Pipeline:
        """Start the broker (if embedded), the metrics endpoint and the source. Non-blocking."""
        if self._running:
            return self
        cfg = self.config
        embedded = cfg.source.url == "embedded"
        warm_up(list(self.store.streams.values()))
        try:
            if embedded:
                self.broker = EmbeddedPulsar(Path(cfg.source.data_dir) / "broker").start()
                log.info("embedded broker at %s (log %s)", self.broker.url,
                         self.broker.log_path)
            if cfg.server.metrics:
                collector = Collector(lambda: self.counters, self.store.stats, self.gc_pauses)
                self._metrics_server, self.metrics_port = serve_metrics(cfg.server.metrics,
                                                                        collector)
            self.gc_pauses.install()
            self.source = PulsarSource(cfg.source, self.url, self.ingests, embedded=embedded)
            self.source.start()
        except BaseException:
            self._shutdown()
            raise
        self._running = True
        self._stopped.clear()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop: the source finishes and acknowledges its batches, then everything
        closes. Idempotent."""
        self._shutdown(timeout_s)
        self._running = False
        self._stopped.set()

    def _shutdown(self, timeout_s: float = 30.0) -> None:
        if self.source is not None:
            self.source.stop(timeout_s)
            self.source = None
        self.gc_pauses.remove()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def run(self) -> None:
        """Start, then block until SIGINT or SIGTERM (or ``stop()`` from another thread);
        then stop gracefully. Call from the main thread."""
        self.start()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            self._stopped.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.stop()

    def stats(self) -> dict[str, Any]:
        """Ingest counters per stream and the store's stats, as plain data."""
        streams = {}
        for name, c in self.counters.items():
            p50, p99 = c.latency_s.quantiles()
            streams[name] = {
                "messages": c.messages, "bytes": c.bytes, "rows": c.rows,
                "dead_letters": c.dead_letters, "duplicates": c.duplicates,
                "batches": c.batches, "lag_s": c.lag_s,
                "dead_letter_reasons": dict(c.dead_letter_reasons),
                "latency_p50_s": p50, "latency_p99_s": p99,
            }
        return {"ingest": streams, "store": self.store.stats()}

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
