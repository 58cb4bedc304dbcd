"""Real brokers for the integration tests: the embedded pulsar-lite (started by the pipeline
itself, ``url = "embedded"``) and a real Apache Pulsar standalone (one per test session)."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pulsar
import pytest

from heimdall.config import HeimdallConfig, build_config


@pytest.fixture(params=["embedded", "pulsar"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each test twice: on the embedded broker and on a real Apache Pulsar."""
    if request.param == "embedded":
        return "embedded"
    return str(request.getfixturevalue("real_pulsar").url)


def new_topic() -> str:
    return f"persistent://public/default/t-{uuid.uuid4().hex[:10]}"


def client(url: str) -> pulsar.Client:
    return pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))


def config(url: str, topic: str, data_dir: Path, *, workers: int = 2,
           subscription_type: str = "key_shared", window: int = 16,
           **stream: Any) -> HeimdallConfig:
    s = {"name": "s", "topic": topic, "key": "id", "time": "ts", "fields": ["a", "b"],
         "window": {"count": window}}
    s.update(stream)
    return build_config({
        "source": {"url": url, "data_dir": str(data_dir), "workers": workers,
                   "subscription_type": subscription_type},
        "server": {"metrics": ""},
        "streams": [s],
    })


def events(n: int, keys: int, seed: int = 1) -> list[tuple[str, int, float, float]]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, keys, n).tolist()
    return [(f"k{k}", i, float(i), float(k) + 0.5) for i, k in enumerate(ids)]


def payload(e: tuple[str, int, float, float]) -> bytes:
    return orjson.dumps({"id": e[0], "ts": e[1], "a": e[2], "b": e[3]})


def publish(url: str, topic: str, items: list[tuple[bytes, str]]) -> None:
    """Publish (payload, key) pairs in order, batched by key (as Key_Shared needs)."""
    c = client(url)
    try:
        p = c.create_producer(topic, block_if_queue_full=True, batching_enabled=True,
                              batching_type=pulsar.BatchingType.KeyBased,
                              batching_max_publish_delay_ms=5)
        for data, key in items:
            p.send_async(data, None, partition_key=key)
        p.flush()
        p.close()
    finally:
        c.close()


def oracle(evs: list[tuple[str, int, float, float]], window: int) -> dict[str, np.ndarray]:
    per: dict[str, deque[tuple[float, float]]] = {}
    for k, _ts, a, b in evs:
        per.setdefault(k, deque(maxlen=window)).append((a, b))
    return {k: np.array(list(d)) for k, d in per.items()}


def wait_for(cond: Callable[[], bool], timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or cond}")


def assert_windows_equal(store: Any, expected: dict[str, np.ndarray]) -> None:
    assert sorted(store.keys("s")) == sorted(expected)
    for k, want in expected.items():
        got = store.window("s", k).values
        np.testing.assert_array_equal(got, want, err_msg=f"key {k}")


def drain(url: str, topic: str, subscription: str, timeout_ms: int = 3000) -> list[Any]:
    """Every message on ``topic`` from the earliest, for a fresh subscription, each once
    (pulsar-lite may dispatch a message twice: duplicates are told apart by message id)."""
    c = client(url)
    out = []
    seen = set()
    try:
        cons = c.subscribe(topic, subscription, initial_position=pulsar.InitialPosition.Earliest)
        while True:
            try:
                m = cons.receive(timeout_ms)
            except pulsar.Timeout:
                break
            mid = m.message_id().serialize()
            if mid not in seen:
                seen.add(mid)
                out.append((m.data(), m.properties()))
            cons.acknowledge(m)
    finally:
        c.close()
    return out


def assert_nothing_left(url: str, topic: str, subscription: str, wait_ms: int = 3000) -> None:
    """Everything applied was acknowledged: the subscription has nothing left to deliver."""
    c = client(url)
    try:
        cons = c.subscribe(topic, subscription, consumer_type=pulsar.ConsumerType.KeyShared)
        try:
            m = cons.receive(wait_ms)
            raise AssertionError(f"redelivered after a clean stop: {m.data()!r}")
        except pulsar.Timeout:
            pass
    finally:
        c.close()
