"""Hostile requests to the gRPC server: every one gets a clear status (INVALID_ARGUMENT,
NOT_FOUND, UNAUTHENTICATED ...) with a bounded message, never INTERNAL from grpcio's parser
or UNKNOWN, and the server serves others after."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

import heimdall as hd
from heimdall.remote._pb import heimdall_pb2 as pb

FIELDS = ["a", "b", "c"]


@pytest.fixture
def served() -> Iterator[tuple[hd.WindowStore, hd.GrpcServer, hd.RemoteStore]]:
    store = hd.WindowStore([hd.StreamSpec("s", fields=FIELDS, window=hd.TimeWindow(60))],
                           max_keys=100)
    store.append("s", "a", (1.0, 2.0, 3.0), ts_ns=5)
    server = hd.GrpcServer(store).start()
    remote = hd.connect(f"127.0.0.1:{server.port}")
    try:
        yield store, server, remote
    finally:
        remote.close()
        server.stop()


def _still_serving(remote: hd.RemoteStore) -> None:
    assert remote.window("s", "a").values.tolist() == [[1.0, 2.0, 3.0]]


@pytest.mark.parametrize("method", ["GetWindow", "GetWindows", "Aggregate", "ListKeys",
                                    "GetPrediction", "Stats"])
@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff garbage",
    bytes(range(256)),
    b"\x0a\x02\xc3\x28",  # field 1 (a string in all but Stats) that is not UTF-8
])
def test_undecodable_requests_get_invalid_argument(served: Any, method: str,
                                                   payload: bytes) -> None:
    _store, server, remote = served
    if method == "Stats" and payload.startswith(b"\x0a"):
        pytest.skip("StatsRequest has no field 1: the bytes are a valid unknown field")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary(f"/heimdall.v1.Heimdall/{method}")
        with pytest.raises(grpc.RpcError) as err:
            call(payload, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert f"not a valid {method} message" in err.value.details()
    _still_serving(remote)


def test_undecodable_push_and_subscribe(served: Any) -> None:
    _store, server, remote = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        push = channel.stream_unary("/heimdall.v1.Heimdall/Push")
        with pytest.raises(grpc.RpcError) as err:
            push(iter([b"\xff\xff garbage"]), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        sub = channel.unary_stream("/heimdall.v1.Heimdall/Subscribe")
        with pytest.raises(grpc.RpcError) as err2:
            next(sub(b"\xff\xff garbage", timeout=5))
        assert err2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _still_serving(remote)


def test_an_unexpected_failure_is_internal_with_its_type_not_unknown(served: Any) -> None:
    store, server, _remote = served

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("a bug")

    store.keys = broken  # type: ignore[method-assign]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary("/heimdall.v1.Heimdall/ListKeys")
        with pytest.raises(grpc.RpcError) as err:
            call(pb.ListKeysRequest(stream="s").SerializeToString(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "RuntimeError: a bug" in err.value.details()


@pytest.mark.parametrize("seconds", [math.inf, math.nan, -1.0])
def test_bad_spans_are_invalid_argument(served: Any, seconds: float) -> None:
    _store, _server, remote = served
    with pytest.raises(hd.SchemaError, match="seconds"):
        remote.windows("s", ["a"], seconds=seconds)
    with grpc.insecure_channel(remote.address) as channel:
        call = channel.unary_unary("/heimdall.v1.Heimdall/GetWindows")
        with pytest.raises(grpc.RpcError) as err:
            call(pb.GetWindowsRequest(stream="s", keys=[pb.Key(s="a")], seconds=seconds)
                 .SerializeToString(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _still_serving(remote)


def test_huge_keys_and_streams_are_echoed_bounded(served: Any) -> None:
    _store, _server, remote = served
    huge = "k" * 100_000
    with pytest.raises(hd.KeyNotFoundError, match="100002 characters"):
        remote.window("s", huge)
    with pytest.raises(hd.StreamNotFoundError, match="100002 characters"):
        remote.window(huge, "a")
    assert remote.windows("s", [huge, "a"]).found.tolist() == [False, True]
    _still_serving(remote)


@pytest.mark.parametrize(("values", "ts", "match"), [
    ([["a", "b", "c"]], None, "values must be numbers"),
    ([[1.0, 2.0], [3.0]], None, "rectangular"),
    ([[1.0, 2.0, 3.0]], ["x"], "int64 nanoseconds"),
    ([[1.0, 2.0, 3.0]], [1e30], r"ts_ns\[0\].*int64"),
    ([[1.0, 2.0, 3.0]], np.array([2**64 - 1], dtype=np.uint64), "int64"),
    ([[1.0, 2.0, 3.0]], [math.inf], "non-finite"),
])
def test_bad_push_values_are_schema_errors(served: Any, values: Any, ts: Any,
                                           match: str) -> None:
    store, _server, remote = served
    with pytest.raises(hd.SchemaError, match=match):
        remote.push("s", ["a"], values, ts_ns=ts)
    with pytest.raises(hd.SchemaError, match=r"push batch 1"):
        remote.push_batches([("s", ["a"], [[7.0, 7.0, 7.0]], [6]), ("s", ["a"], values, ts)])
    # the batch before the bad one is written, the bad one is not
    assert store.window("s", "a").values[:, 0].tolist() == [1.0, 7.0]


def test_push_of_a_bad_key_is_a_schema_error(served: Any) -> None:
    _store, _server, remote = served
    with pytest.raises(hd.SchemaError, match="str or an int"):
        remote.push("s", [1.5], [[1.0, 2.0, 3.0]])  # type: ignore[list-item]


def test_stats_are_standard_json(served: Any) -> None:
    store, server, remote = served
    server._stats = lambda: {"store": store.stats(), "nan": float("nan"),
                             "inf": [float("inf"), np.float32("nan")], "n": np.int64(3)}
    reply = remote._stub.Stats(pb.StatsRequest(), timeout=5)

    def refuse(token: str) -> None:
        raise ValueError(f"not standard JSON: {token}")

    data = json.loads(reply.json, parse_constant=refuse)
    assert data["nan"] is None
    assert data["inf"] == [None, None]
    assert data["n"] == 3


def test_two_authorization_headers_are_refused() -> None:
    store = hd.WindowStore([hd.StreamSpec("s", fields=["x"])], max_keys=4)
    store.append("s", "a", (1.0,))
    with hd.GrpcServer(store, token="s3cret") as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary("/heimdall.v1.Heimdall/ListKeys")
        request = pb.ListKeysRequest(stream="s").SerializeToString()
        assert call(request, timeout=5, metadata=[("authorization", "Bearer s3cret")])
        for headers in ([("authorization", "Bearer s3cret"), ("authorization", "Bearer no")],
                        [("authorization", "Bearer no"), ("authorization", "Bearer s3cret")],
                        [("authorization", "Bearer s3cret")] * 2):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=5, metadata=headers)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_float_times_from_any_client_are_checked_by_the_server(served: Any) -> None:
    from heimdall.remote import _convert as cv

    store, _server, remote = served
    req = pb.PushRequest(stream="s", keys=[pb.Key(s="a")])
    cv.to_array(np.ones((1, 3)), req.values)
    cv.to_array(np.array([1e30]), req.ts_ns)  # as a client in another language may send
    with pytest.raises(grpc.RpcError) as err:
        remote._stub.Push(iter([req]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "int64" in err.value.details()
    assert store.window("s", "a").ts_ns.tolist() == [5]
