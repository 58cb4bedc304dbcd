"""The core's fast paths (``heimdall._core``: StoreCore, RingCore) against the Python paths
they stand in for.

``append`` and ``window`` are the core's methods, bound on each store, that hand every case
they do not handle whole to the Python paths the store gave them (``_append_py`` /
``_window_slow``); these tests pin that the two give the same bytes, that each hand-over case
still gets the Python path's answer, and that the core's scatter checks what it is given.
``RingCore.gather`` must equal the core's read kernel over the raw arrays, and hand over
(None) whatever it cannot vouch for. The store holds the core (composition): it subclasses
none of the core's types.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heimdall as hd
from heimdall import _core as core
from heimdall._core import RingCore, StoreCore
from heimdall.window._ring import Ring

DTYPES = ["float64", "float32", "int64", "int32"]


def _store(dtype: str = "float64", n: int = 4, **kw: object) -> hd.WindowStore:
    spec = hd.StreamSpec("s", key="id", fields=["x", "y"], window=hd.CountWindow(n), dtype=dtype,
                         **kw)
    return hd.WindowStore([spec], max_keys=4)


def _state(store: hd.WindowStore) -> tuple[bytes, bytes, bytes]:
    r = store._rings["s"]
    meta = r.meta.copy()
    meta[:, 5] = 0  # TOUCH: arrival time, differs between the two stores
    return r.data.tobytes(), r.ts.tobytes(), meta.tobytes()


values = st.one_of(st.integers(-(2**31), 2**31 - 1), st.floats(-1e6, 1e6, allow_nan=False),
                   st.booleans())


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), n=st.integers(1, 6),
       events=st.lists(st.tuples(st.sampled_from(["a", "b", 7, 9, 11]), values, values,
                                 st.booleans()), max_size=60))
def test_core_append_writes_what_the_python_path_writes(
        dtype: str, n: int, events: list[tuple[object, object, object, bool]]) -> None:
    c, py = _store(dtype, n), _store(dtype, n)
    for i, (key, x, y, as_list) in enumerate(events):
        row = [x, y] if as_list else (x, y)
        outcomes = []
        for append in (c.append, py._append_py):
            try:
                append("s", key, row, ts_ns=i)
                outcomes.append("ok")
            except hd.SchemaError as exc:
                outcomes.append(type(exc).__name__)
        assert outcomes[0] == outcomes[1]
        assert _state(c) == _state(py)
    for key in c.keys("s"):
        assert c.window("s", key).values.tolist() == py._window_slow("s", key).values.tolist()


@pytest.mark.parametrize(("dtype", "row", "match"), [
    ("float32", (1e39, 0.0), "do not fit dtype float32"),
    ("float64", (float("nan"), 0.0), "non-finite value"),
    ("float64", (2**1100, 0.0), "do not fit dtype float64"),
    ("int64", (1.5, 0), "do not fit dtype int64"),
    ("int32", (2**31, 0), "do not fit dtype int32"),
    ("int64", (2**63, 0), "do not fit dtype int64"),
    ("float64", ("1", 0.0), "do not fit dtype float64"),
])
def test_values_the_core_hands_over_get_the_python_error(
        dtype: str, row: tuple[object, ...], match: str) -> None:
    store = _store(dtype)
    store.append("s", "a", (1, 2), ts_ns=1)
    before = _state(store)
    with pytest.raises(hd.SchemaError, match=match):
        store.append("s", "a", row, ts_ns=2)
    assert _state(store) == before


def test_values_the_core_hands_over_are_still_appended() -> None:
    store = _store()
    store.append("s", "a", {"x": 1, "y": 2}, ts_ns=1)  # a mapping
    store.append("s", "a", np.array([3.0, 4.0]), ts_ns=2)  # an array
    store.append("s", "a", (np.float32(5), True), ts_ns=np.int64(3))  # numpy scalars, a bool
    store.append("s", "a", [7, 8])  # arrival time
    store.append(stream="s", key="a", values=(9, 10), ts_ns=5)  # keywords
    w = store.window("s", "a")
    assert w.values.tolist() == [[3, 4], [5, 1], [7, 8], [9, 10]]
    assert w.ts_ns.tolist()[:2] == [2, 3]
    assert w.ts_ns[-1] == 5


def test_append_waits_for_a_writer_holding_the_lock() -> None:
    store = _store()
    store.append("s", "a", (0, 0), ts_ns=0)
    lock = store._rings["s"].lock
    done = threading.Event()

    def write() -> None:
        store.append("s", "a", (1, 1), ts_ns=1)
        done.set()

    with lock:
        t = threading.Thread(target=write)
        t.start()
        assert not done.wait(0.2)  # the core saw the lock held and handed over
        assert store.window("s", "a").values.tolist() == [[0, 0]]
    t.join(10)
    assert done.is_set()
    assert store.window("s", "a").values.tolist() == [[0, 0], [1, 1]]


def test_window_hands_over_what_it_does_not_read_itself() -> None:
    store = _store()

    class Key(str):
        pass

    store.append("s", "a", (1, 2), ts_ns=1)
    assert store.window("s", Key("a")).values.tolist() == [[1, 2]]  # a str subclass
    assert store.window(stream="s", key="a").key == "a"  # keywords
    with pytest.raises(hd.KeyNotFoundError, match="no key 'zz'"):
        store.window("s", "zz")
    with pytest.raises(hd.StreamNotFoundError):
        store.window("nope", "a")
    with pytest.raises(hd.SchemaError, match="a key must be str or int"):
        store.window("s", ["unhashable"])  # type: ignore[arg-type]


def test_window_of_a_key_that_replaced_an_evicted_one() -> None:
    store = _store()
    for i in range(5):
        store.append("s", f"k{i}", (i, i), ts_ns=i)  # max_keys=4: k0 is evicted
    assert ("s", "k0") not in store
    assert store.window("s", "k4").values.tolist() == [[4, 4]]
    assert store.window("s", "k4").key == "k4"


def test_the_store_holds_its_core_and_binds_its_two_calls() -> None:
    """Composition, one direction: no subclass of a core type; the store's ``append`` and
    ``window`` are its core's, with the documented signatures and docs."""
    assert not issubclass(hd.WindowStore, StoreCore)
    assert not issubclass(Ring, RingCore)
    store = _store()
    assert isinstance(store._core, StoreCore)
    assert isinstance(store._rings["s"].core, RingCore)
    assert store.append.__self__ is store._core  # type: ignore[attr-defined]
    assert store.window.__self__ is store._core  # type: ignore[attr-defined]
    assert (store.append.__name__, store.window.__name__) == ("append", "window")
    for method, params in ((hd.WindowStore.append, ["self", "stream", "key", "values", "ts_ns"]),
                           (hd.WindowStore.window, ["self", "stream", "key"])):
        assert list(inspect.signature(method).parameters) == params
    assert list(inspect.signature(store.append).parameters) == [
        "stream", "key", "values", "ts_ns"]
    assert "zero-copy" in (hd.WindowStore.window.__doc__ or "")
    assert "zero-copy" in (store.window.__doc__ or "")


def test_the_core_refuses_a_window_type_not_laid_out_as_it_builds() -> None:
    class Other(tuple):  # type: ignore[type-arg]
        LAYOUT = ("values", "ring")

    with pytest.raises(TypeError, match="LAYOUT"):
        StoreCore({}, lambda: 0, print, print, Other)
    assert tuple(core.WINDOW_LAYOUT) == hd.Window.LAYOUT


def test_the_core_scatter_checks_its_arguments_before_writing() -> None:
    store = _store()
    store.append("s", "a", (1, 2), ts_ns=1)
    ring = store._rings["s"]
    before = _state(store)
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="ring's dtype"):
        ring.core.scatter(one, np.zeros((1, 2), np.float32), one, 0)
    with pytest.raises(ValueError, match="ring's dtype"):
        ring.core.scatter(one, np.zeros((1, 3)), one, 0)
    with pytest.raises(ValueError, match="int64"):
        ring.core.scatter(one.astype(np.int32), np.zeros((1, 2)), one, 0)
    with pytest.raises(IndexError, match="out of range"):
        ring.core.scatter(np.array([0, 99]), np.zeros((2, 2)), np.zeros(2, np.int64), 0)
    with pytest.raises(ValueError, match="a row is 16 bytes"):
        ring.core.write_row(0, b"short", 0, 0)
    assert _state(store) == before
    assert ring.lookup(["a"]).tolist() == [0]
    assert ring.lookup(["a", "zz"]) is None
    assert ring.lookup([["unhashable"]]) is None


def _core_gather(ring: Ring, slots: np.ndarray, rows: int, span: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The core's read kernel over the raw arrays: what ``RingCore.gather`` must equal."""
    n = len(slots)
    values = np.empty((n, rows, ring.F), ring.dtype)
    ts = np.empty((n, rows), np.int64)
    lengths = np.zeros(n, np.int64)
    ok = np.zeros(n, np.bool_)
    core.gather(ring.data, ring.ts, ring.meta, slots, rows, span, values, ts, lengths, ok)
    assert ok.all()
    return values, ts, lengths


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    timed=st.booleans(),
    events=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40)), max_size=80),
    asked=st.lists(st.integers(0, 7), max_size=12),
    rows=st.integers(1, 6),
    span=st.sampled_from([0, 3, 10]),
)
def test_ring_gather_reads_what_the_kernel_reads(
    dtype: str, timed: bool, events: list[tuple[int, int]], asked: list[int], rows: int,
    span: int,
) -> None:
    window = hd.TimeWindow(20e-9, max_rows=6) if timed else hd.CountWindow(6)
    spec = hd.StreamSpec("s", key="id", fields=["x", "y"], window=window, dtype=dtype,
                         allowed_lateness_s=5e-9)
    store = hd.WindowStore([spec], max_keys=4)  # 6 keys: eviction too
    for key, t in events:
        store.append("s", key, (t, -t), ts_ns=t)
    ring = store._rings["s"]
    keys: list[Any] = list(asked)  # 6 and 7 are never written: absent
    slots = ring.lookup(keys, core.ABSENT)
    got = ring.core.gather(slots, keys, rows, span)
    assert got is not None
    for a, b in zip(got, _core_gather(ring, slots, rows, span), strict=True):
        assert a.dtype == b.dtype
        assert a.tobytes() == b.tobytes()
    batch = store.windows("s", keys, rows=rows, seconds=span * 1e-9 if span else None)
    assert batch.values.tobytes() == got[0].tobytes()


def test_ring_gather_hands_over_what_it_cannot_vouch_for() -> None:
    store = _store()
    for key in ("a", "b"):
        store.append("s", key, (1, 2), ts_ns=1)
    ring = store._rings["s"]
    slots = ring.lookup(["a", "b"], core.ABSENT)
    assert ring.core.gather(slots, ["a", "b"], 4, 0) is not None
    assert ring.core.gather(slots, ["b", "a"], 4, 0) is None  # not the slots' owners
    ring.meta[slots[1], core.WSEQ] += 1  # a writer mid-append
    assert ring.core.gather(slots, ["a", "b"], 4, 0) is None
    ring.meta[slots[1], core.WSEQ] -= 1
    with pytest.raises(IndexError, match="out of range"):
        ring.core.gather(np.array([0, 99]), ["a", "b"], 4, 0)
    with pytest.raises(ValueError, match="rows"):
        ring.core.gather(slots, ["a", "b"], 5, 0)
    # the windows() answer when a key moved between lookup and read: the Python path's
    store.append("s", "a", (3, 4), ts_ns=2)
    assert store.windows("s", ["a", "b"]).lengths.tolist() == [2, 1]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["count", "time"]))
def test_a_split_scatter_writes_what_one_thread_writes(seed: int, kind: str) -> None:
    """Large batches are scattered on two threads (by slot parity, the core's split.rs):
    every window, timestamp and counter must be what the single-threaded scatter leaves."""
    rng = np.random.default_rng(seed)
    window: Any = hd.CountWindow(8) if kind == "count" else hd.TimeWindow(0.00002, max_rows=8)
    spec = hd.StreamSpec("s", key="id", fields=["x", "y"], window=window,
                         allowed_lateness_s=0.00001)
    stores = [hd.WindowStore([spec], max_keys=64) for _ in range(2)]
    before = core.set_split(0)
    try:
        t = 0
        for _ in range(4):
            n = int(rng.integers(1, 3000))
            keys = [f"k{i}" for i in rng.integers(0, 40, n).tolist()]
            values = rng.normal(size=(n, 2))
            # mostly rising times, some out of order, some later than the lateness allowed
            ts = t + np.cumsum(rng.integers(0, 1000, n)) - rng.integers(0, 30_000, n) * (
                rng.random(n) < 0.2)
            t = int(ts.max())
            for split, store in zip((0, 1), stores, strict=True):
                core.set_split(split)  # 1: every batch on two threads
                store.append_batch("s", keys, values, ts.astype(np.int64))
    finally:
        core.set_split(before)
    one, two = stores
    assert one.keys("s") == two.keys("s")
    for key in one.keys("s"):
        a, b = one.window("s", key), two.window("s", key)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.ts_ns, b.ts_ns)
    assert one.stats() == two.stats()


def test_a_forked_child_scatters_on_its_own_helper() -> None:
    """A thread does not survive fork: the child starts its own helper for a split batch."""
    import os

    before = core.set_split(1)
    try:
        spec = hd.StreamSpec("s", key="id", fields=["x", "y"], window=hd.CountWindow(4))
        store = hd.WindowStore([spec], max_keys=64)
        store.append_batch("s", ["a", "b"], np.ones((2, 2)), np.array([1, 2]))  # helper up
        pid = os.fork()
        if pid == 0:  # the child: a split batch must complete, and be right
            code = 1
            try:
                keys = [f"k{i % 50}" for i in range(5000)]
                store.append_batch("s", keys, np.arange(10_000.0).reshape(5000, 2),
                                   np.arange(5000, dtype=np.int64) + 10)
                ok = store.window("s", "k49").values[-1].tolist() == [9998.0, 9999.0]
                code = 0 if ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        core.set_split(before)


def test_a_full_ring_compacted_ahead_keeps_its_window_and_ends_its_views() -> None:
    """A ring a large scatter leaves full is compacted before its next append (on the helper
    thread, during the next large batch's lookup; here by ``compact_full``, the same code):
    the window shows the same rows, a view of the moved rows reads as invalid, and the next
    appends land after the window."""
    before = core.set_split(0)  # no helper: nothing is compacted ahead but by compact_full
    try:
        spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(4))
        store = hd.WindowStore([spec], max_keys=8)
        ring = store._rings["s"]
        assert ring.cap == 5
        store.append_batch("s", ["a"] * 5, np.arange(5.0).reshape(5, 1), np.arange(5))
        slot = ring.index["a"]
        assert ring.meta[slot, core.POS] == ring.cap  # full: its next append would compact
        whole = store.window("s", "a")
        with ring.lock:
            assert ring.core.compact_full() == 1
            assert ring.core.compact_full() == 0  # done once
        assert ring.meta[slot, core.POS] == 4
        assert not whole.valid  # its rows moved under it
        assert store.window("s", "a").values[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
        store.append_batch("s", ["a"], np.array([[5.0]]), np.array([5]))
        assert store.window("s", "a").values[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
        assert store.window("s", "a").ts_ns.tolist() == [2, 3, 4, 5]
        # "a" is full again; "b" fills, then compacts in its own append: only "a" is left
        store.append_batch("s", ["b"] * 5, np.zeros((5, 1)), np.arange(5))
        store.append("s", "b", (1.0,), ts_ns=6)
        with ring.lock:
            assert ring.core.compact_full() == 1
        assert ring.meta[slot, core.POS] == 4
        assert store.window("s", "a").ts_ns.tolist() == [2, 3, 4, 5]
        assert store.window("s", "b").ts_ns.tolist() == [2, 3, 4, 6]
    finally:
        core.set_split(before)


def test_append_rows_answers_for_held_keys_only() -> None:
    """``append_rows`` writes a batch whose keys are all held (True); with a new key it writes
    nothing (False), and append_batch then takes the new-key path."""
    spec = hd.StreamSpec("s", key="id", fields=["x"], window=hd.CountWindow(4))
    store = hd.WindowStore([spec], max_keys=8)
    ring = store._rings["s"]
    store.append_batch("s", ["a", "b"], np.array([[1.0], [2.0]]), np.array([1, 2]))
    ts = np.array([3, 4], dtype=np.int64)
    with ring.lock:
        assert ring.core.append_rows(["a", "c"], np.array([[3.0], [4.0]]), ts, 0) is False
        assert store.window("s", "a").values[:, 0].tolist() == [1.0]
        assert ring.core.append_rows(["b", "a"], np.array([[3.0], [4.0]]), ts, 0) is True
    assert store.window("s", "a").values[:, 0].tolist() == [1.0, 4.0]
    assert store.window("s", "b").values[:, 0].tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="contiguous"):
        ring.core.append_rows(["a"], np.array([[1, 2]]), np.array([1]), 0)


def test_the_eviction_plan_checks_its_arguments() -> None:
    """``plan_evictions`` (the native core's ``evict.rs``) indexes ``held`` and ``first`` by
    each other's values: a table that does not hold together is refused before the loop
    reads it."""

    def plan(first: list[int], candidates: list[int], n: int = 2) -> tuple[int, int]:
        held = np.array([1, 0], np.int64)  # row 0 is slot 1's, row 1 slot 0's
        out = [np.empty(len(candidates), np.int64) for _ in range(2)]
        return core.plan_evictions(np.empty(0, np.int64), held, np.array(first, np.int64),
                                      np.array(candidates, np.int64), n, True, *out)

    assert plan([1, 0, 2], [2]) == (0, 2)  # no new key: nothing to evict
    with pytest.raises(ValueError, match="first\\[0\\] is not slot 0's row"):
        plan([0, 1, 2], [2])
    with pytest.raises(ValueError, match="first\\[2\\]"):
        plan([1, 0, 3], [2])
    with pytest.raises(IndexError, match="candidate 3 out of range"):
        plan([1, 0, 2], [3])
    with pytest.raises(ValueError, match="int64"):
        core.plan_evictions(np.empty(0, np.int32), np.zeros(2, np.int64),
                               np.zeros(0, np.int64), np.zeros(0, np.int64), 2, True,
                               np.zeros(0, np.int64), np.zeros(0, np.int64))
