"""The pipeline against real brokers: the embedded pulsar-lite and a real Apache Pulsar."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from heimdall.pipeline import Pipeline
from heimdall.window import WindowStore

from .conftest import (
    assert_windows_equal,
    config,
    drain,
    events,
    new_topic,
    oracle,
    payload,
    publish,
    wait_for,
)

N_EVENTS = 100_000
N_KEYS = 500
WINDOW = 16


def test_100k_events_equal_the_oracle(broker_url: str, tmp_path: Path) -> None:
    topic = new_topic()
    evs = events(N_EVENTS, N_KEYS)
    with Pipeline(config(broker_url, topic, tmp_path, window=WINDOW)) as pipe:
        publish(pipe.url, topic, [(payload(e), e[0]) for e in evs])
        counters = pipe.counters["s"]
        wait_for(lambda: counters.messages >= N_EVENTS, 120, "all events applied")
        assert counters.rows == N_EVENTS
        assert counters.dead_letters == 0
        assert_windows_equal(pipe.store, oracle(evs, WINDOW))


def test_poison_messages_go_to_the_dead_letter_topic(broker_url: str, tmp_path: Path) -> None:
    topic = new_topic()
    good = events(9_000, 100, seed=2)
    bad = [
        (b"{oops", "not json"),
        (b'{"id": "k1", "ts": 1, "a": "x", "b": 1}', "mistyped"),
        (b'{"id": "k1", "ts": 1, "b": 1}', "missing field"),
        (b'{"id": "k1", "ts": 1, "a": 1e999, "b": 1}', "not finite"),
        (b'{"id": "k1", "ts": 1, "a": 1, "b": 1, "pad": "' + b"x" * 5000 + b'"}', "oversized"),
    ]
    items: list[tuple[bytes, str]] = []
    expected_bad = 0
    for i, e in enumerate(good):
        items.append((payload(e), e[0]))
        if i % 9 == 0:  # ~10% poison
            items.append((bad[expected_bad % len(bad)][0], e[0]))
            expected_bad += 1
    cfg = config(broker_url, topic, tmp_path, window=WINDOW)
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(
        update={"max_message_bytes": 4096})})
    with Pipeline(cfg) as pipe:
        publish(pipe.url, topic, items)
        c = pipe.counters["s"]
        wait_for(lambda: c.messages >= len(items), 120, "all messages handled")
        assert c.dead_letters == expected_bad
        assert_windows_equal(pipe.store, oracle(good, WINDOW))
        dlq = drain(pipe.url, f"{topic}-heimdall-dlq", "check")
    assert len(dlq) == expected_bad
    reasons = [props["heimdall-error"] for _, props in dlq]
    assert sum(r.startswith("DecodeError") for r in reasons) == len(
        [i for i in range(expected_bad) if i % len(bad) == 0])
    assert any("oversized" in r for r in reasons)
    assert any("non-finite" in r or "out of range" in r.lower() for r in reasons)
    assert any("missing required field `a`" in r for r in reasons)
    assert all(props["heimdall-stream"] == "s" and props["heimdall-message-id"]
               for _, props in dlq)
    assert {data for data, _ in dlq} <= {b for b, _ in bad}


class _RecordingStore(WindowStore):
    """Records which thread wrote each key (the test checks one writer per key)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writers: dict[Any, set[int]] = {}
        self._rec_lock = threading.Lock()

    def append_batch(self, stream: str, keys: Any, values: Any, ts_ns: Any = None) -> None:
        me = threading.get_ident()
        with self._rec_lock:
            for k in set(keys):
                self.writers.setdefault(k, set()).add(me)
        super().append_batch(stream, keys, values, ts_ns)


def test_key_shared_two_workers_one_writer_per_key(real_pulsar: Any, tmp_path: Path) -> None:
    topic = new_topic()
    evs = events(N_EVENTS, N_KEYS, seed=3)
    cfg = config(real_pulsar.url, topic, tmp_path, workers=2, window=WINDOW)
    store = _RecordingStore([s.spec() for s in cfg.streams], max_keys=1000)
    with Pipeline(cfg, store=store) as pipe:
        publish(pipe.url, topic, [(payload(e), e[0]) for e in evs])
        c = pipe.counters["s"]
        wait_for(lambda: c.messages >= N_EVENTS, 120, "all events applied")
        assert_windows_equal(store, oracle(evs, WINDOW))
    assert all(len(threads) == 1 for threads in store.writers.values())
    assert len(set().union(*store.writers.values())) == 2  # both workers had keys


def test_killed_consumer_loses_and_doubles_nothing(real_pulsar: Any, tmp_path: Path) -> None:
    topic = new_topic()
    evs = events(40_000, 200, seed=4)
    cfg = config(real_pulsar.url, topic, tmp_path, workers=2, window=WINDOW)
    with Pipeline(cfg) as pipe:
        source = pipe.source
        assert source is not None
        # worker 0 applies its next batch, then closes its consumer without acknowledging
        source.crash_worker_after_next_batch("s", 0)
        publish(pipe.url, topic, [(payload(e), e[0]) for e in evs])
        c = pipe.counters["s"]
        wait_for(lambda: c.rows >= len(evs), 120, "all events applied")
        assert source.alive_workers == 1
        assert c.duplicates > 0  # worker 0's applied, unacknowledged batch came back: dropped
        assert c.rows == len(evs)
        assert_windows_equal(pipe.store, oracle(evs, WINDOW))


def test_start_waits_for_a_subscription_the_broker_still_holds(real_pulsar: Any,
                                                              tmp_path: Path) -> None:
    """A restart right after kill -9: the broker still holds the dead process's consumer
    (here an Exclusive one kept open), so subscribing fails with ConsumerBusy until it goes.
    Start-up waits, saying so, instead of exiting."""
    import pulsar

    topic = new_topic()
    cfg = config(real_pulsar.url, topic, tmp_path, workers=1,
                 subscription_type="exclusive")
    client = pulsar.Client(real_pulsar.url)
    held = client.subscribe(topic, "heimdall", consumer_type=pulsar.ConsumerType.Exclusive)
    threading.Timer(3.0, held.close).start()
    pipe = Pipeline(cfg)
    t0 = time.monotonic()
    try:
        pipe.start()
        waited = time.monotonic() - t0
        assert waited >= 2.5  # it did wait for the held consumer
        publish(real_pulsar.url, topic, [(payload(("k1", 1, 1.0, 2.0)), "k1")])
        wait_for(lambda: ("s", "k1") in pipe.store, 30, "the event after the wait")
    finally:
        pipe.close()
        client.close()


def test_publish_sends_events_as_a_producer_would_and_waits_for_them(tmp_path: Path) -> None:
    import heimdall as hd

    cfg = config("embedded", new_topic(), tmp_path, workers=1)
    pipe = Pipeline(cfg)
    with pytest.raises(hd.ConfigError, match="running pipeline"):
        pipe.publish("s", [{"id": "k", "ts": 1, "a": 1.0, "b": 2.0}])
    with pipe:
        n = pipe.publish("s", [{"id": "k", "ts": i, "a": float(i), "b": 0.0} for i in range(5)]
                         + [{"id": "k", "ts": 9, "a": "hot", "b": 0.0}])  # one dead letter
        assert n == 6
        assert pipe.store.window("s", "k").values[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert pipe.counters["s"].dead_letters == 1
        with pytest.raises(hd.ConfigError, match="no stream 'nope'"):
            pipe.publish("nope", [])
