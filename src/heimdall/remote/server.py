"""The gRPC server: a running Heimdall's windows, predictions and stats for other hosts.

``GrpcServer(store, ...)`` serves any ``WindowStore``; ``Pipeline`` starts one when
``server.grpc`` is set, wired to its ingest (so Push and Subscribe see what the broker brings)
and its predictions. Besides Heimdall's service it serves the standard health service and
reflection. Every failure is a status with a message that names what was wrong (see
``proto/heimdall/v1/heimdall.proto``), and the trailing metadata ``heimdall-error`` names the
Heimdall exception, which ``hd.connect`` raises again on the client.

Threads: grpcio's pool, at most ``max_concurrent_rpcs`` calls at once (more are refused with
RESOURCE_EXHAUSTED). Reads never block ingest; a Subscribe call holds one thread.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from heimdall.cluster._hash import RANGE_SIZE, key_hash
from heimdall.cluster.node import ClusterNode
from heimdall.cluster.ranges import covers, flatten
from heimdall.errors import (
    CapacityError,
    ConfigError,
    HeimdallError,
    KeyNotFoundError,
    NotOwnerError,
    StaleWindowError,
    StreamNotFoundError,
    shown,
)
from heimdall.models.predictions import Predictions
from heimdall.remote import _convert as cv
from heimdall.remote._feed import Feed, Subscription
from heimdall.remote._pb import heimdall_pb2 as pb
from heimdall.remote._pb import heimdall_pb2_grpc as pb_grpc
from heimdall.sources._ingest import Listener, StreamIngest, notify_pushed
from heimdall.window import WindowStore
from heimdall.window.reader import DEFAULT_AGGREGATES
from heimdall.window.reads import check_rows

log = logging.getLogger("heimdall.remote")

SERVICE = pb.DESCRIPTOR.services_by_name["Heimdall"].full_name
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_READ_RETRIES = 1000
_POLL_S = 0.25
_MAX_DETAILS = 2000  # characters of a status message (gRPC's metadata limit is 8 KiB)

_STATUS: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (StreamNotFoundError, grpc.StatusCode.NOT_FOUND),
    (KeyNotFoundError, grpc.StatusCode.NOT_FOUND),
    (CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StaleWindowError, grpc.StatusCode.ABORTED),
    (NotOwnerError, grpc.StatusCode.FAILED_PRECONDITION),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),  # SchemaError, ConfigError
]


@dataclass(frozen=True)
class ServerTLS:
    """TLS for the server: its certificate chain and key (PEM files); with ``client_ca_file``
    clients must present a certificate signed by that CA."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, key, client CA or None), read; ConfigError if unreadable."""
        try:
            cert = Path(self.cert_file).read_bytes()
            key = Path(self.key_file).read_bytes()
            ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        except OSError as exc:
            raise ConfigError(f"server TLS: cannot read {exc.filename}: {exc.strerror}") from exc
        return cert, key, ca

    def credentials(self) -> grpc.ServerCredentials:
        cert, key, ca = self.pem()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                           require_client_auth=ca is not None)


class GrpcServer:
    """Serves ``store`` (and ``predictions``) over gRPC on ``address`` (port 0: a free one).

    ``ingests``: the pipeline's stream ingests; Push then writes through them (counted, seen by
    models) and Subscribe hooks on them. Without them Push writes to the store directly.
    ``stats``: what the Stats call returns (default: the store's stats). ``token``: every call
    but health checks needs ``authorization: Bearer <token>``.

    >>> import heimdall as hd
    >>> from heimdall.remote.server import GrpcServer
    >>> store = hd.WindowStore([hd.StreamSpec("s", fields=["x"])], max_keys=10)
    >>> server = GrpcServer(store).start()
    >>> server.port > 0
    True
    >>> server.stop()
    """

    def __init__(
        self,
        store: WindowStore,
        *,
        address: str = "127.0.0.1:0",
        predictions: Predictions | None = None,
        ingests: Sequence[StreamIngest] = (),
        stats: Callable[[], dict[str, Any]] | None = None,
        models: Callable[[], Iterable[str]] | None = None,
        token: str | None = None,
        tls: ServerTLS | None = None,
        max_message_bytes: int = 16 << 20,
        max_concurrent_rpcs: int = 64,
    ) -> None:
        if max_message_bytes < 1024 or max_concurrent_rpcs < 1:
            raise ConfigError(
                f"max_message_bytes must be >= 1024 and max_concurrent_rpcs >= 1; received "
                f"{max_message_bytes} and {max_concurrent_rpcs}"
            )
        if token is not None and not token.strip():
            raise ConfigError("the gRPC token is empty; give a secret or leave it unset")
        self.store = store
        self.address = address
        self.predictions = predictions
        self.token = token
        self.tls = tls
        self.max_message_bytes = max_message_bytes
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self._ingests = {i.name: i for i in ingests}
        self._listeners: dict[str, list[Listener]] = {
            name: (self._ingests[name].listeners if name in self._ingests else [])
            for name in store.streams
        }
        self._stats = stats or (lambda: {"store": store.stats()})
        self._models = models or (lambda: predictions.models() if predictions else [])
        self.feed = Feed(self._listeners, predictions)
        self.port = 0
        self._server: grpc.Server | None = None
        self.cluster: ClusterNode | None = None  # a cluster node: reads of others' keys refused
        # a cluster node: the ranges whose keys it holds whole (a range still being taken
        # over is owned but not held: its reads are refused until the replay is done)
        self.held: Callable[[str], Sequence[tuple[int, int]]] | None = None
        self._health: health.HealthServicer | None = None
        self._stopping = threading.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> GrpcServer:
        """Bind and start serving. Non-blocking. Raises ConfigError if the address cannot be
        bound."""
        interceptors = [_BearerAuth(self.token)] if self.token else []
        interceptors.append(_Guard())  # innermost: wraps the handler the service registered
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.max_concurrent_rpcs,
                               thread_name_prefix="heimdall-grpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=self.max_concurrent_rpcs,
        )
        pb_grpc.add_HeimdallServicer_to_server(_Servicer(self), server)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            if self.tls is not None:
                port = server.add_secure_port(self.address, self.tls.credentials())
            else:
                port = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise ConfigError(f"server.grpc: cannot bind {self.address!r}: {exc}") from exc
        if not port:
            raise ConfigError(f"server.grpc: cannot bind {self.address!r}")
        server.start()
        for name in ("", SERVICE):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.port = port
        self._server = server
        self._stopping.clear()
        log.info("gRPC on %s:%d%s%s", self.address.rpartition(":")[0], port,
                 " (TLS)" if self.tls else "", " (token)" if self.token else "")
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Graceful stop: refuse new calls, let calls in flight finish for up to ``grace_s``
        (Subscribe streams end at once), then cancel the rest. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        self._stopping.set()
        self.feed.close()
        server.stop(grace_s).wait(grace_s + 1.0)

    def __enter__(self) -> GrpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what the servicer calls -------------------------------------------------------------

    def window_reply(self, stream: str, key: Any, rows: int = 0) -> Any:
        """A consistent snapshot of one key's window, straight from the view into the reply
        (one copy), read again if the writer overwrote it meanwhile."""
        for _ in range(_READ_RETRIES):
            w = self.store.window(stream, key)
            reply = cv.window_reply(w, pb.WindowReply(), rows)
            if w.valid:
                return reply
            time.sleep(0)
        raise StaleWindowError(f"stream {stream!r}, key {shown(key)}: no consistent read")

    def check_reply_size(self, stream: str, n_keys: int, rows: int) -> None:
        spec = self.store.streams.get(stream)
        if spec is None:
            return  # the read raises StreamNotFoundError
        W = min(rows or spec.window.rows, spec.window.rows)
        size = n_keys * (W * (len(spec.fields) * np.dtype(spec.dtype).itemsize + 8) + 9)
        if size > self.max_message_bytes:
            raise CapacityError(
                f"stream {stream!r}: {n_keys} keys x {W} rows would be a {size}-byte reply; "
                f"the limit is {self.max_message_bytes} bytes (server.max_message_bytes): "
                f"ask for fewer keys or rows"
            )

    def write(self, stream: str, keys: list[Any], values: np.ndarray,
              ts_ns: np.ndarray | None) -> int:
        ingest = self._ingests.get(stream)
        if ingest is not None:
            return ingest.push(keys, values, ts_ns)
        self.store.append_batch(stream, keys, values, ts_ns)
        notify_pushed(self._listeners.get(stream, []), keys)
        return len(keys)

    def check_owner(self, stream: str, keys: Sequence[Any]) -> None:
        """NotOwnerError (naming the owner) for a key the broker gives another node: its
        window here, if any, is no longer kept up to date."""
        if self.cluster is None or stream not in self.store.streams:
            return
        view = self.cluster.view()
        mine = self.cluster.address
        held = self.held(stream) if self.held is not None else None
        for key in keys:
            h = key_hash(key)
            owner = view.table.owner_of_hash(stream, h)
            if owner != mine:
                raise NotOwnerError(
                    f"stream {stream!r}, key {shown(key)}: node {self.cluster.name!r} does not "
                    f"own it; " + (f"{owner} does" if owner else "no node does right now"),
                    owner)
            if held is not None and not covers(held, h):
                raise NotOwnerError(
                    f"stream {stream!r}, key {shown(key)}: node {self.cluster.name!r} is "
                    f"taking its range over (replaying the topic); retry shortly", mine)

    def cluster_reply(self) -> Any:
        from heimdall.cluster.node import whole_range

        reply = pb.ClusterInfoReply(range_size=RANGE_SIZE)
        if self.cluster is None:
            reply.node = "standalone"
            node = reply.nodes.add(name="standalone", address=f"{self.host}:{self.port}")
            for stream in self.store.streams:
                node.ranges[stream].bounds[:] = flatten(whole_range())
            return reply
        reply.node = self.cluster.name
        reply.config_fingerprint = self.cluster.fingerprint
        for n in self.cluster.view().nodes:
            node = reply.nodes.add(name=n.name, address=n.address)
            for stream, ranges in n.ranges.items():
                node.ranges[stream].bounds[:] = flatten(ranges)
        return reply

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0] or "127.0.0.1"

    def stats_json(self) -> str:
        """The stats as standard JSON (``stats_json``)."""
        return stats_json(self._stats())

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def known_models(self) -> set[str]:
        return set(self._models()) | set(self.predictions.models() if self.predictions else [])


class _Servicer(pb_grpc.HeimdallServicer):  # type: ignore[misc]
    """The Heimdall service: each call translates to one store (or predictions) read."""

    def __init__(self, server: GrpcServer) -> None:
        self.s = server
        self.store = server.store

    def GetWindow(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            key = cv.from_key(request.key)
            self.s.check_owner(request.stream, [key])
            return self.s.window_reply(request.stream, key)

    def GetWindows(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            keys = cv.from_keys(request.keys)
            self.s.check_owner(request.stream, keys)
            rows = request.rows or None
            seconds = request.seconds or None
            self.s.check_reply_size(request.stream, len(keys), request.rows)
            batch = self.store.windows(request.stream, keys, rows=rows, seconds=seconds)
            return cv.batch_reply(batch)

    def Aggregate(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            keys = cv.from_keys(request.keys)
            if request.single and len(keys) != 1:
                raise ConfigError(f"single = true needs one key; received {len(keys)}")
            self.s.check_owner(request.stream, keys)
            aggs = list(request.aggs) or list(DEFAULT_AGGREGATES)
            out = self.store.aggregate(request.stream, keys[0] if request.single else keys,
                                       aggs, rows=request.rows or None,
                                       seconds=request.seconds or None)
            reply = pb.AggregateReply()
            for name, arr in out.items():
                cv.to_array(arr, reply.values[name])
            return reply

    def ListKeys(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            reply = pb.ListKeysReply()
            cv.add_keys(self.store.keys(request.stream), reply.keys)
            return reply

    def ClusterInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            return self.s.cluster_reply()

    def Stats(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            return pb.StatsReply(json=self.s.stats_json())

    def GetPrediction(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _status(context):
            preds = self.s.predictions
            if preds is None:
                raise KeyNotFoundError("this server keeps no predictions (no model runs here)")
            p = preds.latest(request.model, cv.from_key(request.key))
            return cv.prediction_reply(p, pb.PredictionReply())

    def Subscribe(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with _status(context):
            target = request.WhichOneof("target")
            keys = cv.from_keys(request.keys)
            if target is None:
                raise ConfigError("Subscribe needs a stream (window updates) or a model")
            name = getattr(request, target)
            if target == "stream":
                if name not in self.store.streams:
                    raise StreamNotFoundError(
                        f"no stream {shown(name)}; streams are {list(self.store.streams)}")
                check_rows(request.rows or None)
            elif self.s.predictions is None or name not in self.s.known_models():
                raise KeyNotFoundError(
                    f"no model {shown(name)}; models are {sorted(self.s.known_models())}")
            kind = "window" if target == "stream" else "prediction"
            sub = self.s.feed.subscribe(kind, name, set(keys) or None)
        context.add_callback(sub.wake)
        try:
            yield from self._updates(sub, keys, request.rows, context)
        finally:
            self.s.feed.unsubscribe(sub)

    def _updates(self, sub: Subscription, keys: list[Any], rows: int,
                 context: grpc.ServicerContext) -> Iterator[Any]:
        seq = 0
        stream = sub.name
        if sub.kind == "window":  # the named keys' current state first
            sub.offer([k for k in keys if (stream, k) in self.store])
        elif self.s.predictions is not None and keys:
            have = self.s.predictions.snapshot(stream)
            known = [k for k in keys if k in have]
            sub.offer(known, [have[k] for k in known])
        while context.is_active() and not self.s.stopping:
            left = context.time_remaining()
            changes = sub.take(_POLL_S if left is None else max(0.0, min(_POLL_S, left)))
            for key, item in changes:
                if sub.kind == "window":
                    try:
                        reply = self.s.window_reply(stream, key, rows)
                    except KeyNotFoundError:
                        continue  # evicted or expired since it changed
                    seq += 1
                    yield pb.Update(seq=seq, window=reply)
                elif item is not None:
                    seq += 1
                    yield pb.Update(seq=seq, prediction=cv.prediction_reply(
                        item, pb.PredictionReply()))

    def Push(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        rows = batches = 0
        for req in request_iterator:
            with _status(context, f"push batch {batches}: "):
                keys = cv.from_keys(req.keys)
                values = cv.from_array(req.values, "values")
                ts = cv.from_array(req.ts_ns, "ts_ns") if req.HasField("ts_ns") else None
                rows += self.s.write(req.stream, keys, values, ts)
            batches += 1
        return pb.PushReply(rows=rows, batches=batches)


@contextmanager
def _status(context: grpc.ServicerContext, prefix: str = "") -> Iterator[None]:
    """Translate exceptions into a gRPC status and the ``heimdall-error`` trailer."""
    try:
        yield
    except HeimdallError as exc:
        code = next((c for t, c in _STATUS if isinstance(exc, t)), grpc.StatusCode.INTERNAL)
        trailer = [("heimdall-error", type(exc).__name__)]
        if isinstance(exc, NotOwnerError) and exc.owner:
            trailer.append(("heimdall-owner", exc.owner))
        context.set_trailing_metadata(tuple(trailer))
        context.abort(code, bounded(prefix + str(exc)))
    except (ValueError, TypeError, OverflowError) as exc:  # a malformed request the checks missed
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      bounded(f"{prefix}{type(exc).__name__}: {exc}"))


def bounded(details: str) -> str:
    """An error's message within what gRPC's metadata takes (gRPC's and Flight's), whatever
    the request echoed."""
    if len(details) <= _MAX_DETAILS:
        return details
    return f"{details[:_MAX_DETAILS]}... ({len(details)} characters)"


class _Guard(grpc.ServerInterceptor):  # type: ignore[misc]
    """Every Heimdall call's safety net, outermost: the request is parsed inside the call, so
    bytes that are not the method's message (or hold a string that is not UTF-8) get
    INVALID_ARGUMENT, not grpcio's INTERNAL "Exception deserializing request!"; an exception
    no handler translated gets INTERNAL with its type and a logged traceback, never UNKNOWN.
    Health checks and reflection pass untouched."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.startswith(f"/{SERVICE}/"):
            return handler
        parse = handler.request_deserializer
        method = details.method.rpartition("/")[2]
        if handler.request_streaming:
            inner_s = handler.stream_unary or handler.stream_stream

            def streamed(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
                parsed = (_parse(parse, raw, context, method) for raw in requests)
                return _guarded(inner_s, parsed, context, method)

            kind = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
                    else grpc.stream_unary_rpc_method_handler)
            return kind(streamed, request_deserializer=None,
                        response_serializer=handler.response_serializer)
        inner = handler.unary_unary or handler.unary_stream

        def single(raw: bytes, context: grpc.ServicerContext) -> Any:
            request = _parse(parse, raw, context, method)
            if handler.response_streaming:
                return _guarded_stream(inner, request, context, method)
            return _guarded(inner, request, context, method)

        kind = (grpc.unary_stream_rpc_method_handler if handler.response_streaming
                else grpc.unary_unary_rpc_method_handler)
        return kind(single, request_deserializer=None,
                    response_serializer=handler.response_serializer)


def _parse(parse: Callable[[bytes], Any], raw: bytes, context: grpc.ServicerContext,
           method: str) -> Any:
    try:
        return parse(raw)
    except Exception as exc:  # protobuf's DecodeError, or a string field that is not UTF-8
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"{method}: the request is not a valid {method} message "
                      f"({len(raw)} bytes): {type(exc).__name__}: {bounded(str(exc))}")


def _unhandled(exc: Exception, context: grpc.ServicerContext, method: str) -> None:
    if context.code() is not None:  # aborted on purpose (context.abort raises): as it is
        raise exc
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL,
                  bounded(f"{method}: internal error: {type(exc).__name__}: {exc}"))


def _guarded(fn: Callable[..., Any], request: Any, context: grpc.ServicerContext,
             method: str) -> Any:
    try:
        return fn(request, context)
    except Exception as exc:
        _unhandled(exc, context, method)


def _guarded_stream(fn: Callable[..., Iterator[Any]], request: Any,
                    context: grpc.ServicerContext, method: str) -> Iterator[Any]:
    try:
        yield from fn(request, context)
    except Exception as exc:
        _unhandled(exc, context, method)


class _BearerAuth(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuse every call but health checks unless it carries ``authorization: Bearer <token>``.
    A refused call learns nothing but UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(_HEALTH_PREFIX):
            return handler
        given = [v for k, v in details.invocation_metadata or () if k == "authorization"]
        # exactly one: a right token beside a wrong one is ambiguous, and refused
        if len(given) == 1 and hmac.compare_digest(
                given[0].encode() if isinstance(given[0], str) else given[0], self._expected):
            return handler
        return _refusal(handler)


def _deny(_request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def _refusal(handler: Any) -> Any:
    """A handler of the same kind as ``handler`` that refuses the call."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_deny)
    return grpc.unary_unary_rpc_method_handler(_deny)


def stats_json(stats: dict[str, Any]) -> str:
    """Stats as standard JSON (RFC 8259): a figure that is not a number yet (NaN, an
    infinity) is ``null``, which jq, Go and JavaScript parsers all read."""
    return json.dumps(_json_safe(stats), allow_nan=False)


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars and arrays as numbers and lists, NaN and
    infinities as None, anything else unknown as its str."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)
