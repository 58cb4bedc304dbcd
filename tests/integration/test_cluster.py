"""A cluster on real Apache Pulsar: nodes share one Key_Shared subscription, the broker gives
each its key-hash ranges, and a client routes each read to the key's node with the broker's
own hash."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pulsar
import pytest

import heimdall as hd
from heimdall.cluster._admin import subscription_consumers
from heimdall.cluster._hash import key_hash
from heimdall.cluster.ranges import covers
from heimdall.config import HeimdallConfig, build_config
from heimdall.pipeline import Pipeline

from .conftest import client, events, new_topic, oracle, payload, publish, wait_for


def test_heimdalls_key_hash_is_the_brokers(real_pulsar: Any) -> None:
    """Three Key_Shared consumers; each of 3,000 keys must arrive at the consumer whose
    ranges (as the broker reports them) hold Heimdall's hash of the key."""
    topic = new_topic()
    c = client(real_pulsar.url)
    try:
        consumers = [c.subscribe(topic, "hash", consumer_type=pulsar.ConsumerType.KeyShared,
                                 consumer_name=f"c{i}") for i in range(3)]
        keys = [f"m-{i}" for i in range(2_000)] + [str(i) for i in range(1_000)]
        got: dict[str, str] = {}
        lock = threading.Lock()

        def drain(cons: Any, name: str) -> None:
            while True:
                try:
                    m = cons.receive(3000)
                except pulsar.Timeout:
                    return
                with lock:
                    got[m.partition_key()] = name
                cons.acknowledge(m)

        threads = [threading.Thread(target=drain, args=(cons, f"c{i}"))
                   for i, cons in enumerate(consumers)]
        for t in threads:
            t.start()
        publish(real_pulsar.url, topic, [(k.encode(), k) for k in keys])
        for t in threads:
            t.join()
        assert len(got) == len(keys)
        ranges = {ci.name: ci.ranges
                  for ci in subscription_consumers(real_pulsar.admin_url, topic, "hash")}
        assert sorted(ranges) == ["c0", "c1", "c2"]
        wrong = [k for k, name in got.items() if not covers(ranges[name], key_hash(k))]
        assert wrong == []
        assert len(set(got.values())) == 3  # the keys did spread over the three
        assert key_hash(17) == key_hash("17")  # an int key is routed by its text
    finally:
        c.close()


def node_config(url: str, admin_url: str, topic: str, name: str, data_dir: Path,
                **extra: Any) -> HeimdallConfig:
    return build_config({
        "source": {"url": url, "data_dir": str(data_dir), "workers": 1,
                   "subscription": "cluster"},
        "server": {"metrics": "", "grpc": "127.0.0.1:0"},
        "cluster": {"node": name, "admin_url": admin_url},
        "streams": [{"name": "s", "topic": topic, "key": "id", "time": "ts",
                     "fields": ["a", "b"], "window": {"count": 8}}],
        **extra,
    })


@pytest.fixture
def three_nodes(real_pulsar: Any, tmp_path: Path) -> Iterator[tuple[str, list[Pipeline]]]:
    topic = new_topic()
    nodes = [Pipeline(node_config(real_pulsar.url, real_pulsar.admin_url, topic, f"n{i}",
                                  tmp_path / f"n{i}", server={
                                      "metrics": "", "grpc": "127.0.0.1:0",
                                      "flight": "127.0.0.1:0"})) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        yield topic, nodes
    finally:
        for n in nodes:
            n.close()


def _poisoned(evs: list[Any], every: int = 20) -> list[tuple[bytes, str]]:
    out = []
    for i, e in enumerate(evs):
        out.append((payload(e), e[0]))
        if i % every == 0:  # 5% poison, keyed like the rest
            out.append((b'{"id": "%s", "ts": 1, "a": "hot", "b": 0}' % e[0].encode(), e[0]))
    return out


def test_three_nodes_hold_each_key_once_and_a_client_routes_to_it(
        real_pulsar: Any, three_nodes: tuple[str, list[Pipeline]]) -> None:
    topic, nodes = three_nodes
    evs = events(6_000, 300, seed=11)
    stream = _poisoned(evs)
    publish(real_pulsar.url, topic, stream)
    poison = len(stream) - len(evs)
    wait_for(lambda: sum(n.counters["s"].rows for n in nodes) == len(evs), 90, "every event")
    wait_for(lambda: sum(n.counters["s"].dead_letters for n in nodes) == poison, 30,
             "every poison message dead-lettered")
    want = oracle(evs, 8)
    held = [set(n.store.keys("s")) for n in nodes]
    assert sum(len(h) for h in held) == len(want)  # every key on exactly one node
    assert set().union(*held) == set(want)
    for n, h in zip(nodes, held, strict=True):
        assert n.cluster is not None
        assert all(n.cluster.owns_hash("s", key_hash(k)) for k in h)
        assert len(h) > 0
    addresses = [f"127.0.0.1:{n.grpc.port}" for n in nodes if n.grpc is not None]
    with hd.connect(addresses[:1]) as cluster:  # one seed: the nodes name the others
        assert sorted(cluster.nodes.values()) == ["n0", "n1", "n2"]
        for k in list(want)[:50]:
            np.testing.assert_array_equal(cluster.window("s", k).values, want[k])
        keys = [*list(want)[::-1], "nope"]
        batch = cluster.windows("s", keys)
        assert batch.keys == keys
        assert batch.found.tolist() == [True] * len(want) + [False]
        for i, k in enumerate(keys[:-1]):
            np.testing.assert_array_equal(batch.values[i, -batch.lengths[i]:], want[k])
        agg = cluster.aggregate("s", keys[:-1], ["last"])
        np.testing.assert_array_equal(agg["last"], np.array([want[k][-1] for k in keys[:-1]]))
        assert sorted(cluster.keys("s")) == sorted(want)
        assert cluster.stats()["streams"]["s"]["keys"] == len(want)
    # over Flight: any node's flight info names every node's endpoint; reading each gives
    # the keys that node holds, every key once
    import pyarrow.flight as fl

    from heimdall.remote.flight import from_table

    assert nodes[0].flight is not None
    seed = fl.FlightClient(nodes[0].flight.location)
    info = seed.get_flight_info(fl.FlightDescriptor.for_path("s"))
    seed.close()
    locations = sorted(e.locations[0].uri.decode() for e in info.endpoints)
    assert locations == sorted(n.flight.location for n in nodes if n.flight is not None)
    seen: dict[str, np.ndarray] = {}
    for e in info.endpoints:
        client = fl.FlightClient(e.locations[0])
        table = client.do_get(e.ticket).read_all()
        client.close()
        got = from_table(table, "s", table.column("key").to_pylist())
        for i, k in enumerate(got.keys):
            assert k not in seen  # on one node only
            seen[k] = got.values[i, -got.lengths[i]:]
    assert sorted(seen) == sorted(want)
    for k, rows in seen.items():
        np.testing.assert_array_equal(rows, want[k])
    # a node asked for a key it does not own says so, naming the owner
    k = next(iter(held[0]))
    other = nodes[1].grpc
    assert other is not None
    with hd.connect(f"127.0.0.1:{other.port}") as remote:
        with pytest.raises(hd.NotOwnerError) as refused:
            remote.window("s", k)
        assert refused.value.owner == f"127.0.0.1:{nodes[0].grpc.port}"  # type: ignore[union-attr]


def test_a_client_given_an_address_that_is_no_heimdall_node_gets_a_clear_error(
        tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(hd.RemoteError, match="no Heimdall node answered"):
        hd.connect([f"127.0.0.1:{port}"], timeout_s=1)
    # a gRPC server that is not Heimdall: the health service alone
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(ThreadPoolExecutor(1))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(hd.RemoteError, match="not a Heimdall node"):
            hd.connect([f"127.0.0.1:{port}"], timeout_s=2)
    finally:
        server.stop(0)


def test_a_node_whose_streams_differ_from_the_clusters_is_refused(
        real_pulsar: Any, tmp_path: Path) -> None:
    topic = new_topic()
    first = Pipeline(node_config(real_pulsar.url, real_pulsar.admin_url, topic, "n0",
                                 tmp_path / "n0"))
    with first:
        cfg = node_config(real_pulsar.url, real_pulsar.admin_url, topic, "n1", tmp_path / "n1")
        data = cfg.model_dump(mode="json")
        data["streams"][0]["window"] = {"count": 16}
        other = Pipeline(HeimdallConfig(**data))
        with pytest.raises(hd.ConfigError, match=r"node 'n0'.*stream 's' window: "
                           r"'CountWindow\(n=8\)' there, 'CountWindow\(n=16\)' here"):
            other.start()
        data["streams"][0]["window"] = {"count": 8}
        data["streams"][0]["fields"] = ["a", "b", "c"]
        with pytest.raises(hd.ConfigError, match=r"stream 's' fields"):
            Pipeline(HeimdallConfig(**data)).start()
