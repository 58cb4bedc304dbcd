"""The same windows offline, against the live pipeline on the embedded broker: every window a
model scored live is found again, bit for bit, by training_windows over the topic's history
(count and time windows, with late events and poison messages); replay over that history
equals the live store."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import heimdall as hd
from heimdall.config import build_config
from heimdall.pipeline import Pipeline

from .conftest import new_topic, publish, wait_for

N_KEYS = 12


def _stream_events(seed: int, n: int, late: bool) -> list[tuple[bytes, str]]:
    """Events in time order per key, with poison messages (not JSON, a NaN, a missing field)
    and, if ``late``, late events (far behind their key's newest: a time window refuses
    them, a count window keeps them in arrival order)."""
    rng = np.random.default_rng(seed)
    newest: dict[str, int] = {}
    out: list[tuple[bytes, str]] = []
    for i in range(n):
        k = f"k{int(rng.integers(N_KEYS))}"
        roll = rng.random()
        if roll < 0.03:
            out.append((b"{not json", k))
            continue
        if roll < 0.05:
            out.append((b'{"id": "%s", "ts": %d, "a": NaN, "b": 1}' % (k.encode(), i), k))
            continue
        if roll < 0.06:
            out.append((orjson.dumps({"id": k, "ts": i}), k))
            continue
        ts = 1_000 + i * 10
        if late and roll < 0.12 and k in newest:
            ts = newest[k] - 1 - i % 997  # late (a time of its own: no tie to tell apart)
        else:
            newest[k] = ts
        out.append((orjson.dumps({"id": k, "ts": ts, "a": float(i), "b": float(ts % 97)}), k))
    return out


@pytest.mark.parametrize("window", [{"count": 8}, {"seconds": 0.6, "max_rows": 16}],
                         ids=["count", "time"])
def test_zero_skew_every_scored_window_is_found_again_offline(
        tmp_path: Path, window: dict[str, Any]) -> None:
    topic = new_topic()
    cfg = build_config({
        "source": {"url": "embedded", "data_dir": str(tmp_path), "workers": 2,
                   "subscription_type": "key_shared"},
        "server": {"metrics": ""},
        "streams": [{"name": "s", "topic": topic, "key": "id", "time": "ts",
                     "fields": ["a", "b"], "window": window, "allowed_lateness_s": 0.0}],
    })
    pipe = Pipeline(cfg)
    seen: list[tuple[str, int, int, np.ndarray, np.ndarray]] = []
    lock = threading.Lock()

    @pipe.model("s", every=1, max_batch=16)
    def record(batch: hd.WindowBatch) -> np.ndarray:
        with lock:
            for i, k in enumerate(batch.keys):
                seen.append((k, int(batch.lengths[i]), i, batch.values[i].copy(),
                             batch.ts_ns[i].copy()))
        return batch.lengths.astype(np.float64)

    items = _stream_events(seed=len(window), n=1_500, late=True)
    with pipe:
        counters = pipe.counters["s"]
        runner = pipe.runners["record"]
        for a in range(0, len(items), 100):  # in rounds: the model scores between them
            publish(pipe.url, topic, items[a:a + 100])
            wait_for(lambda a=a: counters.messages >= min(a + 100, len(items)), 60,
                     "the round taken in")
            wait_for(lambda: runner.tracker.pending == 0, 30, "the runner idle")
        live = pipe.store
        live_keys = live.keys("s")
        live_final = live.windows("s", live_keys)
        preds = pipe.predictions.snapshot("record")
        history = pipe.history("s")
        # each scored window's lineage, as its prediction carries it: the newest event time
        # and the last row's (a count window keeps late events, in arrival order)
        tw = hd.training_windows(history, {
            "id": [k for k, *_ in seen],
            "ts": [int(ts[-n:].max()) // 1_000_000 for _, n, _, _, ts in seen],
            "last": [int(ts[-1]) // 1_000_000 for *_, ts in seen],
        }, cfg.streams[0].spec(), last_time="last")
        replayed = hd.replay(history, cfg.streams[0].spec(), max_keys=64)
    assert counters.dead_letters > 0  # the poison was in the stream
    assert len(seen) > 150
    assert tw.report.left_out == counters.dead_letters  # the same rows left out
    for i, (k, n, _, values, ts) in enumerate(seen):
        assert tw.keys[i] == k
        assert tw.lengths[i] == n
        assert np.array_equal(tw.values[i], values), f"label {i} of key {k}"
        assert np.array_equal(tw.ts_ns[i], ts)
    # the lineage each prediction carries finds its window
    for k, p in preds.items():
        j = live_keys.index(k)
        assert p.window_rows == live_final.lengths[j]
        assert p.event_time_ns == live_final.ts_ns[j][-p.window_rows:].max()
        assert p.last_event_time_ns == live_final.ts_ns[j][-1]
    # replay equals the live store
    again = replayed.windows("s", live_keys)
    assert np.array_equal(again.values, live_final.values)
    assert np.array_equal(again.ts_ns, live_final.ts_ns)
    assert np.array_equal(again.lengths, live_final.lengths)
    if window.get("count") is None:
        assert replayed.stats()["streams"]["s"]["late_rejected"] > 0  # refused, as live


def test_topic_history_from_a_time_or_a_message(tmp_path: Path) -> None:
    import time

    import pulsar

    from .conftest import client

    topic = new_topic()
    cfg = build_config({
        "source": {"url": "embedded", "data_dir": str(tmp_path)}, "server": {"metrics": ""},
        "streams": [{"name": "s", "topic": topic, "key": "id", "time": "ts",
                     "fields": ["a", "b"], "window": {"count": 100}}],
    })
    first = [(orjson.dumps({"id": "x", "ts": i, "a": i, "b": 0}), "x") for i in range(10)]
    second = [(orjson.dumps({"id": "x", "ts": i, "a": i, "b": 0}), "x") for i in range(10, 25)]
    with Pipeline(cfg) as pipe:
        publish(pipe.url, topic, first)
        time.sleep(0.05)
        since = int(time.time() * 1000)
        time.sleep(0.05)
        publish(pipe.url, topic, second)
        spec = cfg.streams[0].spec()
        later = hd.replay(pipe.history("s", since_ms=since), spec)
        assert later.window("s", "x").values[:, 0].tolist() == list(range(10, 25))
        c = client(pipe.url)
        try:
            reader = c.create_reader(topic, pulsar.MessageId.earliest)
            ids = [reader.read_next(5000).message_id() for _ in range(12)]
        finally:
            c.close()
        h = hd.TopicHistory(pipe.url, cfg.streams[0], start_message_id=ids[11].serialize(),
                            embedded=True)
        from_12th = hd.replay(h, spec)
        assert from_12th.window("s", "x").values[:, 0].tolist() == list(range(11, 25))
        with pytest.raises(hd.ConfigError, match="of stream 's', not 't'"):
            hd.replay(h, hd.StreamSpec("t", key="id", time="ts", fields=["a", "b"]))
