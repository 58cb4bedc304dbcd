"""Checkpoints without a broker: round trip, corruption, settings changes, pruning, acks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import heimdall as hd
from heimdall.checkpoint import Checkpointer, _file
from heimdall.config import CheckpointConfig, build_config
from heimdall.sources._ingest import StreamIngest


def specs(fields: tuple[str, ...] = ("a", "b")) -> list[hd.StreamSpec]:
    return [hd.StreamSpec("s", key="id", fields=fields, window=hd.CountWindow(4)),
            hd.StreamSpec("t", key="id", fields=["x"], dtype="float32",
                          window=hd.TimeWindow(seconds=5, max_rows=8))]


def filled(max_keys: int = 8) -> hd.WindowStore:
    """Random rows over more keys than max_keys (so there are evictions), str and int keys."""
    store = hd.WindowStore(specs(), max_keys=max_keys)
    rng = np.random.default_rng(3)
    for i in range(200):
        key: Any = f"k{rng.integers(12)}" if i % 3 else int(rng.integers(4))
        store.append("s", key, {"a": float(i), "b": float(rng.normal())}, ts_ns=i)
        store.append("t", key, {"x": float(i)}, ts_ns=i * 100_000_000)
    return store


def same(a: hd.WindowStore, b: hd.WindowStore) -> None:
    assert a.stats()["streams"] == b.stats()["streams"]
    for stream in ("s", "t"):
        assert sorted(map(str, a.keys(stream))) == sorted(map(str, b.keys(stream)))
        for key in a.keys(stream):
            wa, wb = a.window(stream, key), b.window(stream, key)
            np.testing.assert_array_equal(wa.values, wb.values)
            np.testing.assert_array_equal(wa.ts_ns, wb.ts_ns)


def cfg(tmp_path: Path, **kw: Any) -> CheckpointConfig:
    return CheckpointConfig(dir=str(tmp_path / "ckpt"), **kw)


def test_round_trip_restores_every_window_and_counter(tmp_path: Path) -> None:
    store = filled()
    path = Checkpointer(cfg(tmp_path), store, []).checkpoint()
    assert path is not None
    assert path.exists()
    fresh = hd.WindowStore(specs(), max_keys=8)
    ck = Checkpointer(cfg(tmp_path), fresh, [])
    assert ck.restore() == 1
    same(store, fresh)
    assert fresh.stats()["streams"]["s"]["evictions"] > 0
    # the restored store goes on like the original: same evictions, same windows
    for st in (store, fresh):
        for i in range(50):
            st.append("s", f"n{i % 10}", {"a": 1.0 * i, "b": 0.0}, ts_ns=1000 + i)
    same(store, fresh)


def test_corrupt_checkpoints_are_skipped_for_the_one_before_when_asked(tmp_path: Path) -> None:
    store = filled()
    ck = Checkpointer(cfg(tmp_path, keep=5), store, [])
    ck.checkpoint()
    store.append("s", "late", {"a": 1.0, "b": 2.0}, ts_ns=10_000)
    second = ck.checkpoint()
    third = ck.checkpoint()
    assert second is not None
    assert third is not None
    third.write_bytes(third.read_bytes()[:-100])  # truncated
    raw = bytearray(second.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit
    second.write_bytes(bytes(raw))
    fresh = hd.WindowStore(specs(), max_keys=8)
    restorer = Checkpointer(cfg(tmp_path, on_corrupt="use_older"), fresh, [])
    assert restorer.restore() == 1
    assert restorer.stats.skipped_corrupt == [third.name, second.name]
    assert ("s", "late") not in fresh
    with pytest.raises(hd.CorruptCheckpointError, match="checksum"):
        _file.read(second)
    (tmp_path / "ckpt" / "ckpt-000000000009.hdc").write_bytes(b"nonsense")
    with pytest.raises(hd.CorruptCheckpointError, match="not a Heimdall checkpoint"):
        _file.read(tmp_path / "ckpt" / "ckpt-000000000009.hdc")


def _damage(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("all_damaged", [True, False])
def test_a_damaged_newest_checkpoint_refuses_to_start_by_default(
        tmp_path: Path, all_damaged: bool) -> None:
    """The broker acknowledged what the damaged checkpoints covered: starting empty (or
    from an older one) would lose those windows without a word."""
    store = filled()
    ck = Checkpointer(cfg(tmp_path, keep=5), store, [])
    first = ck.checkpoint()
    second = ck.checkpoint()
    assert first is not None
    assert second is not None
    _damage(second)
    if all_damaged:
        first.write_bytes(first.read_bytes()[:-10])
    fresh = hd.WindowStore(specs(), max_keys=8)
    with pytest.raises(hd.CorruptCheckpointError) as err:
        Checkpointer(cfg(tmp_path), fresh, []).restore()
    msg = str(err.value)
    assert second.name in msg
    assert first.name in msg  # damaged too, or the older one that would lose events
    assert "--start-empty" in msg
    assert "use_older" in msg
    assert fresh.keys("s") == []
    empty = Checkpointer(cfg(tmp_path, on_corrupt="start_empty"), fresh, [])
    assert empty.restore() is None
    assert fresh.keys("s") == []


def test_a_checkpoint_of_other_settings_is_refused_or_discarded(tmp_path: Path) -> None:
    Checkpointer(cfg(tmp_path), filled(), []).checkpoint()
    other = hd.WindowStore(specs(fields=("a", "b", "c")), max_keys=8)
    with pytest.raises(hd.ConfigError, match=r"stream 's' fields: \['a', 'b'\] -> "
                       r"\['a', 'b', 'c'\]"):
        Checkpointer(cfg(tmp_path), other, []).restore()
    assert Checkpointer(cfg(tmp_path, on_mismatch="discard"), other, []).restore() is None
    assert other.keys("s") == []
    small = hd.WindowStore(specs(), max_keys=2)
    with pytest.raises(hd.CapacityError, match="max_keys is 2"):
        Checkpointer(cfg(tmp_path), small, []).restore()


def test_keeps_the_newest_n_and_numbers_on_after_a_restart(tmp_path: Path) -> None:
    store = filled()
    ck = Checkpointer(cfg(tmp_path, keep=2), store, [])
    for _ in range(4):
        ck.checkpoint()
    assert [s for s, _ in _file.list_checkpoints(tmp_path / "ckpt")] == [4, 3]
    again = Checkpointer(cfg(tmp_path, keep=2), hd.WindowStore(specs(), max_keys=8), [])
    assert again.restore() == 4
    assert again.checkpoint() == _file.path_for(tmp_path / "ckpt", 5)


def ingest_for(store: hd.WindowStore) -> StreamIngest:
    c = build_config({"streams": [{"name": "s", "topic": "t", "key": "id",
                                   "fields": ["a", "b"], "window": {"count": 4}}]})
    return StreamIngest(c.streams[0], store, dedup_window=1000, max_message_bytes=1 << 20)


def test_acknowledges_only_after_writing_and_remembers_what_it_acknowledged(
        tmp_path: Path) -> None:
    store = hd.WindowStore(specs(), max_keys=8)
    ingest = ingest_for(store)
    acked: list[tuple[Any, list[Any]]] = []
    ck = Checkpointer(cfg(tmp_path), store, [ingest], ack=lambda c, m: acked.append((c, m)))
    ingest.apply([b'{"id": "k", "a": 1, "b": 2}'], [b"id-1"])
    ingest.pending.append(("consumer", ["msg-1"], [b"id-1"]))
    ingest.pending_messages = 1
    assert ck.pending() == 1
    ck.checkpoint()
    assert acked == [("consumer", ["msg-1"])]
    assert ingest.pending == []
    assert ck.pending() == 0
    # a restarted process drops the redelivery of what the checkpoint covered
    fresh = hd.WindowStore(specs(), max_keys=8)
    fresh_ingest = ingest_for(fresh)
    Checkpointer(cfg(tmp_path), fresh, [fresh_ingest]).restore()
    assert fresh.window("s", "k").values.tolist() == [[1.0, 2.0]]
    result = fresh_ingest.apply([b'{"id": "k", "a": 1, "b": 2}'], [b"id-1"])
    assert result.duplicates == [0]
    assert fresh.window("s", "k").values.tolist() == [[1.0, 2.0]]
    assert fresh_ingest.counters.rows == 1  # counters restored, not counted twice


def test_a_failed_write_acknowledges_nothing_and_keeps_the_batches(tmp_path: Path) -> None:
    store = hd.WindowStore(specs(), max_keys=8)
    ingest = ingest_for(store)
    blocker = tmp_path / "ckpt"
    blocker.write_text("a file where the directory should be")
    acked: list[Any] = []
    ck = Checkpointer(cfg(tmp_path), store, [ingest], ack=lambda c, m: acked.append(m))
    ingest.pending.append(("c", ["m1"], [b"1"]))
    ingest.pending_messages = 1
    assert ck.checkpoint() is None
    assert ck.stats.failed == 1
    assert acked == []
    assert ingest.pending == [("c", ["m1"], [b"1"])]
    assert ck.pending() == 1


def test_unbounded_key_cardinality_stays_within_the_bound() -> None:
    """Keys that never repeat: the store holds max_keys, counts every eviction, and Python
    memory stops growing once it is full (no per-key leftovers)."""
    import tracemalloc

    store = hd.WindowStore(specs(), max_keys=100)
    rows = np.ones((1_000, 2))
    tracemalloc.start()
    try:
        for b in range(5):
            store.append_batch("s", [f"u{b}-{i}" for i in range(1_000)], rows)
        warm, _ = tracemalloc.get_traced_memory()
        for b in range(5, 100):
            store.append_batch("s", [f"u{b}-{i}" for i in range(1_000)], rows)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    st = store.stats()["streams"]["s"]
    assert st["keys"] == 100
    assert st["evictions"] == 100_000 - 100
    assert after - warm < 256 * 1024, f"grew {after - warm} bytes over 95,000 new keys"


def test_ids_stay_until_their_acknowledgements_can_have_reached_the_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client sends acknowledgements in groups (100 ms): checkpoints taken in quick
    succession (early, for max_pending) must each keep the ids of all those acknowledged in
    the last _ACK_SETTLE_S, not only of the one before, or a crash redelivers messages whose
    ids no checkpoint holds, and they are applied twice."""
    from heimdall.checkpoint import checkpointer as mod

    now = [100.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])
    store = hd.WindowStore(specs(), max_keys=8)
    ingest = ingest_for(store)
    ck = Checkpointer(cfg(tmp_path), store, [ingest], ack=lambda c, m: None)
    for n in range(1, 5):  # four checkpoints 10 ms apart
        ingest.pending.append(("consumer", [f"msg-{n}"], [f"id-{n}".encode()]))
        ingest.pending_messages = 1
        ck.checkpoint()
        now[0] += 0.01
    fresh = hd.WindowStore(specs(), max_keys=8)
    fresh_ingest = ingest_for(fresh)
    Checkpointer(cfg(tmp_path), fresh, [fresh_ingest]).restore()
    held = [f"id-{n}".encode() for n in range(1, 5)]
    assert fresh_ingest.applied.duplicates(held) == [0, 1, 2, 3]
    # long after, a checkpoint keeps only the one before it
    now[0] += mod._ACK_SETTLE_S + 1
    ingest.pending.append(("consumer", ["msg-5"], [b"id-5"]))
    ingest.pending_messages = 1
    ck.checkpoint()
    fresh = hd.WindowStore(specs(), max_keys=8)
    fresh_ingest = ingest_for(fresh)
    Checkpointer(cfg(tmp_path), fresh, [fresh_ingest]).restore()
    assert fresh_ingest.applied.duplicates([*held, b"id-5"]) == [3, 4]


def test_restored_ids_stay_in_checkpoints_while_dedup_holds_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the broker redelivers what the restored checkpoint covers but may not
    have seen acknowledged, and it may do so late (a Key_Shared consumer waits for others'
    acknowledgements). If the process dies again before such a redelivery, the next restart
    must still know those ids: checkpoints carry the restored ids for as long as the
    in-memory dedup holds them, however long that takes, and no longer."""
    from heimdall.checkpoint import checkpointer as mod

    now = [100.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])

    def restart() -> tuple[StreamIngest, Checkpointer]:
        fresh = hd.WindowStore(specs(), max_keys=8)
        ingest = ingest_for(fresh)
        ck = Checkpointer(cfg(tmp_path), fresh, [ingest], ack=lambda c, m: None)
        ck.restore()
        return ingest, ck

    first = ingest_for(hd.WindowStore(specs(), max_keys=8))
    ck = Checkpointer(cfg(tmp_path), first.store, [first], ack=lambda c, m: None)
    first.pending.append(("consumer", ["msg-1"], [b"id-1"]))
    first.pending_messages = 1
    ck.checkpoint()
    ingest, ck = restart()  # the first crash
    now[0] += 10 * mod._ACK_SETTLE_S  # id-1's redelivery has not come yet
    ingest.pending.append(("consumer", ["msg-2"], [b"id-2"]))
    ingest.pending_messages = 1
    ck.checkpoint()
    now[0] += 10 * mod._ACK_SETTLE_S
    ingest.pending.append(("consumer", ["msg-3"], [b"id-3"]))
    ingest.pending_messages = 1
    ck.checkpoint()
    again, _ = restart()  # the second crash: id-1 is still known
    assert again.applied.duplicates([b"id-1", b"id-2", b"id-3"]) == [0, 1, 2]
    # once dedup has let the restored ids go (its horizon passed), checkpoints drop them
    for n in range(2 * ingest.applied.capacity):
        ingest.applied.add([f"other-{n}".encode()])
    ingest.pending.append(("consumer", ["msg-4"], [b"id-4"]))
    ingest.pending_messages = 1
    now[0] += 10 * mod._ACK_SETTLE_S
    ck.checkpoint()
    last, _ = restart()
    assert last.applied.duplicates([b"id-1", b"id-4"]) == [1]


def _batched_id(entry: int, index: int, size: int) -> bytes:
    """A serialized MessageIdData: ledger 7, ``entry``, message ``index`` of a batch of
    ``size`` (varints all below 128)."""
    return bytes([0x08, 7, 0x10, entry, 0x20, index, 0x30, size])


def test_a_producer_batch_split_over_checkpoints_keeps_its_ids_till_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pulsar acknowledges a producer batch to the broker only once all its messages are
    acknowledged, so a batch whose first part one checkpoint covered and whose rest comes in
    a later one, more than _ACK_SETTLE_S after, is redelivered whole by a crash before that:
    every checkpoint in between, and the one that covers the rest, must hold the first
    part's ids (they were dropped after _ACK_SETTLE_S)."""
    from heimdall.checkpoint import checkpointer as mod
    from heimdall.sources.pulsar import batch_position

    now = [100.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])
    store = hd.WindowStore(specs(), max_keys=8)
    ingest = ingest_for(store)
    ck = Checkpointer(cfg(tmp_path), store, [ingest], ack=lambda c, m: None,
                      entry_of=batch_position)
    worker, other = object(), object()
    first = [_batched_id(1, 0, 1), *(_batched_id(2, i, 6) for i in range(3))]
    rest = [_batched_id(2, i, 6) for i in range(3, 6)]

    def checkpoint(*applied: tuple[object, list[bytes]]) -> list[bytes]:
        for w, ids in applied:
            ingest.pending.append((w, list(ids), ids))
            ingest.pending_messages += len(ids)
        ck.checkpoint()
        now[0] += 10 * mod._ACK_SETTLE_S
        fresh = ingest_for(hd.WindowStore(specs(), max_keys=8))
        Checkpointer(cfg(tmp_path), fresh.store, [fresh]).restore()
        known = [*first, *rest, b"x-1", b"x-2", b"y-1"]
        return [known[i] for i in fresh.applied.duplicates(known)]

    # (each checkpoint also holds the one before it, however old)
    # entry 2's first half, then another worker's messages, then its rest
    assert checkpoint((worker, first)) == first
    assert checkpoint((other, [b"x-1"])) == [*first, b"x-1"]
    assert checkpoint((other, [b"x-2"])) == [*first[1:], b"x-1", b"x-2"]  # first[0] gone
    # the checkpoint that takes the rest fails to write: that changes nothing, and the
    # next one, given the same pending, closes the batch
    ingest.pending.append((worker, list(rest), rest))
    ingest.pending_messages += len(rest)

    def fail(*args: Any) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(mod._file, "write", fail)
        assert ck.checkpoint() is None
    assert checkpoint() == [*first[1:], *rest, b"x-2"]
    # once whole, its ids ride like that checkpoint's own: held while they may be unsettled
    assert checkpoint((worker, [b"y-1"])) == [*first[1:], *rest, b"y-1"]
    assert checkpoint((other, [b"x-1"])) == [b"x-1", b"y-1"]
    # a batch still open after several checkpoints accumulates; a worker with nothing new
    # keeps its batch open
    opening = [_batched_id(3, i, 4) for i in range(2)]
    ingest.pending.append((worker, opening[:1], opening[:1]))
    ingest.pending.append((other, [b"x-1"], [b"x-1"]))
    ingest.pending_messages += 2
    ck.checkpoint()
    held = ck._open["s"].open[id(worker)]
    assert held[1] == opening[:1]
    ingest.pending.append((worker, opening[1:], opening[1:]))
    ingest.pending_messages += 1
    ck.checkpoint()
    assert ck._open["s"].open[id(worker)][1] == opening
    ingest.pending.append((other, [b"x-2"], [b"x-2"]))
    ingest.pending_messages += 1
    ck.checkpoint()
    assert ck._open["s"].open[id(worker)][1] == opening
    # ... but not for ever: after IDLE_MAX checkpoints without it, the rest is not coming
    for _ in range(mod.OpenBatches.IDLE_MAX - 2):
        ck.checkpoint()
    assert ck._open["s"].open[id(worker)][2] == mod.OpenBatches.IDLE_MAX - 1
    ck.checkpoint()
    assert ck._open["s"].open == {}
