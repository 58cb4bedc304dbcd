"""Arrow Flight under hostile and ordinary use: bad tickets, no or wrong token, a client that
drops mid-stream, TLS; the server serves others after each; a pipeline's Flight reads the
same windows as its gRPC."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as fl
import pytest

import heimdall as hd
from heimdall.remote.flight import FlightServer, FlightStore

from .test_remote import certs  # noqa: F401  (the fixture)


def _store(keys: int = 40) -> hd.WindowStore:
    store = hd.WindowStore([hd.StreamSpec("s", fields=["a", "b"], window=hd.CountWindow(8)),
                            hd.StreamSpec("t", fields=["x"], dtype="int32",
                                          window=hd.CountWindow(4))], max_keys=4096)
    rng = np.random.default_rng(0)
    names = [f"k{i}" for i in range(keys)]
    store.append_batch("s", names * 5, rng.normal(size=(keys * 5, 2)),
                       np.arange(keys * 5, dtype=np.int64))
    store.append_batch("t", [1, 2, 2], np.array([[1], [2], [3]], np.int32), np.arange(3))
    return store


def _good(reader: FlightStore, store: hd.WindowStore) -> None:
    """The server still answers right."""
    want = store.windows("s", ["k1", "k2", "nope"])
    got = reader.windows("s", ["k1", "k2", "nope"])
    assert np.array_equal(got.values, want.values)
    assert got.found.tolist() == [True, True, False]


def test_bad_tickets_are_refused_clearly_and_the_server_goes_on() -> None:
    store = _store()
    server = FlightServer(store, max_reply_bytes=1 << 20).start()
    reader = hd.connect(f"127.0.0.1:{server.port}", transport="flight")
    try:
        cases: list[tuple[bytes, type[Exception], str]] = [
            (b"\x00\xff garbage", hd.SchemaError, "a ticket is a JSON object"),
            (b"[1, 2]", hd.SchemaError, "a ticket is a JSON object"),
            (b'{"keys": ["a"]}', hd.SchemaError, "needs \"stream\""),
            (b'{"stream": "nope"}', hd.StreamNotFoundError, "no stream 'nope'"),
            (b'{"stream": "s", "rows": -3}', hd.SchemaError, "'rows' is a number > 0"),
            (b'{"stream": "s", "rows": 2.5}', hd.SchemaError, "'rows' is a number > 0"),
            (b'{"stream": "s", "seconds": "x"}', hd.SchemaError, "'seconds'"),
            (b'{"stream": "s", "keys": "k1"}', hd.SchemaError, "list of strings and integers"),
            (b'{"stream": "s", "keys": [true]}', hd.SchemaError, "list of strings"),
            (b'{"stream": "s", "extra": 1}', hd.SchemaError, "no field(s) ['extra']"),
            (json.dumps({"stream": "s", "keys": [f"k{i}" for i in range(1_000_000)]}
                        ).encode(), hd.CapacityError, "the limit is 1048576 bytes"),
            (json.dumps({"stream": "s", "keys": ["x" * 100_000]}).encode(), None, ""),
        ]
        for raw, exc, match in cases:
            if exc is None:
                assert reader.read(raw).column("found").to_pylist() == [False]
            else:
                with pytest.raises(exc, match=re.escape(match)) as info:
                    reader.read(raw)
                assert len(str(info.value)) < 3000  # a huge key is not echoed whole
            _good(reader, store)
        with pytest.raises(hd.SchemaError, match="no action 'drop'"):
            reader._action("drop", {"stream": "s"})
        with pytest.raises(hd.SchemaError, match="JSON object"):
            reader._action("keys", [1])  # type: ignore[arg-type]
        with pytest.raises(hd.SchemaError, match="rows must be"):
            reader.windows("s", ["k1"], rows=0)
        with pytest.raises(hd.SchemaError, match="a key is a str or an int"):
            reader.windows("s", [1.5])  # type: ignore[list-item]
        _good(reader, store)
    finally:
        reader.close()
        server.stop()


def test_token_required_exactly_once() -> None:
    store = _store()
    server = FlightServer(store, token="s3cret").start()
    address = f"127.0.0.1:{server.port}"
    try:
        for token in (None, "wrong", "s3cret "):
            with hd.connect(address, token=token, transport="flight") as refused:
                with pytest.raises(hd.AuthError, match="missing or invalid bearer token"):
                    refused.windows("s", ["k1"])
                with pytest.raises(hd.AuthError):
                    refused.keys("nope")  # not StreamNotFoundError: learns nothing
                with pytest.raises(hd.AuthError):
                    refused.streams()
        client = fl.FlightClient(f"grpc://{address}")
        two = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer s3cret"),
                                            (b"authorization", b"Bearer wrong")])
        with pytest.raises(fl.FlightUnauthenticatedError):
            client.do_get(fl.Ticket(b'{"stream": "s"}'), two).read_all()
        client.close()
        with hd.connect(address, token="s3cret", transport="flight") as ok:
            _good(ok, store)
    finally:
        server.stop()


def test_a_client_dropping_mid_stream_leaves_the_server_serving() -> None:
    store = _store(keys=3_000)
    server = FlightServer(store).start()
    address = f"127.0.0.1:{server.port}"
    try:
        for _ in range(3):
            client = fl.FlightClient(f"grpc://{address}")
            stream = client.do_get(fl.Ticket(b'{"stream": "s"}'))  # 3,000 keys: 6 batches
            first = stream.read_chunk().data
            assert first.num_rows == 512
            stream.cancel()
            client.close()  # gone, mid-stream
        with hd.connect(address, transport="flight") as reader:
            _good(reader, store)
            whole = reader.read(b'{"stream": "s"}')
            assert whole.num_rows == 3_000
            assert whole.column("found").to_numpy().all()
    finally:
        server.stop()


def test_list_flights_schemas_and_info() -> None:
    store = _store()
    server = FlightServer(store).start()
    try:
        with hd.connect(f"127.0.0.1:{server.port}", transport="flight") as reader:
            schemas = reader.streams()
            assert sorted(schemas) == ["s", "t"]
            s = schemas["s"]
            assert s.field("window").type.shape == [8, 2]
            assert s.field("window").type.extension_name == "arrow.fixed_shape_tensor"
            assert json.loads(s.metadata[b"heimdall.fields"]) == ["a", "b"]
            client = fl.FlightClient(f"grpc://127.0.0.1:{server.port}")
            info = client.get_flight_info(fl.FlightDescriptor.for_path("t"))
            table = client.do_get(info.endpoints[0].ticket).read_all()
            assert table.column("key").type == pa.int64()  # every key of "t" is an int
            assert table.column("key").to_pylist() == [1, 2]
            assert table.column("window").type.value_type == pa.int32()
            cmd = fl.FlightDescriptor.for_command(b'{"stream": "s", "keys": ["k3"]}')
            info = client.get_flight_info(cmd)
            assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == 1
            with pytest.raises(fl.FlightServerError, match="no stream 'q'"):
                client.get_flight_info(fl.FlightDescriptor.for_path("q"))
            client.close()
    finally:
        server.stop()


def test_flight_over_tls(certs: Path) -> None:  # noqa: F811
    store = _store()
    tls = hd.ServerTLS(str(certs / "server.pem"), str(certs / "server.key"),
                       str(certs / "ca.pem"))
    server = FlightServer(store, tls=tls, token="t").start()
    address = f"127.0.0.1:{server.port}"
    try:
        client_tls = hd.ClientTLS(ca_file=certs / "ca.pem", cert_file=certs / "client.pem",
                                  key_file=certs / "client.key")
        with hd.connect(address, token="t", tls=client_tls, transport="flight") as reader:
            _good(reader, store)
        with pytest.raises((hd.RemoteError, hd.AuthError)), hd.connect(
                address, token="t", tls=str(certs / "ca.pem"), timeout_s=2,
                transport="flight") as no_cert:
            no_cert.windows("s", ["k1"])
    finally:
        server.stop()


def test_bind_errors_are_config_errors() -> None:
    with pytest.raises(hd.ConfigError, match="host:port"):
        FlightServer(_store(), "nowhere")
    server = FlightServer(_store()).start()
    try:
        with pytest.raises(hd.ConfigError, match="cannot bind"):
            FlightServer(_store(), f"127.0.0.1:{server.port}")
    finally:
        server.stop()
    with pytest.raises(hd.ConfigError, match="one node"):
        hd.connect(["127.0.0.1:1", "127.0.0.1:2"],  # type: ignore[call-overload]
                   transport="flight")


def test_serve_with_flight_reads_what_grpc_reads(tmp_path: Path) -> None:
    from heimdall.config import build_config
    from heimdall.pipeline import Pipeline

    from .conftest import new_topic

    cfg = build_config({
        "source": {"url": "embedded", "data_dir": str(tmp_path)},
        "server": {"metrics": "", "grpc": "127.0.0.1:0", "flight": "127.0.0.1:0",
                   "token": "tok"},
        "streams": [{"name": "s", "topic": new_topic(), "key": "id", "time": "ts",
                     "fields": ["a", "b"], "window": {"count": 8}}],
    })
    with Pipeline(cfg) as pipe:
        pipe.publish("s", [{"id": f"m{i % 5}", "ts": i, "a": i, "b": -i} for i in range(40)])
        assert pipe.flight is not None
        assert pipe.grpc is not None
        keys = [f"m{i}" for i in range(5)]
        with hd.connect(f"127.0.0.1:{pipe.grpc.port}", token="tok") as remote, \
                hd.connect(f"127.0.0.1:{pipe.flight.port}", token="tok",
                           transport="flight") as flight:
            a, b = remote.windows("s", keys), flight.windows("s", keys)
            assert np.array_equal(a.values, b.values)
            assert np.array_equal(a.ts_ns, b.ts_ns)
            assert sorted(flight.keys("s")) == keys
            assert flight.stats()["streams"]["s"]["keys"] == 5
            assert json.loads(flight._action("stats", {}))["ingest"]["s"]["rows"] == 40
