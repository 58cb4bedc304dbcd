"""A ring's key index (``heimdall._core.KeyIndex``): key -> slot, slot -> key.

These tests drive the index through puts, removes (the backward shift of linear probing),
colliding hashes, equal keys that are distinct objects, and str / int subclasses, and compare
every answer with a dict's (the model); ``check`` says whether the table holds together
(each entry reachable from its home bucket, its slot's key in ``slot_keys``). And they pin
that a batch's new keys get the slots one ``new_slot`` each would give them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

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


def _agrees(ring: Ring, model: dict[Any, int]) -> None:
    assert ring.index.check()
    assert len(ring.index) == len(model)
    assert dict(ring.index.items()) == model
    assert sorted(map(repr, ring.index)) == sorted(map(repr, model))
    keys = [_fresh(k) for k in POOL]
    want = [model.get(k, -1) for k in keys]
    assert [ring.index.get(k, -1) for k in keys] == want
    assert [k in ring.index for k in keys] == [k in model for k in keys]
    assert ring.lookup(keys, -1).tolist() == want
    assert ring.lookup(POOL, -1).tolist() == want
    mixed = [k if i % 3 else _fresh(k) for i, k in enumerate(POOL * 3)]  # held and afresh
    assert ring.lookup(mixed, -1).tolist() == want * 3
    held = [k for k in keys if k in model]
    got = ring.lookup(held)
    assert got is not None
    assert got.tolist() == [model[k] for k in held]
    if len(held) < len(keys):
        assert ring.lookup(keys) is None  # strict: a key not held answers None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(POOL), st.integers(0, 11)),
                max_size=60))
def test_puts_and_removes_agree_with_a_dict(ops: list[tuple[bool, str | int, int]]) -> None:
    ring = _ring()
    model: dict[Any, int] = {}
    for put, key, slot in ops:
        if put and (key in model or len(model) < 12):
            if key in model:  # a slot holds one key: the old slot is let go
                ring.slot_keys[model[key]] = None
            for k in [k for k, s in model.items() if s == slot]:  # and the slot's old key
                ring.index.remove(k)
                del model[k]
            ring.index.own([slot], [_fresh(key)])
            model[key] = slot
        elif not put:
            if key in model:
                ring.slot_keys[model.pop(key)] = None
            ring.index.remove(_fresh(key))
        _agrees(ring, model)
    ring.index.clear()
    _agrees(ring, {})


def test_a_full_table_of_colliding_ints() -> None:
    """Every key in one run of the probe sequence, removed from the middle outwards."""
    ring = _ring(64)
    keys = [i * (2**61 - 1) for i in range(64)]  # all hash to 0
    ring.index.own(list(range(64)), keys)
    assert ring.index.check()
    assert ring.lookup(keys).tolist() == list(range(64))  # type: ignore[union-attr]
    model = dict(zip(keys, range(64), strict=True))
    for key in keys[32:] + keys[:32]:
        ring.slot_keys[model.pop(key)] = None
        ring.index.remove(key)
        assert ring.index.check()
        assert ring.lookup(keys, -1).tolist() == [model.get(k, -1) for k in keys]
    assert len(ring.index) == 0


class Color(IntEnum):
    RED = 1


class Tag(str):
    pass


def test_str_and_int_subclass_keys_compare_as_python_does() -> None:
    """A str or int subclass is a valid key; its __eq__ is Python's (asked with the table
    not borrowed), and an equal plain key finds it, as in a dict."""
    spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(2))
    store = hd.WindowStore([spec], max_keys=3)
    store.append_batch("s", ["a", Tag("t"), Color.RED], np.ones((3, 1)))
    ring = store._rings["s"]
    assert ring.index.check()
    assert ring.lookup(["t", 1, "a"]).tolist() == [1, 2, 0]  # type: ignore[union-attr]
    assert store.window("s", "t").values.tolist() == [[1.0]]
    store.append_batch("s", ["t", 1], np.full((2, 1), 2.0))
    assert len(store.window("s", Tag("t"))) == 2
    store.append_batch("s", ["x", "y", "z"], np.ones((3, 1)))  # evicts a, t, then 1
    assert sorted(store.keys("s")) == ["x", "y", "z"]
    assert ring.index.check()
    assert ring.lookup(["z", "t", 1], -1).tolist() == [ring.index["z"], -1, -1]


class Odd(str):
    """Equal to nothing but itself, whatever its text (its own __eq__ and __hash__)."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return hash(str(self))


def test_a_subclass_key_with_its_own_eq_is_asked() -> None:
    ring = _ring(4)
    odd = Odd("a")
    ring.index.own([0, 1], [odd, "a"])  # "a" != odd: two keys
    assert len(ring.index) == 2
    assert ring.index["a"] == 1
    assert ring.index[odd] == 0
    assert Odd("a") not in ring.index
    assert ring.lookup([odd, "a"]).tolist() == [0, 1]  # type: ignore[union-attr]
    ring.index.remove(odd)
    assert ring.index.check() is False  # slot 0 still names odd: the caller frees slots
    ring.slot_keys[0] = None
    assert ring.index.check()
    assert dict(ring.index.items()) == {"a": 1}


def test_the_table_follows_eviction_and_restore() -> None:
    spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(2))
    store = hd.WindowStore([spec], max_keys=4)
    for i in range(40):
        store.append_batch("s", [f"k{i}", f"k{i // 2}"], np.ones((2, 1)))
        assert store._rings["s"].index.check()
    state, arrays = store._rings["s"].export_state()  # a checkpoint's restore
    other = hd.WindowStore([spec], max_keys=4)
    other._rings["s"].import_state(state, arrays)
    ring = other._rings["s"]
    assert ring.index.check()
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
    assert dict(b.index.items()) == dict(a.index.items())
    assert b.index.check()
    assert (b.slot_keys, b.free, b.high_water) == (a.slot_keys, a.free, a.high_water)
    assert (b.live == a.live).all()
    assert (b.meta == a.meta).all()


class Owned(str):
    """A key that references what holds it."""

    store: object = None


def test_a_cycle_through_a_subclass_key_is_collected() -> None:
    """The index shows the collector the keys it holds: a store whose key references the
    store is freed once nothing else holds either."""
    import gc
    import weakref

    spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(2))
    store = hd.WindowStore([spec], max_keys=4)
    key = Owned("k")
    key.store = store
    store.append_batch("s", [key], np.ones((1, 1)))
    assert store.window("s", "k").values.tolist() == [[1.0]]
    ref = weakref.ref(store)
    del store, key
    gc.collect()
    assert ref() is None
