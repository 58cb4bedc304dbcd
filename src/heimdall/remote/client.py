"""``hd.connect``: a running Heimdall's windows and predictions, over gRPC.

``RemoteStore`` has the read methods of ``WindowStore`` (``window``, ``windows``,
``aggregate``, ``keys``, ``stats``) and returns the same types, so model code does not know
where its window lives. Arrays are rebuilt with one ``np.frombuffer`` over the reply's bytes
(read-only, owned by the Window: a remote window is always a consistent copy, ``valid`` is
always True). Server-side errors come back as the same exceptions (``KeyNotFoundError``,
``StreamNotFoundError``, ``SchemaError`` ...); a server that cannot be reached raises
``RemoteError``, refused credentials ``AuthError``.

Thread-safe: one ``RemoteStore`` (one HTTP/2 connection) may serve many threads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import grpc
import numpy as np

from heimdall import errors
from heimdall.errors import (
    AuthError,
    ConfigError,
    HeimdallError,
    KeyNotFoundError,
    RemoteError,
    SchemaError,
    shown,
)
from heimdall.models.predictions import Prediction
from heimdall.remote import _convert as cv
from heimdall.remote._pb import heimdall_pb2 as pb
from heimdall.remote._pb import heimdall_pb2_grpc as pb_grpc
from heimdall.window.reader import DEFAULT_AGGREGATES
from heimdall.window.reads import check_rows, check_seconds
from heimdall.window.store import as_ts_ns
from heimdall.window.view import Window, WindowBatch

if TYPE_CHECKING:
    from heimdall.cluster.client import ClusterStore
    from heimdall.remote.flight import FlightStore

# server-side exceptions raised again on the client, by the "heimdall-error" trailer
ERRORS: dict[str, type[errors.HeimdallError]] = {
    cls.__name__: cls
    for cls in (errors.StreamNotFoundError, errors.KeyNotFoundError, errors.SchemaError,
                errors.FieldNotFoundError, errors.ConfigError, errors.CapacityError,
                errors.StaleWindowError, errors.ModelError, errors.HeimdallError)
}
_BY_CODE: dict[grpc.StatusCode, type[errors.HeimdallError]] = {
    grpc.StatusCode.NOT_FOUND: errors.KeyNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: errors.SchemaError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.CapacityError,
}


@dataclass(frozen=True)
class ClientTLS:
    """TLS for ``hd.connect``: ``ca_file`` the CA that signed the server's certificate (None:
    the system's roots), ``cert_file``/``key_file`` this client's certificate when the server
    asks for one, ``server_name`` to check the server's certificate against a name other than
    the address's host."""

    ca_file: str | os.PathLike[str] | None = None
    cert_file: str | os.PathLike[str] | None = None
    key_file: str | os.PathLike[str] | None = None
    server_name: str | None = None

    def pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA, certificate chain, key), each None when not given, read; ConfigError if
        unreadable or if only one of cert_file and key_file is given."""
        def read(path: str | os.PathLike[str] | None) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"TLS: cannot read {exc.filename}: {exc.strerror}") from exc

        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("TLS: give both cert_file and key_file, or neither")
        return read(self.ca_file), read(self.cert_file), read(self.key_file)

    def credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = self.pem()
        return grpc.ssl_channel_credentials(ca, key, cert)


@overload
def connect(address: str, token: str | None = None,
            tls: bool | str | os.PathLike[str] | ClientTLS | None = None, *,
            timeout_s: float = 10.0, max_message_bytes: int = 64 << 20,
            transport: Literal["grpc"] = "grpc") -> RemoteStore: ...


@overload
def connect(address: str, token: str | None = None,
            tls: bool | str | os.PathLike[str] | ClientTLS | None = None, *,
            timeout_s: float = 10.0, max_message_bytes: int = 64 << 20,
            transport: Literal["flight"]) -> FlightStore: ...


@overload
def connect(address: list[str] | tuple[str, ...], token: str | None = None,
            tls: bool | str | os.PathLike[str] | ClientTLS | None = None, *,
            timeout_s: float = 10.0, max_message_bytes: int = 64 << 20,
            transport: Literal["grpc"] = "grpc") -> ClusterStore: ...


def connect(
    address: str | list[str] | tuple[str, ...],
    token: str | None = None,
    tls: bool | str | os.PathLike[str] | ClientTLS | None = None,
    *,
    timeout_s: float = 10.0,
    max_message_bytes: int = 64 << 20,
    transport: Literal["grpc", "flight"] = "grpc",
) -> RemoteStore | ClusterStore | FlightStore:
    """Connect to a Heimdall gRPC server at ``host:port``; wait until it answers. A list of
    addresses connects to a cluster (``ClusterStore``: the same read methods, each key read
    from its node; one address of the list is enough, the nodes name the others).

    ``transport="flight"``: ``address`` is the server's Arrow Flight endpoint (``[server]
    flight``) and the reader a ``FlightStore``: the same read methods, multi-key reads as
    Arrow record batches (docs/remote.md). ``token``: the server's bearer token. ``tls``:
    True (the system's CA roots), a CA file's path, or a ``ClientTLS``. ``timeout_s``: for
    connecting and the deadline of each call. Raises ``RemoteError`` if the server cannot be
    reached within ``timeout_s``, or (a cluster) if no address answers as a Heimdall node.
    """
    if transport == "flight":
        if not isinstance(address, str):
            raise ConfigError("transport='flight' reads one node: give its Flight address "
                              "(a cluster's nodes are read over gRPC)")
        from heimdall.remote.flight import FlightStore

        return FlightStore(address, token=token, tls=tls, timeout_s=timeout_s)
    if transport != "grpc":
        raise ConfigError(f"transport is 'grpc' or 'flight'; received {transport!r}")
    if not isinstance(address, str):
        from heimdall.cluster.client import ClusterStore

        return ClusterStore(list(address), token=token, tls=tls, timeout_s=timeout_s)
    return RemoteStore(address, token=token, tls=tls, timeout_s=timeout_s,
                       max_message_bytes=max_message_bytes)


class RemoteStore:
    """The read methods of ``WindowStore``, and predictions, Subscribe and Push, over gRPC."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: bool | str | os.PathLike[str] | ClientTLS | None = None,
        timeout_s: float = 10.0,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        if not isinstance(address, str) or ":" not in address:
            raise ConfigError(f"address must be 'host:port'; received {address!r}")
        self.address = address
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 0),  # no retry policy is configured; saves ~10% per call
        ]
        if tls is None or tls is False:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            spec = tls if isinstance(tls, ClientTLS) else ClientTLS(None if tls is True else tls)
            if spec.server_name:
                options.append(("grpc.ssl_target_name_override", spec.server_name))
            self._channel = grpc.secure_channel(address, spec.credentials(), options=options)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise RemoteError(f"cannot reach a Heimdall gRPC server at {address} within "
                              f"{timeout_s} s", "UNAVAILABLE") from None
        self._stub = pb_grpc.HeimdallStub(self._channel)

    # ---- reads, as WindowStore ---------------------------------------------------------------

    def window(self, stream: str, key: str | int) -> Window:
        """The key's window: an owned, consistent copy (``valid`` is always True)."""
        req = pb.GetWindowRequest(stream=stream)
        cv.to_key(key, req.key)
        with self._translate():
            reply = self._stub.GetWindow(req, timeout=self.timeout_s, metadata=self._metadata)
        return cv.window_from(reply)

    def windows(self, stream: str, keys: Sequence[str | int], *, rows: int | None = None,
                seconds: float | None = None) -> WindowBatch:
        """Consistent copies of many keys' windows, as ``WindowStore.windows``."""
        check_rows(rows)
        check_seconds(seconds)
        key_list = list(keys)
        req = pb.GetWindowsRequest(stream=stream, rows=rows or 0, seconds=seconds or 0.0)
        cv.add_keys(key_list, req.keys)
        with self._translate():
            reply = self._stub.GetWindows(req, timeout=self.timeout_s, metadata=self._metadata)
        return cv.batch_from(reply, key_list)

    def aggregate(
        self,
        stream: str,
        keys: str | int | Sequence[str | int],
        aggs: Iterable[str] = DEFAULT_AGGREGATES,
        *,
        rows: int | None = None,
        seconds: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-field aggregates, as ``WindowStore.aggregate``."""
        check_rows(rows)
        check_seconds(seconds)
        single = isinstance(keys, (str, int))
        names = [aggs] if isinstance(aggs, str) else list(aggs)
        req = pb.AggregateRequest(stream=stream, aggs=names, rows=rows or 0,
                                  seconds=seconds or 0.0, single=single)
        cv.add_keys([keys] if isinstance(keys, (str, int)) else keys, req.keys)
        with self._translate():
            reply = self._stub.Aggregate(req, timeout=self.timeout_s, metadata=self._metadata)
        return {name: cv.from_array(reply.values[name], name) for name in names}

    def keys(self, stream: str) -> list[Any]:
        """The keys the stream holds now."""
        with self._translate():
            reply = self._stub.ListKeys(pb.ListKeysRequest(stream=stream),
                                        timeout=self.timeout_s, metadata=self._metadata)
        return cv.from_keys(reply.keys)

    def __contains__(self, item: tuple[str, Any]) -> bool:
        stream, key = item
        try:
            self.aggregate(stream, key, ["count"])
        except KeyNotFoundError as exc:
            if isinstance(exc, errors.StreamNotFoundError):
                raise
            return False
        return True

    def stats(self) -> dict[str, Any]:
        """The server's store stats, as ``WindowStore.stats``."""
        result: dict[str, Any] = self.server_stats()["store"]
        return result

    def server_stats(self) -> dict[str, Any]:
        """Everything the server reports: ``store``, and ``ingest`` and ``models`` when a
        pipeline runs there (as ``Pipeline.stats``)."""
        with self._translate():
            reply = self._stub.Stats(pb.StatsRequest(), timeout=self.timeout_s,
                                     metadata=self._metadata)
        result: dict[str, Any] = json.loads(reply.json)
        return result

    # ---- predictions, subscribe, push --------------------------------------------------------

    def prediction(self, model: str, key: str | int) -> Prediction:
        """The newest prediction of ``model`` for ``key`` (KeyNotFoundError if none yet)."""
        req = pb.GetPredictionRequest(model=model)
        cv.to_key(key, req.key)
        with self._translate():
            reply = self._stub.GetPrediction(req, timeout=self.timeout_s,
                                             metadata=self._metadata)
        return cv.prediction_from(reply)

    def subscribe(self, stream: str | None = None, *, model: str | None = None,
                  keys: Sequence[str | int] = (), rows: int | None = None,
                  timeout_s: float | None = None) -> RemoteSubscription:
        """Window updates of ``stream`` (or predictions of ``model``) for ``keys`` (all keys
        if empty), as they happen: iterate it; ``close()`` ends it. Named keys' current
        windows (newest predictions) come first. A slow reader gets each key's newest state,
        never an older one after a newer one. ``timeout_s``: end the stream after that long
        (default: never)."""
        if (stream is None) == (model is None):
            raise ConfigError("subscribe to a stream or a model (one of them)")
        check_rows(rows)
        req = pb.SubscribeRequest(rows=rows or 0)
        if stream is not None:
            req.stream = stream
        else:
            req.model = model  # type: ignore[assignment]
        cv.add_keys(keys, req.keys)
        call = self._stub.Subscribe(req, timeout=timeout_s, metadata=self._metadata)
        return RemoteSubscription(call, self)

    def push(self, stream: str, keys: Sequence[str | int], values: Any,
             ts_ns: Any = None) -> int:
        """Write rows into the server's store (as ``WindowStore.append_batch``); returns the
        rows written. For many batches, ``push_batches`` keeps one call open."""
        return self.push_batches([(stream, keys, values, ts_ns)])

    def push_batches(self, batches: Iterable[tuple[str, Sequence[str | int], Any, Any]]) -> int:
        """Stream batches of (stream, keys, values, ts_ns or None) in one call; returns the
        rows written. A batch the server refuses raises (SchemaError ...) naming its index;
        the batches before it are written."""
        requests = _PushRequests(batches)
        with self._translate():
            reply = self._stub.Push(requests, timeout=None, metadata=self._metadata)
        if requests.error is not None:
            raise requests.error
        return int(reply.rows)

    def cluster_info(self) -> Any:
        """Which node holds which keys (a ``ClusterInfoReply``): the nodes, their addresses
        and per stream their key-hash ranges. Raises RemoteError if the server is not a
        Heimdall that knows the call."""
        with self._translate():
            try:
                return self._stub.ClusterInfo(pb.ClusterInfoRequest(), timeout=self.timeout_s,
                                              metadata=self._metadata)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise RemoteError(f"{self.address} answers gRPC but is not a Heimdall "
                                      f"node (no heimdall.v1.Heimdall/ClusterInfo)",
                                      "UNIMPLEMENTED") from exc
                raise

    def health(self) -> str:
        """The server's health status: "SERVING" or "NOT_SERVING"."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        with self._translate():
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""),
                               timeout=self.timeout_s)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    # ---- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._channel.close()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteStore {self.address}>"

    @contextmanager
    def _translate(self) -> Iterator[None]:
        with translate_errors(self.address):
            yield


class RemoteSubscription:
    """An open Subscribe call: iterate for ``Window`` (or ``Prediction``) updates."""

    def __init__(self, call: Any, store: RemoteStore) -> None:
        self._call = call
        self._store = store
        self.seq = 0

    def __iter__(self) -> Iterator[Window | Prediction]:
        return self

    def __next__(self) -> Window | Prediction:
        with self._store._translate():
            try:
                update = next(self._call)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise StopIteration from None
                raise
        self.seq = update.seq
        if update.WhichOneof("item") == "window":
            return cv.window_from(update.window)
        return cv.prediction_from(update.prediction)

    def close(self) -> None:
        """End the call (the server stops sending). Idempotent."""
        self._call.cancel()

    def __enter__(self) -> RemoteSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PushRequests:
    """The Push call's request stream, built batch by batch as grpcio pulls it. A batch that
    cannot be sent (values that are not numbers, a key neither str nor int ...) ends the
    stream and is kept in ``error``, raised once the call is over: grpcio would otherwise
    turn it into UNKNOWN "Exception iterating requests!"."""

    def __init__(self, batches: Iterable[tuple[str, Sequence[str | int], Any, Any]]) -> None:
        self._batches = iter(batches)
        self.error: HeimdallError | None = None
        self._index = 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self.error is not None:
            raise StopIteration
        try:
            req = _push_request(*next(self._batches))
        except StopIteration:
            raise
        except HeimdallError as exc:
            self.error = type(exc)(f"push batch {self._index}: {exc}")
            raise StopIteration from None
        except (TypeError, ValueError) as exc:  # a batch that is not (stream, keys, values, ts)
            self.error = SchemaError(f"push batch {self._index}: {type(exc).__name__}: {exc}")
            raise StopIteration from None
        self._index += 1
        return req


def _push_request(stream: str, keys: Sequence[str | int], values: Any, ts_ns: Any) -> Any:
    if not isinstance(stream, str):
        raise SchemaError(f"a stream name is a str; received {shown(stream)}")
    req = pb.PushRequest(stream=stream)
    cv.add_keys(keys, req.keys)
    try:
        arr = np.asarray(values)
    except ValueError as exc:
        raise SchemaError(f"stream {stream!r}: values are not a rectangular array: "
                          f"{exc}") from None
    if arr.dtype.kind not in "biuf":
        raise SchemaError(f"stream {stream!r}: values must be numbers; received an array "
                          f"of {arr.dtype} ({shown(arr.ravel()[:3].tolist())} ...)")
    if arr.dtype.name not in cv.DTYPES:
        arr = arr.astype(np.float64)
    cv.to_array(np.ascontiguousarray(arr), req.values)
    if ts_ns is not None:  # checked as the store checks it: refused here by name
        cv.to_array(as_ts_ns(stream, ts_ns, len(req.keys)), req.ts_ns)
    return req


@contextmanager
def translate_errors(address: str) -> Iterator[None]:
    """Raise a failed call's status as the Heimdall exception it stands for."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code()
        details = exc.details() or code.name
        trailer = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") \
            else {}
        name = str(trailer.get("heimdall-error", ""))
        if name == "NotOwnerError":
            owner = trailer.get("heimdall-owner")
            raise errors.NotOwnerError(details, str(owner) if owner else None) from exc
        cls = ERRORS.get(name)
        if cls is not None:
            raise cls(details) from exc
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise AuthError(f"heimdall at {address} refused the call: {details}") from exc
        by_code = _BY_CODE.get(code)
        if by_code is not None:
            raise by_code(details) from exc
        raise RemoteError(f"heimdall at {address}: {code.name}: {details}", code.name) from exc
