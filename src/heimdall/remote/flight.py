"""Arrow Flight: windows in bulk, as Arrow record batches any language's Flight client reads.

``FlightServer(store, ...)`` serves a store beside the gRPC API (``[server] flight =
"host:port"`` in ``heimdall serve``), with the same bearer token and TLS settings and the same
refusals. ``hd.connect(address, transport="flight")`` returns a ``FlightStore``: the reader
contract (``hd.WindowReader``) over Flight, its ``WindowBatch`` built from the Arrow buffers
without a Python object per value.

**Tickets** are JSON: ``{"stream": "sensors", "keys": ["m-1", 7], "rows": 64, "seconds":
30.0}``; without ``keys``, every key the node holds. ``do_get`` streams record batches of at
most ``KEYS_PER_BATCH`` keys, one row per key asked for:

- ``key``: utf8, or int64 when every key of the reply is an int (a reply mixing both gives
  ints as decimal strings);
- ``found``: bool (False: the node holds no such key; length 0, all padding);
- ``length``: int64, the key's real rows;
- ``ts_ns``: fixed_size_list<int64>[W], event times, right-aligned, 0 in the padding;
- ``window``: Arrow's canonical fixed-shape tensor extension (``arrow.fixed_shape_tensor``)
  of the stream's dtype and shape [W, F], row-major, right-aligned, 0 in the padding.

The schema's metadata holds ``heimdall.stream`` and ``heimdall.fields`` (a JSON list).
``list_flights`` lists the streams, each with its schema; ``get_flight_info`` of a stream (a
path descriptor) or a ticket (a command descriptor) names the endpoint to read it from; on a
node of a cluster, a stream's info names every node's endpoint, each with the ticket of all
the keys that node holds. Actions
(``do_action``, JSON bodies): ``keys`` ``{"stream"}`` -> a JSON list; ``stats`` -> the JSON of
the gRPC Stats call; ``aggregate`` ``{"stream", "keys", "aggs", "rows", "seconds"}`` -> an
Arrow IPC stream with a fixed_size_list[F] column per aggregate (int64 for ``count``, float64
for the others), a row per key.

Errors carry the Heimdall exception's name in ``extra_info`` (a bad ticket ``SchemaError``, an
unknown stream ``StreamNotFoundError``, a reply over the limit ``CapacityError``); a missing or
wrong token is ``FlightUnauthenticatedError``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl

from heimdall.errors import (
    AuthError,
    CapacityError,
    ConfigError,
    HeimdallError,
    KeyNotFoundError,
    NotOwnerError,
    RemoteError,
    SchemaError,
    StreamNotFoundError,
    shown,
)
from heimdall.remote.client import ERRORS
from heimdall.remote.server import bounded, stats_json
from heimdall.window import WindowStore
from heimdall.window.reader import DEFAULT_AGGREGATES
from heimdall.window.reads import check_rows, check_seconds
from heimdall.window.view import Window, WindowBatch

log = logging.getLogger("heimdall.remote")

KEYS_PER_BATCH = 512
_TICKET_FIELDS = {"stream", "keys", "rows", "seconds"}


# ---- the wire format, both sides ------------------------------------------------------------


def batch_schema(stream: str, fields: Sequence[str], dtype: np.dtype[Any], W: int,
                 int_keys: bool) -> pa.Schema:
    """The schema of ``do_get``'s record batches for a stream (see the module docstring)."""
    return pa.schema(
        [pa.field("key", pa.int64() if int_keys else pa.utf8(), nullable=False),
         pa.field("found", pa.bool_(), nullable=False),
         pa.field("length", pa.int64(), nullable=False),
         pa.field("ts_ns", pa.list_(pa.int64(), W), nullable=False),
         pa.field("window", pa.fixed_shape_tensor(pa.from_numpy_dtype(dtype), [W, len(fields)]),
                  nullable=False)],
        metadata={"heimdall.stream": stream, "heimdall.fields": json.dumps(list(fields))})


def to_record_batch(batch: WindowBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A ``WindowBatch`` as one record batch of ``schema``: the numpy buffers wrapped, not
    copied (the window tensor and the times are views of the batch's arrays)."""
    W = batch.ts_ns.shape[1]
    int_keys = pa.types.is_integer(schema.field("key").type)
    keys = batch.keys if int_keys else [k if isinstance(k, str) else str(k) for k in batch.keys]
    ts = pa.FixedSizeListArray.from_arrays(_wrap(batch.ts_ns, pa.int64()), W)
    tensor_type = schema.field("window").type
    storage = pa.FixedSizeListArray.from_arrays(_wrap(batch.values, tensor_type.value_type),
                                                tensor_type.storage_type.list_size)
    window = pa.ExtensionArray.from_storage(tensor_type, storage)
    return pa.RecordBatch.from_arrays(
        [pa.array(keys, schema.field("key").type), pa.array(batch.found, pa.bool_()),
         pa.array(batch.lengths, pa.int64()), ts, window], schema=schema)


def _wrap(a: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A flat Arrow array over a numpy array's memory (no copy: ``pa.array`` of a numpy array
    copies it into Arrow's pool, fresh pages a call on a server thread, ~2 ms a MiB here)."""
    a = np.ascontiguousarray(a)
    return pa.Array.from_buffers(kind, a.size, [None, pa.py_buffer(a)])


def from_table(table: pa.Table, stream: str, keys: list[Any]) -> WindowBatch:
    """The ``WindowBatch`` of a ``do_get`` reply (one copy at most: a reply of several record
    batches is made one array)."""
    fields = tuple(json.loads((table.schema.metadata or {}).get(b"heimdall.fields", b"[]")))
    W = table.schema.field("ts_ns").type.list_size

    def column(name: str) -> Any:  # one batch (up to 512 keys): its array, not a copy
        col = table.column(name)
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()

    window = column("window")
    values = window.to_numpy_ndarray() if len(window) else np.empty(
        (0, W, len(fields)), window.type.value_type.to_pandas_dtype())
    ts = column("ts_ns").flatten().to_numpy().reshape(-1, W)
    lengths = column("length").to_numpy()
    found = column("found").to_numpy(zero_copy_only=False)
    return WindowBatch(stream, keys, fields, values, ts, lengths, found)


def _ticket(stream: str, keys: list[Any] | None, rows: int | None,
            seconds: float | None) -> bytes:
    t: dict[str, Any] = {"stream": stream}
    if keys is not None:
        t["keys"] = keys
    if rows:
        t["rows"] = rows
    if seconds:
        t["seconds"] = seconds
    return json.dumps(t).encode()


# ---- the server -----------------------------------------------------------------------------


class _Auth(fl.ServerMiddlewareFactory):  # type: ignore[misc]
    """Every call needs exactly one ``authorization: Bearer <token>`` header (as gRPC)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> None:
        given = headers.get("authorization", [])
        if len(given) == 1:
            value = given[0].encode() if isinstance(given[0], str) else given[0]
            if hmac.compare_digest(value, self._expected):
                return
        raise fl.FlightUnauthenticatedError("missing or invalid bearer token")


def _refuse(exc: BaseException) -> fl.FlightError:
    """A Heimdall exception (or a malformed request's) as the Flight error a client reads."""
    if isinstance(exc, HeimdallError):
        name, text = type(exc).__name__, str(exc)
    else:
        name, text = "SchemaError", f"{type(exc).__name__}: {exc}"
    return fl.FlightServerError(bounded(text), extra_info=name.encode())


class FlightServer(fl.FlightServerBase):  # type: ignore[misc]
    """Serves ``store`` over Arrow Flight on ``address`` (port 0: a free one; ``port`` says).

    ``token`` and ``tls`` (a ``ServerTLS``) as the gRPC server's. ``max_reply_bytes`` bounds
    one ``do_get`` (keys x W x (F x itemsize + 8)): a larger ticket is refused with
    CapacityError before anything is read. ``check_owner(stream, keys)``: a cluster node's
    refusal of keys another node owns (NotOwnerError). ``stats()``: the JSON of ``stats``.
    ``locations()``: a cluster's nodes' Flight locations: a stream's flight info then names
    an endpoint per node, each ticket reading the keys that node holds."""

    def __init__(self, store: WindowStore, address: str = "127.0.0.1:0", *,
                 token: str | None = None, tls: Any = None,
                 max_reply_bytes: int = 256 << 20,
                 check_owner: Callable[[str, Sequence[Any]], None] | None = None,
                 stats: Callable[[], str] | None = None,
                 locations: Callable[[], list[str]] | None = None) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"server.flight must be 'host:port'; received {address!r}")
        scheme = "grpc+tls" if tls is not None else "grpc"
        kwargs: dict[str, Any] = {}
        if tls is not None:
            cert, key, ca = tls.pem()
            kwargs.update(tls_certificates=[fl.CertKeyPair(cert, key)],
                          verify_client=ca is not None, root_certificates=ca)
        if token:
            kwargs["middleware"] = {"auth": _Auth(token)}
        try:
            super().__init__(f"{scheme}://{host}:{port}", **kwargs)
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(f"server.flight: cannot bind {address!r}: {exc}") from exc
        self.store = store
        self.host = host
        self.location = f"{scheme}://{host}:{self.port}"
        self.max_reply_bytes = max_reply_bytes
        self._check_owner = check_owner
        self._stats = stats or (lambda: stats_json({"store": store.stats()}))
        self._locations = locations
        self._serving = True
        log.info("Arrow Flight on %s:%d%s%s", host, self.port, " (TLS)" if tls else "",
                 " (token)" if token else "")

    def start(self) -> FlightServer:
        """Serving starts at construction; this is for symmetry with ``GrpcServer``. (The
        base class's ``serve()`` is not called: it takes over SIGINT and SIGTERM, which are
        Heimdall's to turn into an orderly stop.)"""
        self._serving = True
        return self

    def stop(self) -> None:
        """Stop serving: calls in flight end. Idempotent."""
        if self._serving:
            self._serving = False
            self.shutdown()

    # ---- Flight methods ----------------------------------------------------------------------

    def list_flights(self, context: Any, criteria: bytes) -> Iterator[fl.FlightInfo]:
        for name in self.store.streams:
            yield self._info(fl.FlightDescriptor.for_path(name), name)

    def get_flight_info(self, context: Any, descriptor: fl.FlightDescriptor) -> fl.FlightInfo:
        try:
            if descriptor.descriptor_type == fl.DescriptorType.PATH:
                if len(descriptor.path) != 1:
                    raise SchemaError("a path descriptor names one stream")
                return self._info(descriptor, descriptor.path[0].decode())
            t = self._parse(descriptor.command)
            return self._info(descriptor, t["stream"], descriptor.command)
        except (HeimdallError, ValueError, TypeError) as exc:
            raise _refuse(exc) from None

    def do_get(self, context: Any, ticket: fl.Ticket) -> fl.GeneratorStream:
        try:
            t = self._parse(ticket.ticket)
            stream, rows, seconds = t["stream"], t.get("rows"), t.get("seconds")
            keys = t["keys"] if "keys" in t else self.store.keys(stream)
            if self._check_owner is not None and "keys" in t:
                self._check_owner(stream, keys)
            spec = self.store.streams[stream]
            W = min(rows or spec.window.rows, spec.window.rows)
            size = len(keys) * W * (len(spec.fields) * np.dtype(spec.dtype).itemsize + 8)
            if size > self.max_reply_bytes:
                raise CapacityError(
                    f"stream {stream!r}: {len(keys)} keys x {W} rows would be a {size}-byte "
                    f"reply; the limit is {self.max_reply_bytes} bytes: ask for fewer keys or "
                    f"rows")
            int_keys = bool(keys) and all(type(k) is int for k in keys)
            schema = batch_schema(stream, spec.fields, np.dtype(spec.dtype), W, int_keys)
        except (HeimdallError, ValueError, TypeError, OverflowError) as exc:
            raise _refuse(exc) from None

        def batches() -> Iterator[pa.RecordBatch]:
            for a in range(0, len(keys), KEYS_PER_BATCH):
                batch = self.store.windows(stream, keys[a:a + KEYS_PER_BATCH], rows=rows,
                                           seconds=seconds)
                yield to_record_batch(batch, schema)

        return fl.GeneratorStream(schema, batches())

    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return [("keys", "the keys a stream holds: {\"stream\"} -> a JSON list"),
                ("stats", "the store's (and pipeline's) stats as JSON"),
                ("aggregate", "{\"stream\", \"keys\", \"aggs\", \"rows\", \"seconds\"} -> "
                              "Arrow IPC, a fixed_size_list[F] column per aggregate")]

    def do_action(self, context: Any, action: fl.Action) -> Iterator[bytes]:
        try:
            body = json.loads(action.body.to_pybytes() or b"{}")
            if not isinstance(body, dict):
                raise SchemaError("an action's body is a JSON object")
            if action.type == "stats":
                return iter([self._stats().encode()])
            stream = body.get("stream")
            if not isinstance(stream, str):
                raise SchemaError(f"action {action.type!r} needs \"stream\": a name")
            if action.type == "keys":
                return iter([json.dumps(self.store.keys(stream)).encode()])
            if action.type == "aggregate":
                return iter([self._aggregate(stream, body)])
            raise SchemaError(f"no action {shown(action.type)}; actions are keys, stats, "
                              f"aggregate")
        except (HeimdallError, ValueError, TypeError, OverflowError) as exc:
            raise _refuse(exc) from None

    # ---- helpers -----------------------------------------------------------------------------

    def _info(self, descriptor: fl.FlightDescriptor, stream: str,
              ticket: bytes | None = None) -> fl.FlightInfo:
        spec = self.store.streams.get(stream)
        if spec is None:
            raise StreamNotFoundError(f"no stream {shown(stream)}; streams are "
                                      f"{list(self.store.streams)}")
        schema = batch_schema(stream, spec.fields, np.dtype(spec.dtype), spec.window.rows,
                              False)
        if ticket is None and self._locations is not None:
            # a cluster: every node holds its own keys; read each where it is
            all_keys = _ticket(stream, None, None, None)
            endpoints = [fl.FlightEndpoint(all_keys, [loc]) for loc in self._locations()]
        else:
            endpoints = [fl.FlightEndpoint(ticket or _ticket(stream, None, None, None),
                                           [self.location])]
        return fl.FlightInfo(schema, descriptor, endpoints, -1, -1)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        """A ticket, checked: SchemaError saying what is wrong with it."""
        try:
            t = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise SchemaError(f"a ticket is a JSON object ({{\"stream\": ..., \"keys\": "
                              f"[...]}}); received {shown(raw[:64])}") from None
        if not isinstance(t, dict):
            raise SchemaError(f"a ticket is a JSON object; received {shown(t)}")
        unknown = set(t) - _TICKET_FIELDS
        if unknown:
            raise SchemaError(f"a ticket has no field(s) {sorted(unknown)}; fields are "
                              f"{sorted(_TICKET_FIELDS)}")
        if not isinstance(t.get("stream"), str):
            raise SchemaError("a ticket needs \"stream\": a stream's name")
        if t["stream"] not in self.store.streams:
            raise StreamNotFoundError(f"no stream {shown(t['stream'])}; streams are "
                                      f"{list(self.store.streams)}")
        if "keys" in t:
            keys = t["keys"]
            if not isinstance(keys, list) or not all(
                    isinstance(k, (str, int)) and not isinstance(k, bool) for k in keys):
                raise SchemaError("a ticket's \"keys\" is a list of strings and integers")
        for name, kind in (("rows", int), ("seconds", (int, float))):
            v = t.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, kind) or v <= 0
                                  or (isinstance(v, float) and not math.isfinite(v))):
                raise SchemaError(f"a ticket's {name!r} is a number > 0; received {shown(v)}")
        return t

    def _aggregate(self, stream: str, body: dict[str, Any]) -> bytes:
        keys: Any = body.get("keys")
        single = isinstance(keys, (str, int)) and not isinstance(keys, bool)
        if not single and not (isinstance(keys, list) and all(
                isinstance(k, (str, int)) and not isinstance(k, bool) for k in keys)):
            raise SchemaError("aggregate needs \"keys\": a key, or a list of keys")
        aggs = body.get("aggs") or list(DEFAULT_AGGREGATES)
        if self._check_owner is not None:
            self._check_owner(stream, [keys] if single else keys)
        out = self.store.aggregate(stream, keys, aggs, rows=body.get("rows"),
                                   seconds=body.get("seconds"))
        cols = {}
        for name, arr in out.items():
            a = np.atleast_2d(np.asarray(arr))
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
        table = pa.table(cols)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return bytes(sink.getvalue())


# ---- the client -----------------------------------------------------------------------------


class FlightStore:
    """The reader contract (``hd.WindowReader``) over Arrow Flight: ``windows`` is one
    ``do_get``, its ``WindowBatch`` made from the Arrow buffers (the window tensor as one
    (B, W, F) array, no Python object per value). ``hd.connect(address, transport="flight")``
    makes one."""

    def __init__(self, address: str, *, token: str | None = None, tls: Any = None,
                 timeout_s: float = 10.0) -> None:
        if not isinstance(address, str) or ":" not in address:
            raise ConfigError(f"address must be 'host:port'; received {address!r}")
        self.address = address
        self.timeout_s = timeout_s
        kwargs: dict[str, Any] = {}
        scheme = "grpc"
        if tls:
            scheme = "grpc+tls"
            kwargs.update(_client_tls(tls))
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        self._options = fl.FlightCallOptions(timeout=timeout_s, headers=headers)
        try:
            self._client = fl.FlightClient(f"{scheme}://{address}", **kwargs)
            self._client.wait_for_available(timeout=timeout_s)
        except fl.FlightUnauthenticatedError:
            pass  # the server answers; the calls will say the token is refused
        except (fl.FlightError, pa.ArrowException, OSError) as exc:
            raise RemoteError(f"heimdall Flight at {address} cannot be reached: "
                              f"{_message(exc)}", "UNAVAILABLE") from None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> FlightStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def windows(self, stream: str, keys: Sequence[str | int], *, rows: int | None = None,
                seconds: float | None = None) -> WindowBatch:
        """Consistent copies of many keys' windows, as ``WindowStore.windows``."""
        check_rows(rows)
        check_seconds(seconds)
        key_list = list(keys)
        for k in key_list:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise SchemaError(f"a key is a str or an int; received {shown(k)} "
                                  f"({type(k).__name__})")
        table = self.read(_ticket(stream, key_list, rows, seconds))
        return from_table(table, stream, key_list)

    def read(self, ticket: bytes) -> pa.Table:
        """The reply to a raw ticket, as one table."""
        try:
            return self._client.do_get(fl.Ticket(ticket), self._options).read_all()
        except (fl.FlightError, pa.ArrowException) as exc:
            raise self._error(exc) from None

    def window(self, stream: str, key: str | int) -> Window:
        """The key's window (an owned copy, as any remote read)."""
        b = self.windows(stream, [key])
        if not b.found[0]:
            raise KeyNotFoundError(f"stream {stream!r} holds no key {shown(key)}")
        n = int(b.lengths[0])
        W = b.values.shape[1]
        values, ts = b.values[0, W - n:], b.ts_ns[0, W - n:]
        values.flags.writeable = False
        ts.flags.writeable = False
        return Window(stream, key, b.fields, values, ts)

    def aggregate(self, stream: str, keys: str | int | Sequence[str | int],
                  aggs: Iterable[str] = DEFAULT_AGGREGATES, *, rows: int | None = None,
                  seconds: float | None = None) -> dict[str, np.ndarray]:
        """Per-field aggregates, as ``WindowStore.aggregate``."""
        check_rows(rows)
        check_seconds(seconds)
        single = isinstance(keys, (str, int))
        names = [aggs] if isinstance(aggs, str) else list(aggs)
        asked: Any = keys if isinstance(keys, (str, int)) else list(keys)
        body = {"stream": stream, "keys": asked, "aggs": names,
                "rows": rows, "seconds": seconds}
        table = pa.ipc.open_stream(self._action("aggregate", body)).read_all()
        out = {}
        for name in names:
            col = table.column(name).combine_chunks()
            a = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
            out[name] = a[0] if single else a
        return out

    def keys(self, stream: str) -> list[Any]:
        """The keys the stream holds now."""
        keys: list[Any] = json.loads(self._action("keys", {"stream": stream}))
        return keys

    def __contains__(self, item: tuple[str, Any]) -> bool:
        stream, key = item
        return bool(self.windows(stream, [key]).found[0])

    def stats(self) -> dict[str, Any]:
        """The server's store stats, as ``WindowStore.stats``."""
        result: dict[str, Any] = json.loads(self._action("stats", {}))["store"]
        return result

    def streams(self) -> dict[str, pa.Schema]:
        """The streams the server lists (``list_flights``), with their record batch schema."""
        try:
            return {f.descriptor.path[0].decode(): f.schema
                    for f in self._client.list_flights(b"", self._options)}
        except (fl.FlightError, pa.ArrowException) as exc:
            raise self._error(exc) from None

    def _action(self, name: str, body: dict[str, Any]) -> bytes:
        try:
            results = list(self._client.do_action(
                fl.Action(name, json.dumps(body).encode()), self._options))
        except (fl.FlightError, pa.ArrowException) as exc:
            raise self._error(exc) from None
        return b"".join(r.body.to_pybytes() for r in results)

    def _error(self, exc: BaseException) -> Exception:
        text = _message(exc)
        if isinstance(exc, fl.FlightUnauthenticatedError):
            return AuthError(f"heimdall Flight at {self.address} refused the call: {text}")
        name = (getattr(exc, "extra_info", b"") or b"").decode(errors="replace")
        if name == "NotOwnerError":
            return NotOwnerError(text)
        cls = ERRORS.get(name)  # the gRPC client's: the same errors by name
        if cls is not None:
            return cls(text)
        if isinstance(exc, fl.FlightUnavailableError):
            return RemoteError(f"heimdall Flight at {self.address}: UNAVAILABLE: {text}",
                               "UNAVAILABLE")
        return RemoteError(f"heimdall Flight at {self.address}: {text}", "UNKNOWN")


def _message(exc: BaseException) -> str:
    """A Flight error's own message, without the client's debug context."""
    return str(exc).split(". Detail:", 1)[0].split(". gRPC client debug context", 1)[0]


def _client_tls(tls: Any) -> dict[str, Any]:
    """pyarrow.flight's client TLS arguments for ``connect``'s ``tls``."""
    from heimdall.remote.client import ClientTLS

    if tls is True:
        return {}
    ca, cert, key = (tls if isinstance(tls, ClientTLS) else ClientTLS(ca_file=tls)).pem()
    kwargs: dict[str, Any] = {}
    if ca is not None:
        kwargs["tls_root_certs"] = ca
    if cert is not None:
        kwargs.update(cert_chain=cert, private_key=key)
    if isinstance(tls, ClientTLS) and tls.server_name:
        kwargs["override_hostname"] = tls.server_name
    return kwargs
