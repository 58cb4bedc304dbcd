"""Pipeline: wires the stages of a configuration and owns their start and stop.

    broker --> PulsarSource (worker threads) --> StreamIngest (dedup, decode) --> WindowStore
                    |                                   |  changed keys             |
                    +-- dead-letter topic <-- bad messages  v                        |
                                                  ModelRunner (own thread) <- windows()
                                                        |
                                                  predictions --> sinks (PulsarSink, callbacks)

``Pipeline(config)`` builds the store at once (so it can be read before ``start``);
``start()`` starts the embedded broker if ``source.url = "embedded"``, the metrics endpoint,
the model runners and their sinks, the source, then the gRPC server if ``server.grpc`` is
set; ``stop()`` undoes it in reverse.
``run()`` does both around a wait for SIGINT/SIGTERM. ``with pipe:`` runs it in the background
for the block.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from heimdall._preflight import import_path, preflight
from heimdall._signals import stop_on_signals
from heimdall.checkpoint import Checkpointer
from heimdall.cluster.node import ClusterNode
from heimdall.cluster.takeover import Takeover
from heimdall.config import HeimdallConfig, ModelConfig, ServerConfig, load_config
from heimdall.errors import ConfigError, SourceError, shown
from heimdall.metrics import Collector, GcPauses, StreamCounters, serve_metrics
from heimdall.models.adapters import Features, adapt
from heimdall.models.predictions import Predictions
from heimdall.models.runner import ModelRunner, ModelSpec
from heimdall.remote.server import GrpcServer, ServerTLS, stats_json
from heimdall.sinks.base import CallbackSink, Sink
from heimdall.sinks.pulsar import PulsarSink
from heimdall.sources._embedded import EmbeddedPulsar
from heimdall.sources._ingest import StreamIngest
from heimdall.sources._publish import Publisher
from heimdall.sources.pulsar import PulsarSource, batch_position
from heimdall.window import WindowStore

if TYPE_CHECKING:
    from heimdall.offline import TopicHistory
    from heimdall.remote.flight import FlightServer

log = logging.getLogger("heimdall")
# dead letters up to this long before the restored checkpoint are read back at start: a
# poison message's acknowledgement (sent right after its dead-letter publish) may have been
# lost with the process even though the checkpoint came later
_RECALL_MARGIN_MS = 60_000

M = TypeVar("M")
SinkArg = Sink | Callable[..., Any] | Sequence[Sink | Callable[..., Any]] | None


class Pipeline:
    """Sources, streams, store and server of one ``heimdall.toml``.

    >>> from heimdall.config import build_config
    >>> cfg = build_config({"streams": [{"name": "s", "topic": "t", "key": "id", "fields": ["x"]}],
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
        preflight(config)  # what heimdall check checks too: before anything is built
        self.config = config
        self.store = store or WindowStore([s.spec() for s in config.streams],
                                          **config.store_kwargs())
        self.ingests = [
            StreamIngest(s, self.store, config.dedup_horizon,
                         config.source.max_message_bytes)
            for s in config.streams
        ]
        self.predictions = Predictions(config.store.max_keys)
        self.runners: dict[str, ModelRunner] = {}
        self.broker: EmbeddedPulsar | None = None
        self.source: PulsarSource | None = None
        self.gc_pauses = GcPauses()
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self.grpc: GrpcServer | None = None
        self.flight: FlightServer | None = None
        self.checkpointer: Checkpointer | None = None
        self.cluster: ClusterNode | None = None
        self.takeover: Takeover | None = None
        if (ck := config.active_checkpoint) is not None:
            # a producer batch is acknowledged whole: its batch is read from a message's id
            self.checkpointer = Checkpointer(ck, self.store, self.ingests,
                                             entry_of=batch_position)
        self._stopped = threading.Event()
        self._cancel = threading.Event()
        self._publisher: Publisher | None = None
        self._running = False
        for m in config.models:
            self._add_configured(m)

    # ---- models ------------------------------------------------------------------------------

    def model(
        self,
        stream: str,
        *,
        every: int | None = None,
        interval_s: float | None = None,
        max_batch: int = 512,
        min_rows: int = 1,
        name: str | None = None,
        version: str = "1",
        sink: SinkArg = None,
        features: Features | None = None,
        method: str | None = None,
        processes: int = 1,
    ) -> Callable[[M], M]:
        """Register a model on ``stream``, as a decorator; returns the model unchanged.

        ``every=N`` scores a key after each N new events (the default is 1), ``interval_s``
        scores the keys that changed on a timer; at most ``max_batch`` keys go to one call,
        keys with fewer than ``min_rows`` rows are left out. The model is a function
        ``(batch: hd.WindowBatch) -> ndarray`` returning one score, or one row of scores,
        per key; or an estimator, ONNX session or torch module (``features`` and ``method``
        then shape its input; see ``heimdall.models.adapters``). ``sink``: a ``Sink``, a
        callable taking a list of predictions, or a list of them. Predictions are also kept
        in ``pipe.predictions``. ``processes=N`` runs the model in N worker processes that
        read the windows from shared memory themselves (``[store] shared_memory`` must be
        set, and the model picklable: defined at module level); only scores come back.
        """

        def register(obj: M) -> M:
            self.add_model(obj, stream, every=every, interval_s=interval_s,
                           max_batch=max_batch, min_rows=min_rows, name=name,
                           version=version, sink=sink, features=features, method=method,
                           processes=processes)
            return obj

        return register

    def add_model(
        self,
        obj: Any,
        stream: str,
        *,
        every: int | None = None,
        interval_s: float | None = None,
        max_batch: int = 512,
        min_rows: int = 1,
        name: str | None = None,
        version: str = "1",
        sink: SinkArg = None,
        features: Features | None = None,
        method: str | None = None,
        processes: int = 1,
    ) -> ModelRunner:
        """``model()`` without the decorator; returns the runner. Raises ``ConfigError``."""
        name = name or getattr(obj, "__name__", None) or type(obj).__name__
        if name in self.runners:
            raise ConfigError(f"a model named {name!r} is already registered")
        spec = ModelSpec(name, stream, adapt(obj, features=features, method=method),
                         version=str(version), every=every, interval_s=interval_s,
                         max_batch=max_batch, min_rows=min_rows, sinks=_sinks(sink),
                         processes=processes,
                         source=(obj, features, method) if processes > 1 else None)
        runner = ModelRunner(spec, self.store, self.predictions, _message_id_text)
        for ingest in self.ingests:
            if ingest.name == stream:
                ingest.listeners.append(runner.notify)
        self.runners[name] = runner
        if self._running:
            self._start_runner(runner)
        return runner

    def _add_configured(self, m: ModelConfig) -> None:
        obj = import_path(m.path, f"models ({m.name!r}).path")
        feats = import_path(m.features, f"models ({m.name!r}).features") if m.features else None
        self.add_model(obj, m.stream, every=m.every, interval_s=m.interval_s,
                       max_batch=m.max_batch, min_rows=m.min_rows, name=m.name,
                       version=m.version, sink=PulsarSink(m.topic) if m.topic else None,
                       features=feats, method=m.method, processes=m.processes)

    def _start_runner(self, runner: ModelRunner) -> None:
        for sink in runner.spec.sinks:
            sink.open(self.url)
        runner.start()

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
        """Start the broker (if embedded), the metrics endpoint, the model runners, the source
        and the gRPC server (if configured). Non-blocking."""
        if self._running:
            return self
        self._cancel.clear()
        cfg = self.config
        embedded = cfg.source.url == "embedded"
        try:
            if embedded:
                self.broker = EmbeddedPulsar(broker_dir(cfg),
                                             port=cfg.source.embedded_port).start()
                log.info("embedded broker at %s (log %s); publish to it with "
                         "`heimdall publish STREAM FILE -c <this config>` or any Pulsar client",
                         self.broker.url, self.broker.log_path)
            if cfg.server.metrics:
                collector = Collector(lambda: self.counters, self.store.stats, self.gc_pauses,
                                      lambda: dict(self.runners), lambda: self.checkpointer)
                self._metrics_server, self.metrics_port = serve_metrics(cfg.server.metrics,
                                                                        collector)
            self.gc_pauses.install()
            for runner in self.runners.values():
                self._start_runner(runner)
            self.source = PulsarSource(cfg.source, self.url, self.ingests, embedded=embedded)
            self.source.cancel = self._cancel
            ckpt = self.checkpointer
            if ckpt is not None:  # restore first; then acknowledge only what is checkpointed
                # dead letters since the checkpoint (all of them without one) are read back:
                # the acknowledgement of a poison message may have died with the process
                since = 0
                if ckpt.restore() is not None:
                    since = ckpt.stats.restored_created_ns // 1_000_000 - _RECALL_MARGIN_MS
                self.source.recall_since_ms = max(0, since)
                ckpt.ack = self.source.ack
                self.source.on_pending = ckpt.on_pending
                for ingest in self.ingests:
                    ingest.defer_acks = True
                ckpt.start()
            if cfg.cluster is not None:  # the node's address goes into its consumers' metadata
                self.grpc = self._grpc_server(cfg.server).start()
                host = (cfg.server.grpc or "").rpartition(":")[0] or "127.0.0.1"
                if cfg.server.flight:
                    self.flight = self._flight_server(cfg.server).start()
                self.cluster = ClusterNode(cfg.cluster, cfg.source.subscription, cfg.streams,
                                           cfg.cluster.advertise or f"{host}:{self.grpc.port}",
                                           self._advertised_flight())
                self.cluster.check_peers()  # refused before joining: other stream settings
                self.grpc.cluster = self.source.cluster = self.cluster
                self.takeover = Takeover(self.cluster, self.source, self.ingests)
                self.grpc.held = self.takeover.held.__getitem__
            self.source.start()
            if self.takeover is not None:
                self.takeover.start()
            if cfg.server.grpc and self.grpc is None:
                self.grpc = self._grpc_server(cfg.server).start()
            if cfg.server.flight and self.flight is None:
                self.flight = self._flight_server(cfg.server).start()
        except BaseException:
            self._shutdown()
            raise
        self._running = True
        self._stopped.clear()
        return self

    def publish(self, stream: str, events: Sequence[dict[str, Any]], *,
                timeout_s: float = 30.0) -> int:
        """Publish ``events`` (dicts, as a producer would send them) to ``stream``'s topic on
        this pipeline's broker, encoded in the stream's format and keyed by its key field,
        then wait until the stream has taken in that many more messages (good or dead-
        lettered; other producers' messages count too). Returns how many were published.

        For trying a pipeline, in tests and in docs: the embedded broker's port is not known
        in advance. Blocks; raises SourceError if the broker refuses or the messages are not
        taken in within ``timeout_s``, ConfigError for a stream this pipeline does not read
        or an Arrow stream (publish Arrow IPC with your own client).
        """
        if not self._running:
            raise ConfigError("publish needs a running pipeline (start() or `with pipe:`)")
        ingest = self._ingest(stream)
        cfg = ingest.config
        if cfg.format == "arrow":
            raise ConfigError(f"stream {stream!r} reads Arrow IPC: publish it with a client")
        import msgspec

        encode = msgspec.json.encode if cfg.format == "json" else msgspec.msgpack.encode
        if self._publisher is None:
            self._publisher = Publisher(self.url)
        before = ingest.counters.messages
        for event in events:
            key = event.get(cfg.key) if cfg.key_from == "payload" and cfg.key else None
            self._publisher.send(cfg.topic, encode(event), None if key is None else str(key))
        self._publisher.flush()
        n = len(events)
        deadline = time.monotonic() + timeout_s
        while ingest.counters.messages < before + n:
            if time.monotonic() > deadline:
                raise SourceError(f"stream {stream!r}: {n} message(s) published, "
                                  f"{ingest.counters.messages - before} taken in after "
                                  f"{timeout_s:g} s")
            time.sleep(0.005)
        return n

    def history(self, stream: str, *, since_ms: int | None = None) -> TopicHistory:
        """``stream``'s topic on this pipeline's broker as history (``hd.TopicHistory``), for
        ``hd.replay`` and ``hd.training_windows``: what the live windows were built from."""
        from heimdall.offline import TopicHistory

        ingest = self._ingest(stream)
        if self.config.source.url == "embedded" and self.broker is None:
            raise ConfigError("the embedded broker runs only while the pipeline does: read "
                              "its history after start()")
        return TopicHistory(self.url, ingest.config, since_ms=since_ms,
                            embedded=self.broker is not None)

    def cancel_start(self) -> None:
        """End a ``start()`` that is waiting for the broker (from a signal handler or another
        thread): it raises SourceError instead of retrying on."""
        self._cancel.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop: the source finishes and acknowledges its batches, then everything
        closes. Idempotent."""
        self._shutdown(timeout_s)
        self._running = False
        self._stopped.set()

    def close(self) -> None:
        """Stop, end model worker processes, and release the store's shared memory (if it
        has some): readers attached to it then fail with SharedMemoryError. A stopped
        pipeline's store stays readable until this."""
        self.stop()
        for runner in self.runners.values():
            runner.close()  # worker processes end
        self.store.close()

    def _ingest(self, stream: str) -> StreamIngest:
        """The stream's ingest; ConfigError naming the streams for one this pipeline lacks."""
        ingest = next((i for i in self.ingests if i.name == stream), None)
        if ingest is None:
            raise ConfigError(f"no stream {shown(stream)}; streams are "
                              f"{[i.name for i in self.ingests]}")
        return ingest

    @staticmethod
    def _tls(cfg: ServerConfig) -> ServerTLS | None:
        """The servers' TLS (gRPC's and Flight's: the same files)."""
        if cfg.tls_cert and cfg.tls_key:
            return ServerTLS(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
        return None

    def _grpc_server(self, cfg: ServerConfig) -> GrpcServer:
        tls = self._tls(cfg)
        return GrpcServer(
            self.store, address=cfg.grpc or "127.0.0.1:0", predictions=self.predictions,
            ingests=self.ingests, stats=self.stats, models=lambda: list(self.runners),
            token=cfg.token.get_secret_value() if cfg.token else None, tls=tls,
            max_message_bytes=cfg.max_message_bytes,
            max_concurrent_rpcs=cfg.max_concurrent_rpcs,
        )

    def _flight_server(self, cfg: ServerConfig) -> FlightServer:
        from heimdall.remote.flight import FlightServer

        assert cfg.flight is not None
        grpc = self.grpc
        return FlightServer(
            self.store, cfg.flight, token=cfg.token.get_secret_value() if cfg.token else None,
            tls=self._tls(cfg),
            max_reply_bytes=cfg.flight_max_reply_bytes,
            check_owner=grpc.check_owner if grpc is not None else None,
            stats=lambda: stats_json(self.stats()),
            locations=self._flight_locations if self.config.cluster is not None else None)

    def _advertised_flight(self) -> str | None:
        """This node's Flight location as other hosts reach it: a wildcard host (0.0.0.0)
        is replaced by ``cluster.advertise``'s host."""
        if self.flight is None:
            return None
        host = self.flight.host
        advertise = self.config.cluster.advertise if self.config.cluster else None
        if host in ("0.0.0.0", "::", "[::]") and advertise:
            host = advertise.rpartition(":")[0]
        return self.flight.location.replace(f"//{self.flight.host}:", f"//{host}:", 1)

    def _flight_locations(self) -> list[str]:
        """A cluster's nodes' Flight locations (those that serve Flight)."""
        if self.cluster is None:
            return []
        return [n.flight for n in self.cluster.view().nodes if n.flight]

    def _shutdown(self, timeout_s: float = 30.0) -> None:
        if self.flight is not None:
            self.flight.stop()
            self.flight = None
        if self.grpc is not None:  # first: let remote calls in flight finish
            self.grpc.stop(grace_s=min(5.0, timeout_s))
            self.grpc = None
        if self.takeover is not None:
            self.takeover.stop()
            self.takeover = None
        if self.source is not None:
            ckpt = self.checkpointer
            self.source.stop(timeout_s, before_close=ckpt.stop if ckpt is not None else None)
            self.source = None
        for runner in self.runners.values():
            runner.stop()
            for sink in runner.spec.sinks:
                sink.close()
        self.gc_pauses.remove()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def run(self) -> None:
        """Start, then block until SIGINT or SIGTERM (or ``stop()`` from another thread);
        then stop gracefully. A signal during start-up stops as soon as start-up is done; a
        second signal changes nothing (the stop is under way). Call from the main thread."""
        with stop_on_signals(on_stop=self.cancel_start) as signalled:
            self.start()
            while not signalled.wait(0.2) and not self._stopped.is_set():
                pass
            self.stop()

    def stats(self) -> dict[str, Any]:
        """Ingest counters per stream and the store's stats, as plain data."""
        streams = {}
        for name, c in self.counters.items():
            p50, p99 = c.latency_s.quantiles()
            streams[name] = {
                "messages": c.messages, "bytes": c.bytes, "rows": c.rows,
                "dead_letters": c.dead_letters, "duplicates": c.duplicates,
                "batches": c.batches, "pushed": c.pushed, "lag_s": c.lag_s,
                "before_boundary": c.before_boundary,
                "dead_letter_reasons": dict(c.dead_letter_reasons),
                "latency_p50_s": p50, "latency_p99_s": p99,
            }
        models = {}
        for name, r in self.runners.items():
            st = r.stats
            p50, p99 = st.latency_s.quantiles()
            models[name] = {
                "stream": r.spec.stream, "version": r.spec.version, "scored": st.scored,
                "batches": st.batches, "mean_batch": st.scored / st.batches if st.batches else 0.0,
                "failed": st.failed, "wrong_output": st.wrong_output, "skipped": r.skipped,
                "too_short": st.too_short, "sink_errors": st.sink_errors,
                "pending": r.tracker.pending, "model_p50_s": st.model_s.quantiles()[0],
                "latency_p50_s": p50, "latency_p99_s": p99,
            }
        out = {"ingest": streams, "store": self.store.stats(), "models": models}
        if self.checkpointer is not None:
            cs = self.checkpointer.stats
            out["checkpoint"] = {
                "written": cs.written, "failed": cs.failed, "bytes": cs.bytes,
                "acked": cs.acked, "last_seq": cs.last_seq, "last_write_s": cs.last_write_s,
                "max_pause_s": cs.max_pause_s, "pending": self.checkpointer.pending(),
                "restored_seq": cs.restored_seq, "restore_s": cs.restore_s,
                "skipped_corrupt": list(cs.skipped_corrupt),
            }
        return out

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def broker_dir(config: HeimdallConfig) -> Path:
    """Where the embedded broker of ``config`` keeps its data (and ``url.json`` while it runs)."""
    return Path(config.source.data_dir) / "broker"


def _sinks(sink: SinkArg) -> list[Sink]:
    if sink is None:
        return []
    items = [sink] if isinstance(sink, Sink) or callable(sink) else list(sink)
    out: list[Sink] = []
    for s in items:
        if isinstance(s, Sink):
            out.append(s)
        elif callable(s):
            out.append(CallbackSink(s))
        else:
            raise ConfigError(f"a sink must be a Sink or a callable; received {s!r}")
    return out


def _message_id_text(mid: Any) -> str | None:
    """A Pulsar message id as ``(ledger,entry,partition,batch_index)``: ``mid`` is the
    client's message (what ingest hands the runners), or its id serialized."""
    from _pulsar import Message, MessageId

    if isinstance(mid, Message):
        return str(mid.message_id())
    if not isinstance(mid, bytes):
        return None if mid is None else str(mid)
    return str(MessageId.deserialize(mid))
