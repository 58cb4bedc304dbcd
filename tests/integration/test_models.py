"""Models in the pipeline, on real brokers: predictions reach a topic with their fields."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

import heimdall as hd
from heimdall.config import build_config
from heimdall.pipeline import Pipeline
from heimdall.sinks import PulsarSink

from .conftest import config, drain, events, new_topic, payload, publish, wait_for

N_EVENTS = 2_000
N_KEYS = 50


def test_predictions_reach_the_topic_with_their_fields(broker_url: str, tmp_path: Path) -> None:
    topic, out_topic = new_topic(), new_topic()
    pipe = Pipeline(config(broker_url, topic, tmp_path, window=8))
    got: list[hd.WindowBatch] = []

    @pipe.model("s", every=1, max_batch=64, version="2", sink=PulsarSink(out_topic))
    def last_a(batch: hd.WindowBatch) -> np.ndarray:
        got.append(batch)
        return batch.values[:, -1, 0].copy()  # the newest event's "a"

    evs = events(N_EVENTS, N_KEYS, seed=5)
    last = {k: (ts, a) for k, ts, a, _b in evs}
    with pipe:
        publish(pipe.url, topic, [(payload(e), e[0]) for e in evs])
        runner = pipe.runners["last_a"]

        def caught_up() -> bool:
            try:
                return all(pipe.predictions.latest("last_a", k).score == a
                           for k, (_ts, a) in last.items())
            except hd.KeyNotFoundError:
                return False

        wait_for(caught_up, 60, "a prediction of every key's newest event")
        url = pipe.url
        wait_for(lambda: runner.tracker.pending == 0, 30, "the runner idle")
        stats = pipe.stats()["models"]["last_a"]
        assert stats["failed"] == stats["wrong_output"] == 0
        assert stats["scored"] + stats["skipped"] == N_EVENTS
        records = [msgspec.json.decode(data) for data, _ in drain(url, out_topic, "check")]
    assert runner.stats.scored == len(records)
    assert max(len(b) for b in got) <= 64
    newest: dict[str, dict[str, object]] = {}
    for r in records:
        assert set(r) == {"model", "version", "key", "score", "event_time_ns", "message_id",
                          "latency_ms", "predicted_at_ns", "window_rows",
                          "last_event_time_ns"}
        assert (r["model"], r["version"]) == ("last_a", "2")
        assert r["message_id"].startswith("(")  # a Pulsar message id
        assert r["latency_ms"] >= 0
        newest[r["key"]] = r
    assert set(newest) == set(last)
    for k, (ts, a) in last.items():  # the last prediction of each key: its newest event
        assert newest[k]["score"] == a
        assert newest[k]["event_time_ns"] == ts * 1_000_000
        assert 1 <= newest[k]["window_rows"] <= 8


def test_a_model_from_config_runs_and_a_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    topic = new_topic()
    base = {
        "source": {"data_dir": str(tmp_path)},
        "server": {"metrics": ""},
        "streams": [{"name": "s", "topic": topic, "key": "id", "time": "ts",
                     "fields": ["a", "b"], "window": {"count": 4}}],
    }
    cfg = build_config({**base, "models": [
        {"name": "z", "stream": "s", "path": "tests.integration.models_fixture:window_sum",
         "every": 2}]})
    pipe = Pipeline(cfg)
    with pipe:
        evs = events(200, 5, seed=9)
        publish(pipe.url, topic, [(payload(e), e[0]) for e in evs])
        wait_for(lambda: pipe.counters["s"].rows == 200, 60, "events applied")
        wait_for(lambda: pipe.runners["z"].tracker.pending == 0, 30, "models caught up")
        from tests.integration.models_fixture import window_sum

        for k in {e[0] for e in evs}:  # 40 events per key, every=2: the last one is due
            p = pipe.predictions.latest("z", k)
            assert p.score == window_sum(pipe.store.windows("s", [k]))[0]
    bad = {**base, "models": [{"name": "z", "stream": "s", "path": "no_such_module:f"}]}
    with pytest.raises(hd.ConfigError, match=r"models \('z'\).path: cannot import "
                       r"'no_such_module:f'"):
        Pipeline(build_config(bad))
