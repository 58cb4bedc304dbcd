"""The C key table (_keys.h) that mirrors a ring's dict index for the batch lookups.

Every change of the index goes through ``index_put`` / ``index_remove`` / ``index_rebuild``;
``index_check`` says whether the table holds exactly the dict's keys and slots, each
reachable from its home bucket. These tests drive the table through puts, removes (the
backward shift of linear probing), colliding hashes, equal keys that are distinct objects,
and keys of other types, and compare every lookup with the dict's answer; and pin that a
batch's new keys get the slots one ``new_slot`` each would give them.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import heimdall as hd
from heimdall.window._ring import Ring


def _ring(max_keys: int = 12) -> Ring:
    spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(2))
    return hd.WindowStore([spec], max_keys=max_keys)._rings["s"]


def _fresh(key: str | int) -> str | int:
    """An equal key that is another object (as a decoder makes them)."""
    return "".join(list(key)) if isinstance(key, str) else int(str(key))


# hash(-1) == hash(-2) == -2, and ints 2**61 - 1 apart share a hash: collisions on purpose
POOL: list[str | int] = ["a", "b", "sensor-1", "sensor-2", "é", "日本", 0, 1, -1, -2, 7,
                         2**61 - 1, 2**62, 2**61 + 6, 10**30, -(10**30)]


def _agrees(ring: Ring) -> None:
    assert ring.index_check()
    keys = [_fresh(k) for k in POOL]
    want = [ring.index.get(k, -1) for k in keys]
    assert ring.lookup(keys, -1).tolist() == want
    assert ring.lookup(POOL, -1).tolist() == want
    mixed = [k if i % 3 else _fresh(k) for i, k in enumerate(POOL * 3)]  # held and afresh
    assert ring.lookup(mixed, -1).tolist() == want * 3
    held = [k for k in keys if k in ring.index]
    got = ring.lookup(held)
    assert got is not None
    assert got.tolist() == [ring.index[k] for k in held]
    if len(held) < len(keys):
        assert ring.lookup(keys) is None  # strict: a key not held answers None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(POOL), st.integers(0, 11)),
                max_size=60))
def test_puts_and_removes_agree_with_the_dict(ops: list[tuple[bool, str | int, int]]) -> None:
    ring = _ring()
    for put, key, slot in ops:
        if put and (key in ring.index or len(ring.index) < 12):
            ring.index_put(_fresh(key), slot)
        elif not put:
            ring.index_remove(_fresh(key))
        _agrees(ring)
    ring.index_rebuild()
    _agrees(ring)


def test_a_full_table_of_colliding_ints() -> None:
    """Every key in one run of the probe sequence, removed from the middle outwards."""
    ring = _ring(64)
    keys = [i * (2**61 - 1) for i in range(64)]  # all hash to 0
    for s, key in enumerate(keys):
        ring.index_put(key, s)
    assert ring.index_check()
    assert ring.lookup(keys).tolist() == list(range(64))  # type: ignore[union-attr]
    for key in keys[32:] + keys[:32]:
        ring.index_remove(key)
        assert ring.index_check()
        assert ring.lookup(keys, -1).tolist() == [ring.index.get(k, -1) for k in keys]
    assert ring.index == {}


class Color(IntEnum):
    RED = 1


class Tag(str):
    pass


def test_keys_of_other_types_are_read_through_the_dict() -> None:
    """A str or int subclass is a valid key; while one is held the lookups use the dict
    (its __hash__ / __eq__ may differ), and the table takes over again once it is gone."""
    spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(2))
    store = hd.WindowStore([spec], max_keys=3)
    store.append_batch("s", ["a", Tag("t"), Color.RED], np.ones((3, 1)))
    ring = store._rings["s"]
    assert not ring.index_check()  # not in step: the dict answers
    assert ring.lookup(["t", 1, "a"]).tolist() == [1, 2, 0]  # type: ignore[union-attr]
    assert store.window("s", "t").values.tolist() == [[1.0]]
    store.append_batch("s", ["t", 1], np.full((2, 1), 2.0))
    assert len(store.window("s", Tag("t"))) == 2
    store.append_batch("s", ["x", "y", "z"], np.ones((3, 1)))  # evicts a, t, then 1
    assert sorted(store.keys("s")) == ["x", "y", "z"]
    assert ring.index_check()
    assert ring.lookup(["z", "t", 1], -1).tolist() == [ring.index["z"], -1, -1]


def test_the_table_follows_eviction_and_restore() -> None:
    spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(2))
    store = hd.WindowStore([spec], max_keys=4)
    for i in range(40):
        store.append_batch("s", [f"k{i}", f"k{i // 2}"], np.ones((2, 1)))
        assert store._rings["s"].index_check()
    state, arrays = store._rings["s"].export_state()  # a checkpoint's restore
    other = hd.WindowStore([spec], max_keys=4)
    other._rings["s"].import_state(state, arrays)
    ring = other._rings["s"]
    assert ring.index_check()
    assert ring.lookup(store.keys("s")).tolist() == [  # type: ignore[union-attr]
        store._rings["s"].index[k] for k in store.keys("s")]


def test_new_slots_gives_the_slots_new_slot_would() -> None:
    """A batch's new keys get their slots in one pass: the same slots, free list, high-water
    mark and slot generations as one ``new_slot`` each, also with freed slots to reuse."""
    rings = [_ring(12), _ring(12)]
    for ring in rings:
        for i in range(8):
            ring.new_slot(f"k{i}")
        for slot in (5, 1, 6):
            ring._clear_slots([slot])
            ring.free.append(slot)
    new = ["n0", 3, "n1", "n2", 4, "n5"]  # three freed slots, then three above the mark
    for key in new:
        rings[0].new_slot(key)
    rings[1].new_slots(new)
    a, b = rings
    assert b.index == a.index
    assert b.index_check()
    assert (b.slot_keys, b.free, b.high_water) == (a.slot_keys, a.free, a.high_water)
    assert (b.live == a.live).all()
    assert (b.meta == a.meta).all()
