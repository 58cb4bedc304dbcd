"""StreamIngest without a broker: redeliveries dropped, bad messages reported, rows applied."""

from __future__ import annotations

import time

import orjson
from hypothesis import given
from hypothesis import strategies as st

import heimdall as hd
from heimdall.config import build_config
from heimdall.sources._ingest import StreamIngest
from heimdall.sources.dedup import AppliedIds


def _ingest(max_bytes: int = 1 << 20, evict: bool = True, max_keys: int = 100) -> StreamIngest:
    cfg = build_config({"streams": [{"name": "s", "topic": "t", "key": "id", "time": "ts",
                                     "fields": ["a"], "window": {"count": 4}}]})
    store = hd.WindowStore([cfg.streams[0].spec()], max_keys=max_keys, evict=evict)
    return StreamIngest(cfg.streams[0], store, dedup_window=1000, max_message_bytes=max_bytes)


def _p(key: str, ts: int, a: float) -> bytes:
    return orjson.dumps({"id": key, "ts": ts, "a": a})


def test_a_redelivered_message_is_applied_once() -> None:
    ing = _ingest()
    r1 = ing.apply([_p("k", 1, 1.0), _p("k", 2, 2.0)], [b"m1", b"m2"])
    r2 = ing.apply([_p("k", 2, 2.0), _p("k", 3, 3.0), _p("k", 3, 3.0)], [b"m2", b"m3", b"m3"])
    assert r1.duplicates == []
    assert r2.duplicates == [0, 2]
    assert ing.store.window("s", "k").values.ravel().tolist() == [1.0, 2.0, 3.0]
    assert ing.counters.duplicates == 2
    assert ing.counters.rows == 3


def test_bad_messages_are_reported_and_not_remembered() -> None:
    ing = _ingest(max_bytes=60)
    big = orjson.dumps({"id": "k", "ts": 1, "a": 1.0, "pad": "x" * 100})
    r = ing.apply([b"nope", big, _p("k", 1, 1.0)], [b"a", b"b", b"c"])
    assert [i for i, _ in r.bad] == [0, 1]
    assert "oversized" in r.bad[1][1]
    assert ing.counters.dead_letters == 2
    # a bad message that comes back before it reached the dead-letter topic is
    # dead-lettered again, not silently dropped; once there, a redelivery is a duplicate
    again = ing.apply([b"nope"], [b"a"])
    assert again.duplicates == []
    assert len(again.bad) == 1
    ing.dead_lettered([b"nope"], [b"a"])
    assert ing.apply([b"nope"], [b"a"]).duplicates == [0]
    assert ing.counters.dead_letters == 3


def test_a_full_store_without_eviction_dead_letters_the_new_keys() -> None:
    ing = _ingest(evict=False, max_keys=2)
    r = ing.apply([_p("a", 1, 1.0), _p("b", 1, 1.0), _p("c", 1, 1.0), _p("a", 2, 2.0)],
                  [b"1", b"2", b"3", b"4"])
    assert [i for i, _ in r.bad] == [2]
    assert "CapacityError" in r.bad[0][1]
    assert ing.store.window("s", "a").values.ravel().tolist() == [1.0, 2.0]


def test_applied_ids_forget_after_two_generations() -> None:
    seen = AppliedIds(capacity=1000)
    seen.add(list(range(1000)))  # fills the first generation
    seen.add(list(range(1000, 2000)))  # and the second: the first is dropped
    assert seen.duplicates([5, 1500]) == [1]
    assert len(seen) <= 2000


@given(st.lists(st.integers(0, 30), max_size=40), st.lists(st.integers(0, 30), max_size=40))
def test_applied_ids_duplicates_equal_a_row_by_row_model(held: list[int], batch: list[int]) -> None:
    seen = AppliedIds(capacity=1000)
    seen.add(held)
    expected, here = [], set()
    for i, mid in enumerate(batch):
        if mid in here or mid in held:
            expected.append(i)
        here.add(mid)
    assert seen.duplicates(batch) == expected


class _Msg:
    """A delivered message as a broker client hands it over: a new object each delivery,
    hashed by identity, its id read through a call (counted)."""

    reads = 0

    def __init__(self, mid: int) -> None:
        self.mid = mid

    @classmethod
    def id_of(cls, m: _Msg) -> int:
        cls.reads += 1
        return m.mid


def _payload(mid: int) -> bytes:
    return b"p%d" % (mid % 7)  # a redelivery repeats its payload; other messages may too


@given(st.lists(st.lists(st.integers(0, 30), max_size=12), max_size=8))
def test_applied_ids_by_fingerprint_equal_an_id_by_id_model(batches: list[list[int]]) -> None:
    """Handles and payload fingerprints (which many messages share) give the answer by id."""
    seen = AppliedIds(capacity=1000, id_of=_Msg.id_of)
    held: set[int] = set()
    for batch in batches:
        expected, here = [], set()
        for i, mid in enumerate(batch):
            if mid in here or mid in held:
                expected.append(i)
            here.add(mid)
        msgs = [_Msg(m) for m in batch]
        fps = [hash(_payload(m)) for m in batch]
        assert seen.duplicates(msgs, fps) == expected
        seen.add(msgs, fps)
        held |= here


def test_a_batch_of_new_payloads_reads_no_message_id() -> None:
    seen = AppliedIds(capacity=1000, id_of=_Msg.id_of)
    _Msg.reads = 0
    for start in (0, 100):
        msgs = [_Msg(m) for m in range(start, start + 100)]
        fps = [hash(b"payload %d" % m) for m in range(start, start + 100)]
        dups, clean = seen.check(msgs, fps)
        seen.add(msgs, fps)
        assert (dups, clean) == ([], True)
    assert _Msg.reads == 0
    again = [_Msg(5), _Msg(500)]  # a redelivery, and a new message with a payload seen before
    assert seen.duplicates(again, [hash(b"payload 5"), hash(b"payload 150")]) == [0]
    assert _Msg.reads == 4  # two candidates, each compared with the message held


def test_ids_restored_without_fingerprints_are_recognised_until_two_generations_pass() -> None:
    seen = AppliedIds(capacity=10, id_of=_Msg.id_of)
    seen.add_ids([7])
    assert seen.duplicates([_Msg(7), _Msg(8)], [1, 2]) == [0]
    seen.add([_Msg(m) for m in range(20, 30)], list(range(20, 30)))  # a generation
    assert seen.duplicates([_Msg(7)], [1]) == [0]
    seen.add([_Msg(m) for m in range(30, 40)], list(range(30, 40)))  # and another
    assert seen.duplicates([_Msg(7)], [1]) == []


def test_a_batch_with_duplicates_and_bad_messages_reports_them_at_their_places() -> None:
    ing = _ingest()
    ing.apply([_p("k", 1, 1.0)], [b"m1"])
    r = ing.apply([_p("k", 1, 1.0), b"nope", _p("k", 2, 2.0), _p("k", 2, 2.0), b"{}",
                   _p("k", 3, 3.0)], [b"m1", b"x", b"m2", b"m2", b"y", b"m3"])
    assert r.duplicates == [0, 3]
    assert [i for i, _ in r.bad] == [1, 4]
    assert ing.store.window("s", "k").values.ravel().tolist() == [1.0, 2.0, 3.0]


def test_listeners_hear_each_applied_row_with_its_message() -> None:
    """A model's runner is told each row's key, message id and send time: every message's
    when all are good, and with a bad, a duplicate or a refused one only the rows applied."""
    ing = _ingest(evict=False, max_keys=2)
    heard: list[tuple[list[object], list[object], list[float]]] = []
    ing.listeners.append(lambda keys, ids, sent: heard.append((keys, ids, sent)))
    ing.apply([_p("a", 1, 1.0), _p("b", 1, 2.0)], [b"1", b"2"], sent_ms=[10.0, 11.0])
    ing.apply([_p("a", 2, 1.0), b"nope", _p("b", 1, 2.0), _p("c", 1, 3.0), _p("b", 2, 4.0)],
              [b"3", b"4", b"2", b"5", b"6"], sent_ms=[12.0, 13.0, 11.0, 14.0, 15.0])
    assert heard == [(["a", "b"], [b"1", b"2"], [10.0, 11.0]),
                     (["a", "b"], [b"3", b"6"], [12.0, 15.0])]  # "c": no room, refused


def test_written_ms_is_when_the_rows_were_in_the_window() -> None:
    ing = _ingest()
    seen: list[float] = []

    def listener(keys: list[object], ids: list[object], sent: list[float]) -> None:
        assert ing.store.window("s", "k").values.ravel().tolist() == [1.0]
        seen.append(time.time_ns() / 1e6)

    ing.listeners.append(listener)
    before = time.time_ns() / 1e6
    r = ing.apply([_p("k", 1, 1.0)], [b"m1"])
    assert before <= r.written_ms <= seen[0]  # stamped after the write, before what follows


def test_batch_rest_reads_a_serialized_message_id() -> None:
    from heimdall.sources.pulsar import batch_rest

    # (ledger 0, entry 0, batch_index 3, batch_size 7), as pulsar-client 3.13 serializes it
    assert batch_rest(bytes.fromhex("0800100020033007")) == 3
    assert batch_rest(bytes.fromhex("0800100020063007")) == 0  # the batch's last
    assert batch_rest(bytes.fromhex("08001001")) == -1  # not batched
    # a partition (field 3), two-byte varints, and an ack set (field 5, packed) skipped
    assert batch_rest(bytes.fromhex("08ac02109601180220052a020102300a")) == 4
    assert batch_rest(bytes.fromhex("08001000200330")) == -1  # truncated
    assert batch_rest(bytes.fromhex("0d00000000")) == -1  # a wire type MessageIdData lacks


def test_batch_position_reads_the_entry_of_a_batched_message() -> None:
    from heimdall.sources.pulsar import batch_position

    # ledger 300, entry 150, partition 2, batch_index 5 of 10 (the ack set skipped)
    assert batch_position(bytes.fromhex("08ac02109601180220052a020102300a")) == ((300, 150, 2), 4)
    assert batch_position(bytes.fromhex("0807100920003002")) == ((7, 9, -1), 1)  # no partition
    assert batch_position(bytes.fromhex("08001001")) is None  # not batched


def test_fingerprints_with_equal_hashes_are_told_apart_by_id() -> None:
    """-1 and -2 have the same Python hash: the C table holds them as one fingerprint, so
    both become candidates and their ids decide."""
    assert hash(-1) == hash(-2)
    seen = AppliedIds(capacity=1000, id_of=_Msg.id_of)
    seen.add([_Msg(1)], [-1])
    assert seen.duplicates([_Msg(2), _Msg(1)], [-2, -1]) == [1]
    seen.add([_Msg(2)], [-2])  # a second message under the shared hash: both ids kept
    assert seen.duplicates([_Msg(1), _Msg(2), _Msg(3)], [-1, -2, -2]) == [0, 1]


def test_a_batch_larger_than_the_capacity_is_held_whole() -> None:
    """The table grows past its capacity (a batch may overshoot it before the generation
    turns), and every entry stays found."""
    from heimdall._core import FpTable, candidates

    new, old = FpTable(8), FpTable(8)
    assert new.add(list(range(5000)), [f"h{i}" for i in range(5000)]) == []
    assert len(new) == 5000
    assert new.get(4999) == "h4999"
    assert new.get(5000) is None
    at, firsts = candidates(new, old, [5000, 3, 7, 5001, 5001])
    assert (at, firsts) == ([1, 2, 4], [1, 2, 3])
    assert new.reset()[:2] == ["h0", "h1"]
    assert len(new) == 0
    assert new.get(3) is None
