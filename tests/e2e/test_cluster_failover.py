"""A cluster of `heimdall serve` processes on real Apache Pulsar: a node killed with kill -9
mid-stream (three rounds, restarted between them), and nodes added and removed while events
flow. After settling, every window equals the oracle built from what was published, every key
is on exactly one node, every poison message is on the dead-letter topic once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import heimdall as hd
from heimdall.cluster.local import NodeProcess, keep_history
from tests.integration.conftest import drain, events, new_topic, oracle, payload, publish

HEIMDALL = [sys.executable, "-m", "heimdall.cli"]


STREAMS = """
[[streams]]
name = "s"
topic = "{topic}"
key = "id"
time = "ts"
fields = ["a", "b"]
window = { count = 8 }
"""
# no time field: rows stamped on arrival, and a replay stamps them with the publish time
ARRIVAL_STREAMS = STREAMS.replace('time = "ts"\n', "")


def node(name: str, broker: Any, topic: str, tmp: Path, streams: str = STREAMS
         ) -> NodeProcess:
    return NodeProcess(name, broker.url, broker.admin_url, streams.replace("{topic}", topic),
                       tmp)


def _stream(n: int, keys: int, seed: int) -> tuple[list[Any], list[tuple[bytes, str]]]:
    evs = events(n, keys, seed=seed)
    out = []
    for i, e in enumerate(evs):
        out.append((payload(e), e[0]))
        if i % 20 == 0:
            out.append((b'{"id": "%s", "ts": 1, "a": "poison", "b": %d}' % (e[0].encode(), i),
                        e[0]))
    return evs, out


def _publish_slowly(url: str, topic: str, items: list[tuple[bytes, str]], chunks: int,
                    pause_s: float) -> threading.Thread:
    def run() -> None:
        step = -(-len(items) // chunks)
        for i in range(0, len(items), step):
            publish(url, topic, items[i:i + step])
            time.sleep(pause_s)

    t = threading.Thread(target=run)
    t.start()
    return t


def _settled(nodes: list[NodeProcess], want: dict[str, np.ndarray], timeout_s: float = 90) -> None:
    """Every window equals the oracle, read through the cluster client; every key on one
    node."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with hd.connect([n.address for n in nodes], timeout_s=5) as cluster:
                held = [set(cluster._remote(n.address).keys("s")) for n in nodes]
                batch = cluster.windows("s", list(want))
            problems = []
            if sum(map(len, held)) != len(want) or set().union(*held) != set(want):
                problems.append(f"keys per node {[len(h) for h in held]}, want {len(want)}")
            for i, k in enumerate(want):
                got = batch.values[i, batch.values.shape[1] - batch.lengths[i]:]
                if not np.array_equal(got, want[k]):
                    problems.append(f"key {k}: {len(got)} rows, want {len(want[k])}")
                    break
            if not problems:
                return
            last = "; ".join(problems)
        except hd.HeimdallError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(1)
    logs = "\n".join(f"--- {n.name}\n{n.log.read_text()[-2500:]}" for n in nodes)
    raise AssertionError(f"not settled in {timeout_s} s: {last}\n{logs}")


class _Reader:
    """Reads windows through the cluster client while nodes die and come back: each read
    must be the asked key's window, whole (its rows that key's events, in order), or a typed
    Heimdall error."""

    def __init__(self, addresses: list[str], keys: list[str]) -> None:
        self.addresses = addresses
        self.keys = keys
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def start(self) -> _Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        cluster = None
        i = 0
        while not self._stop.is_set():
            try:
                if cluster is None:
                    cluster = hd.connect(self.addresses, timeout_s=2)
                key = self.keys[i % len(self.keys)]
                i += 1
                if i % 2:  # a multi-key read too: one call per node, fanned out
                    batch = cluster.windows("s", self.keys[i % 7::7])
                    if batch.keys != self.keys[i % 7::7]:
                        self.wrong.append(f"batch keys {batch.keys[:3]} ...")
                w = cluster.window("s", key)
                want_b = float(key[1:]) + 0.5  # events(): b is the key's number + 0.5
                a, b = w.values[:, 0], w.values[:, 1]
                if w.key != key or not (b == want_b).all() or not (np.diff(a) > 0).all():
                    self.wrong.append(f"{key}: got {w.key!r} {w.values.tolist()}")
                else:
                    self.ok += 1
            except hd.HeimdallError as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            except Exception as exc:  # not typed: a failure of the contract
                self.wrong.append(f"{type(exc).__name__}: {exc}")
        if cluster is not None:
            cluster.close()


def _dead_letters_once(url: str, topic: str, poison: int) -> None:
    letters = drain(url, f"{topic}-heimdall-dlq", f"check-{time.monotonic_ns()}")
    ids = [props["heimdall-message-id"] for _data, props in letters]
    assert len(ids) == len(set(ids)), "a poison message dead-lettered twice"
    assert len(ids) == poison


@pytest.mark.slow
def test_kill_9_of_a_node_mid_stream_three_rounds(real_pulsar: Any, tmp_path: Path) -> None:
    keep_history(real_pulsar.admin_url)
    topic = new_topic()
    nodes = [node(f"n{i}", real_pulsar, topic, tmp_path) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        evs, items = _stream(9_000, 300, seed=21)
        publisher = _publish_slowly(real_pulsar.url, topic, items, chunks=30, pause_s=0.3)
        reads = _Reader([n.address for n in nodes], sorted({e[0] for e in evs})).start()
        for round_ in range(3):
            time.sleep(1.5)
            victim = nodes[round_ % 3]
            victim.kill()
            time.sleep(1.0)
            victim.start()
        publisher.join()
        reads.stop()
        assert reads.wrong == [], reads.wrong[:5]
        assert reads.ok > 0
        _settled(nodes, oracle(evs, 8))
        _dead_letters_once(real_pulsar.url, topic, len(items) - len(evs))
    finally:
        for n in nodes:
            n.stop()


@pytest.mark.slow
def test_scale_2_to_3_to_2_while_publishing(real_pulsar: Any, tmp_path: Path) -> None:
    keep_history(real_pulsar.admin_url)
    topic = new_topic()
    nodes = [node(f"n{i}", real_pulsar, topic, tmp_path, ARRIVAL_STREAMS) for i in range(3)]
    try:
        nodes[0].start()
        nodes[1].start()
        evs, items = _stream(6_000, 300, seed=22)
        publisher = _publish_slowly(real_pulsar.url, topic, items, chunks=20, pause_s=0.3)
        time.sleep(1.5)
        nodes[2].start()  # scale up: it takes ranges over from the two
        time.sleep(2.0)
        nodes[0].stop()   # scale down, gracefully: its ranges go to the others
        publisher.join()
        _settled(nodes[1:], oracle(evs, 8))
        _dead_letters_once(real_pulsar.url, topic, len(items) - len(evs))
    finally:
        for n in nodes:
            n.stop()


def test_get_and_top_read_the_cluster(real_pulsar: Any, tmp_path: Path) -> None:
    keep_history(real_pulsar.admin_url)
    topic = new_topic()
    nodes = [node(f"n{i}", real_pulsar, topic, tmp_path) for i in range(2)]
    try:
        for n in nodes:
            n.start()
        evs, items = _stream(600, 40, seed=23)
        publish(real_pulsar.url, topic, items)
        want = oracle(evs, 8)
        _settled(nodes, want)
        key = sorted(want)[0]
        got = subprocess.run([*HEIMDALL, "get", f"{nodes[0].address},{nodes[1].address}",
                              "s", key, "--json"], capture_output=True, text=True,
                             timeout=60)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["values"] == want[key].tolist()
        top = subprocess.run([*HEIMDALL, "top", nodes[1].address, "--cluster", "-n", "1"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "COLUMNS": "200"})
        assert top.returncode == 0, top.stderr
        assert "n0 (" in top.stdout
        assert "n1 (" in top.stdout
        assert "owns s " in top.stdout
    finally:
        for n in nodes:
            n.stop()


@pytest.mark.slow
def test_demo_with_three_nodes_kills_one_and_its_keys_come_back(tmp_path: Path) -> None:
    demo = subprocess.run([*HEIMDALL, "demo", "--nodes", "3", "--duration", "30",
                           "--machines", "200", "--rate", "2000"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "160"})
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = " ".join(demo.stdout.split())
    assert "kill -9 n0" in out
    assert "every window continues the one read before the kill" in out, out[-3000:]
    assert "Traceback" not in demo.stderr
