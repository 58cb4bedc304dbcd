"""The gRPC server and client for real: Subscribe, Push into a live pipeline, TLS and
tokens, malformed and oversized requests, clients that drop, graceful shutdown."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import heimdall as hd
from heimdall.pipeline import Pipeline

from .conftest import config, new_topic, wait_for

FIELDS = ["a", "b"]


def make_store(window: int = 8) -> hd.WindowStore:
    return hd.WindowStore([hd.StreamSpec("s", fields=FIELDS, window=hd.CountWindow(window))],
                          max_keys=100)


@pytest.fixture
def served() -> Iterator[tuple[hd.WindowStore, hd.GrpcServer, hd.RemoteStore]]:
    store = make_store()
    server = hd.GrpcServer(store, max_message_bytes=64 * 1024).start()
    remote = hd.connect(f"127.0.0.1:{server.port}")
    try:
        yield store, server, remote
    finally:
        remote.close()
        server.stop()


# ---- Subscribe ------------------------------------------------------------------------------


def test_subscribe_delivers_window_updates_in_order(served: Any) -> None:
    store, server, remote = served
    store.append("s", "a", {"a": 0.0, "b": 0.0}, ts_ns=0)
    sub = remote.subscribe("s", keys=["a"], timeout_s=60)
    first = next(sub)
    assert isinstance(first, hd.Window)
    assert first.ts_ns.tolist() == [0]
    n = 200

    def write() -> None:
        for i in range(1, n + 1):
            remote.push("s", ["a", "other"], [[i, -i], [0, 0]], ts_ns=[i, i])

    writer = threading.Thread(target=write)
    writer.start()
    newest, seqs = 0, [sub.seq]
    for w in sub:
        assert isinstance(w, hd.Window)
        assert w.key == "a"
        t = int(w.ts_ns[-1])
        assert t > newest, "an update older than one already received"
        assert w.ts_ns.tolist() == list(range(max(0, t - 7), t + 1))  # whole, not torn
        assert w.values[:, 0].tolist() == list(range(max(0, t - 7), t + 1))
        newest = t
        seqs.append(sub.seq)
        if t == n:
            break
    writer.join()
    sub.close()
    assert seqs == list(range(1, len(seqs) + 1))
    wait_for(lambda: not server.feed._subs.get(("window", "s")), 10, "the subscription closed")


def test_subscribe_to_all_keys_and_deadline(served: Any) -> None:
    _store, server, remote = served
    sub = remote.subscribe("s", timeout_s=3.0)
    wait_for(lambda: bool(server.feed._subs.get(("window", "s"))), 10,
             "the subscription registered")  # the call starts lazily
    remote.push("s", ["x", "y"], [[1, 1], [2, 2]])
    got = {w.key for w in sub}  # ends by itself at the deadline
    assert got == {"x", "y"}


def test_subscribe_to_an_unknown_stream_or_model(served: Any) -> None:
    _store, _server, remote = served
    with pytest.raises(hd.StreamNotFoundError, match="'nope'"):
        next(remote.subscribe("nope"))
    with pytest.raises(hd.KeyNotFoundError, match="no model 'm'"):
        next(remote.subscribe(model="m"))
    with pytest.raises(hd.ConfigError):
        remote.subscribe()


def test_a_client_dropping_mid_stream_is_cleaned_up(served: Any) -> None:
    store, server, remote = served
    store.append("s", "a", {"a": 1.0, "b": 1.0})
    other = hd.connect(f"127.0.0.1:{server.port}")
    sub = other.subscribe("s", keys=["a"])
    next(sub)
    other.close()  # the connection goes away mid-stream
    wait_for(lambda: not server.feed._subs.get(("window", "s")), 10, "the subscriber dropped")
    assert not server._listeners["s"]  # nothing left on the write path
    remote.push("s", ["a"], [[2.0, 2.0]])  # the server goes on serving everyone else
    assert remote.window("s", "a").values[-1].tolist() == [2.0, 2.0]


# ---- Push -----------------------------------------------------------------------------------


def test_push_batches_and_bad_batches(served: Any) -> None:
    store, _server, remote = served
    rows = remote.push_batches(("s", [f"k{i}"], np.array([[i, i]], dtype=np.float32), [i])
                               for i in range(20))
    assert rows == 20
    assert len(store.keys("s")) == 20
    assert store.window("s", "k3").ts_ns.tolist() == [3]
    with pytest.raises(hd.SchemaError, match="push batch 1: "):
        remote.push_batches([("s", ["ok"], [[1, 2]], None), ("s", ["bad"], [[1, 2, 3]], None)])
    assert ("s", "ok") in store
    assert ("s", "bad") not in store
    with pytest.raises(hd.StreamNotFoundError):
        remote.push("nope", ["k"], [[1, 2]])
    with pytest.raises(hd.SchemaError):
        remote.push("s", ["k"], [[np.nan, 1.0]])


def test_push_into_a_live_pipeline_reaches_windows_and_models(tmp_path: Path) -> None:
    cfg = config("embedded", new_topic(), tmp_path, window=4)
    cfg = cfg.model_copy(update={"server": cfg.server.model_copy(
        update={"grpc": "127.0.0.1:0"})})
    pipe = Pipeline(cfg)

    @pipe.model("s", every=1)
    def last_a(batch: hd.WindowBatch) -> np.ndarray:
        return batch.values[:, -1, 0].copy()

    with pipe:
        assert pipe.grpc is not None
        with hd.connect(f"127.0.0.1:{pipe.grpc.port}") as remote:
            preds = remote.subscribe(model="last_a", keys=["m1"], timeout_s=30)
            grpc_server = pipe.grpc
            wait_for(lambda: bool(grpc_server.feed._subs.get(("prediction", "last_a"))), 10,
                     "the subscription registered")  # the call starts lazily
            remote.push("s", ["m1", "m2", "m1"], [[1, 0], [2, 0], [3, 0]], ts_ns=[1, 2, 3])
            assert remote.window("s", "m1").values[:, 0].tolist() == [1.0, 3.0]
            wait_for(lambda: "last_a" in pipe.predictions.models()
                     and pipe.predictions.latest("last_a", "m1").score == 3.0, 30,
                     "the model's prediction of the pushed rows")
            assert remote.prediction("last_a", "m1").score == 3.0
            p = next(preds)
            assert isinstance(p, hd.Prediction)
            assert p.key == "m1"
            assert p.model == "last_a"
            preds.close()
            full = remote.server_stats()
            assert full["ingest"]["s"]["pushed"] == 3
            assert full["models"]["last_a"]["scored"] >= 2
            with pytest.raises(hd.KeyNotFoundError, match="no prediction"):
                remote.prediction("last_a", "never")


# ---- malformed, oversized, limits -----------------------------------------------------------


def test_malformed_and_oversized_requests_are_refused(served: Any) -> None:
    store, server, remote = served
    store.append("s", "a", {"a": 1.0, "b": 2.0})
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    raw = channel.unary_unary("/heimdall.v1.Heimdall/GetWindow")
    with pytest.raises(grpc.RpcError) as bad:
        raw(b"\xff\xff\xff garbage", timeout=5)
    assert bad.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.RpcError) as big:
        raw(b"\x0a" + b"\xff\xff\x07" + b"x" * 200_000, timeout=5)  # over 64 KiB
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    channel.close()
    with pytest.raises(hd.SchemaError, match="key is required"):
        _call_without_key(remote)
    with pytest.raises(hd.CapacityError, match="ask for fewer keys"):
        remote.windows("s", [f"k{i}" for i in range(2000)])
    assert remote.window("s", "a").values.tolist() == [[1.0, 2.0]]  # still serving


def _call_without_key(remote: hd.RemoteStore) -> Any:
    from heimdall.remote._pb import heimdall_pb2 as pb
    from heimdall.remote.client import translate_errors

    with translate_errors(remote.address):
        return remote._stub.GetWindow(pb.GetWindowRequest(stream="s"), timeout=5)


def test_concurrent_call_limit() -> None:
    store = make_store()
    with hd.GrpcServer(store, max_concurrent_rpcs=1) as server:
        remote = hd.connect(f"127.0.0.1:{server.port}")
        sub = remote.subscribe("s")  # holds the only slot
        wait_for(lambda: bool(server.feed._subs.get(("window", "s"))), 10,
                 "the subscription registered")
        with pytest.raises(hd.CapacityError):
            next(remote.subscribe("s"))
        sub.close()
        remote.close()


# ---- security -------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem",
                 cwd=d)
    return d


def test_token_accepted_missing_and_wrong() -> None:
    store = make_store()
    store.append("s", "a", {"a": 1.0, "b": 2.0})
    with hd.GrpcServer(store, token="s3cret") as server:
        address = f"127.0.0.1:{server.port}"
        with hd.connect(address, token="s3cret") as ok:
            assert ok.window("s", "a").values.tolist() == [[1.0, 2.0]]
        for token in (None, "wrong", "s3cret "):
            with hd.connect(address, token=token) as refused:
                with pytest.raises(hd.AuthError, match="missing or invalid bearer token") as e:
                    refused.window("s", "a")
                assert "1.0" not in str(e.value)
                assert "'a'" not in str(e.value)
                with pytest.raises(hd.AuthError):
                    refused.keys("nope")  # not NOT_FOUND: learns nothing
                with pytest.raises(hd.AuthError):
                    refused.push("s", ["x"], [[1, 1]])
                assert refused.health() == "SERVING"  # health checks need no token
        assert ("s", "x") not in store


def test_tls_and_client_certificates(certs: Path) -> None:
    store = make_store()
    store.append("s", "a", {"a": 1.0, "b": 2.0})
    tls = hd.ServerTLS(str(certs / "server.pem"), str(certs / "server.key"))
    with hd.GrpcServer(store, tls=tls, token="t") as server:
        address = f"127.0.0.1:{server.port}"
        with hd.connect(address, token="t", tls=str(certs / "ca.pem")) as remote:
            assert remote.window("s", "a").values.tolist() == [[1.0, 2.0]]
        with pytest.raises(hd.RemoteError):
            hd.connect(address, token="t", timeout_s=1.0)  # plaintext to a TLS server
        with pytest.raises(hd.RemoteError):
            hd.connect(address, token="t", tls=True, timeout_s=1.0)  # untrusted CA
    mtls = hd.ServerTLS(str(certs / "server.pem"), str(certs / "server.key"),
                        str(certs / "ca.pem"))
    with hd.GrpcServer(store, tls=mtls) as server:
        address = f"127.0.0.1:{server.port}"
        client_tls = hd.ClientTLS(ca_file=certs / "ca.pem", cert_file=certs / "client.pem",
                                  key_file=certs / "client.key")
        with hd.connect(address, tls=client_tls) as remote:
            assert remote.keys("s") == ["a"]
        with pytest.raises(hd.RemoteError):
            hd.connect(address, tls=str(certs / "ca.pem"), timeout_s=1.0)  # no client cert


def test_server_config_errors(tmp_path: Path) -> None:
    with pytest.raises(hd.ConfigError, match="cannot read"):
        hd.GrpcServer(make_store(), tls=hd.ServerTLS(str(tmp_path / "no.pem"),
                                                     str(tmp_path / "no.key"))).start()
    with hd.GrpcServer(make_store()) as first, pytest.raises(hd.ConfigError, match="cannot bind"):
        hd.GrpcServer(make_store(), address=f"127.0.0.1:{first.port}").start()
    with pytest.raises(hd.RemoteError, match="cannot reach"):
        hd.connect(f"127.0.0.1:{first.port}", timeout_s=0.5)


# ---- graceful shutdown ----------------------------------------------------------------------


def test_graceful_shutdown_with_calls_in_flight() -> None:
    store = make_store()
    server = hd.GrpcServer(store).start()
    remote = hd.connect(f"127.0.0.1:{server.port}")
    sub = remote.subscribe("s")
    go_on = threading.Event()
    sent_first = threading.Event()

    def batches() -> Iterator[tuple[str, list[str], list[list[float]], None]]:
        yield "s", ["p"], [[1.0, 1.0]], None
        sent_first.set()
        go_on.wait(10)
        yield "s", ["p"], [[2.0, 2.0]], None

    result: list[int] = []
    pusher = threading.Thread(target=lambda: result.append(remote.push_batches(batches())))
    pusher.start()
    assert sent_first.wait(10)
    wait_for(lambda: ("s", "p") in store, 10, "the first pushed batch")
    stopper = threading.Thread(target=server.stop, kwargs={"grace_s": 10.0})
    stopper.start()
    wait_for(lambda: server.stopping, 10, "the server stopping")
    updates = list(sub)  # the subscription ends cleanly, without an error
    assert all(w.key == "p" for w in updates)
    go_on.set()  # the push in flight finishes within the grace period
    pusher.join(15)
    stopper.join(15)
    assert result == [2]
    assert store.window("s", "p").values[:, 0].tolist() == [1.0, 2.0]
    with pytest.raises(hd.RemoteError):
        remote.keys("s")  # new calls are refused once stopped
    remote.close()
