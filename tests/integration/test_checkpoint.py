"""Checkpoints in a running pipeline, on real brokers: acknowledgement follows the checkpoint,
a restart restores the windows, and the broker redelivers only what they lack."""

from __future__ import annotations

from pathlib import Path

from heimdall.config import HeimdallConfig
from heimdall.pipeline import Pipeline

from .conftest import (
    assert_nothing_left,
    assert_windows_equal,
    config,
    events,
    new_topic,
    oracle,
    payload,
    publish,
    wait_for,
)


def with_checkpoints(cfg: HeimdallConfig, directory: Path, **kw: object) -> HeimdallConfig:
    data = cfg.model_dump()
    data["checkpoint"] = {"dir": str(directory), "interval_s": 0.2, **kw}
    data["server"]["token"] = None
    return HeimdallConfig(**data)


def test_restart_restores_windows_and_the_broker_replays_only_the_rest(
        broker_url: str, tmp_path: Path) -> None:
    topic = new_topic()
    cfg = with_checkpoints(config(broker_url, topic, tmp_path, window=8), tmp_path / "ckpt")
    first, second = events(3_000, 40, seed=1), events(2_000, 40, seed=2)
    pipe = Pipeline(cfg)
    with pipe:
        publish(pipe.url, topic, [(payload(e), e[0]) for e in first])
        wait_for(lambda: pipe.counters["s"].rows == len(first), 60, "the first events")
        wait_for(lambda: pipe.checkpointer is not None
                 and pipe.checkpointer.stats.acked >= len(first), 30, "checkpointed acks")
        url = pipe.url
        stats = pipe.stats()["checkpoint"]
        assert stats["written"] >= 1
        assert stats["failed"] == 0
    assert_windows_equal(pipe.store, oracle(first, 8))

    # a new process: the windows come back from the checkpoint, not from the broker
    again = Pipeline(cfg)
    with again:
        assert again.checkpointer is not None
        assert again.checkpointer.stats.restored_seq is not None
        assert_windows_equal(again.store, oracle(first, 8))
        publish(again.url, topic, [(payload(e), e[0]) for e in second])
        wait_for(lambda: again.counters["s"].rows == len(first) + len(second), 60,
                 "the second events")
        if broker_url != "embedded":  # pulsar-lite re-dispatches what awaits acks
            assert again.counters["s"].duplicates == 0
    assert_windows_equal(again.store, oracle(first + second, 8))
    if broker_url != "embedded":
        assert_nothing_left(url, topic, "heimdall", wait_ms=2000)


def test_unacknowledged_until_checkpointed(tmp_path: Path, real_pulsar: object) -> None:
    """Killed before any checkpoint (no stop, no final checkpoint): every message comes back
    to the next process, which applies each once."""
    url = real_pulsar.url  # type: ignore[attr-defined]
    topic = new_topic()
    cfg = with_checkpoints(config(url, topic, tmp_path, window=8), tmp_path / "ckpt",
                           interval_s=3600)
    evs = events(1_000, 20, seed=3)
    pipe = Pipeline(cfg)
    pipe.start()
    publish(url, topic, [(payload(e), e[0]) for e in evs])
    wait_for(lambda: pipe.counters["s"].rows == len(evs), 60, "all applied")
    assert pipe.checkpointer is not None
    ckpt = pipe.checkpointer
    wait_for(lambda: ckpt.pending() == len(evs), 10, "every batch awaiting its checkpoint")
    assert pipe.checkpointer.stats.acked == 0
    # die without a checkpoint: close the consumers unacknowledged, as a crash would
    assert pipe.source is not None
    pipe.source.stop(5)
    pipe.source = None
    pipe.checkpointer.stop(final=False)
    pipe.stop()
    # checkpoints often again: with Key_Shared, a consumer that joins gets its keys only once
    # what was dispatched before it joined is acknowledged, that is, at the next checkpoint.
    # Pulsar 4.0 also holds back the redeliveries of the second consumer's keys until new
    # messages arrive on the topic (tests/real_pulsar: seen without checkpoints too), so
    # traffic goes on after the restart, as in a live stream.
    more = events(200, 20, seed=4)
    again = Pipeline(with_checkpoints(cfg, tmp_path / "ckpt"))
    with again:
        publish(url, topic, [(payload(e), e[0]) for e in more])
        wait_for(lambda: again.counters["s"].rows == len(evs) + len(more), 60,
                 "the redeliveries and the new events")
        # the broker may deliver a message twice around a consumer's join: dropped by id
    assert_windows_equal(again.store, oracle(evs + more, 8))


def test_the_broker_killed_and_restarted_mid_stream(tmp_path: Path) -> None:
    """kill -9 of the broker while a backlog drains: Heimdall reconnects by itself, and after
    the broker is back every event is in the windows once."""
    from tests.real_pulsar.standalone import PulsarStandalone

    broker = PulsarStandalone(tmp_path / "broker").start()
    try:
        topic = new_topic()
        cfg = with_checkpoints(config(broker.url, topic, tmp_path, window=8),
                               tmp_path / "ckpt")
        first, second = events(100_000, 200, seed=5), events(2_000, 200, seed=6)
        publish(broker.url, topic, [(payload(e), e[0]) for e in first])
        pipe = Pipeline(cfg)
        with pipe:
            wait_for(lambda: pipe.counters["s"].rows > 0, 60, "ingest under way")
            broker.kill()
            at_kill = pipe.counters["s"].rows
            assert at_kill < len(first), "the backlog drained before the kill"
            broker.start()
            publish(broker.url, topic, [(payload(e), e[0]) for e in second])
            wait_for(lambda: pipe.counters["s"].rows == len(first) + len(second), 120,
                     "every event after the broker's restart")
            assert pipe.source is not None
            assert pipe.source.alive_workers == 2
        assert_windows_equal(pipe.store, oracle(first + second, 8))
    finally:
        broker.stop()


def test_a_poison_message_whose_acknowledgement_died_is_dead_lettered_once(
        tmp_path: Path, real_pulsar: object) -> None:
    """Dead letters out, then the process dies before their acknowledgements reach the
    broker: the next process gets them again, and must know them for dead letters already."""
    from .conftest import drain

    url = real_pulsar.url  # type: ignore[attr-defined]
    topic = new_topic()
    cfg = with_checkpoints(config(url, topic, tmp_path, window=8, workers=1),
                           tmp_path / "ckpt")
    good = events(200, 10, seed=5)
    poison = [(b'{"id": "p%d", "ts": 1, "a": "hot", "b": 1}' % i, f"p{i}") for i in range(20)]
    pipe = Pipeline(cfg)
    pipe.start()
    publish(url, topic, [(payload(e), e[0]) for e in good])
    wait_for(lambda: pipe.counters["s"].rows == len(good), 60, "the good events")
    assert pipe.source is not None
    assert pipe.checkpointer is not None
    ckpt = pipe.checkpointer
    wait_for(lambda: ckpt.stats.acked >= len(good), 30, "the good events checkpointed")
    pipe.source.crash_worker_after_next_batch("s", 0, after="dead_letters")
    publish(url, topic, poison)
    wait_for(lambda: pipe.source is not None and pipe.source.alive_workers == 0, 60,
             "the worker dead after its first dead letters")
    first_letters = pipe.counters["s"].dead_letters
    assert first_letters >= 1
    pipe.source.stop(5)  # as a crash: no acknowledgement of the poison messages went out
    pipe.source = None
    ckpt.stop(final=False)
    pipe.stop()

    more = events(50, 10, seed=6)
    again = Pipeline(cfg)
    with again:
        publish(url, topic, [(payload(e), e[0]) for e in more])
        wait_for(lambda: again.counters["s"].rows == len(good) + len(more), 60,
                 "the new events")
        wait_for(lambda: again.counters["s"].duplicates >= first_letters, 30,
                 "the poison dead-lettered before the crash redelivered, and dropped")
        # counters come from the checkpoint, which was before the poison
        wait_for(lambda: again.counters["s"].dead_letters == len(poison) - first_letters, 30,
                 "the rest of the poison dead-lettered")
    letters = drain(url, f"{topic}-heimdall-dlq", "check")
    ids = sorted(props["heimdall-message-id"] for _data, props in letters)
    assert len(ids) == len(poison), ids
    assert len(set(ids)) == len(poison)
