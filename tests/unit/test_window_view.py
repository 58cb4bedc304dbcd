"""The Window object: a view's fields, validity, copies, pickling, equality and iteration."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import heimdall as hd


def _store(n: int = 4) -> hd.WindowStore:
    spec = hd.StreamSpec("s", key="id", fields=["x", "y"], window=hd.CountWindow(n))
    return hd.WindowStore([spec], max_keys=8)


def test_a_view_shows_the_rows_of_its_key_and_is_read_only() -> None:
    store = _store()
    for i in range(6):
        store.append("s", "a", (i, 10 * i), ts_ns=100 + i)
        store.append("s", "b", (-i, -10 * i), ts_ns=200 + i)
    w = store.window("s", "a")
    assert (w.key, w.stream, w.fields, len(w)) == ("a", "s", ("x", "y"), 4)
    assert w.values.tolist() == [[2, 20], [3, 30], [4, 40], [5, 50]]
    assert w.ts_ns.tolist() == [102, 103, 104, 105]
    assert w["y"].tolist() == [20, 30, 40, 50]
    assert not w.values.flags.writeable
    assert not w.ts_ns.flags.writeable
    assert np.shares_memory(w.values, store.window("s", "a").values)  # no copy
    assert [r.tolist() for r in w] == w.values.tolist()  # iterating yields rows
    assert np.shares_memory(np.asarray(w), w.values)  # as an array: the view itself
    assert np.asarray(w, dtype=np.float32).dtype == np.float32
    assert not np.shares_memory(np.array(w), w.values)  # np.array copies, as for any array
    assert "x" in w
    assert "z" not in w
    with pytest.raises(hd.FieldNotFoundError, match="no field 'z'"):
        w["z"]
    assert repr(w) == "<Window s/'a' rows=4 view>"


def test_views_compare_by_identity_not_element_wise() -> None:
    store = _store()
    store.append("s", "a", (1, 2), ts_ns=1)
    w1, w2 = store.window("s", "a"), store.window("s", "a")
    assert w1 == w1
    assert w1 != w2
    assert len({w1, w2}) == 2
    assert not hasattr(w1, "count")
    assert not hasattr(w1, "index")


def test_a_view_goes_invalid_once_overwritten_and_its_copy_stays() -> None:
    store = _store()
    for i in range(4):
        store.append("s", "a", (i, i), ts_ns=i)
    w = store.window("s", "a")
    c = w.copy()
    assert w.valid
    assert c.valid
    assert c.copy() is c
    for i in range(4, 40):
        store.append("s", "a", (i, i), ts_ns=i)
    assert not w.valid
    with pytest.raises(hd.StaleWindowError, match="overwritten"):
        w.copy()
    assert c.valid
    assert c.values.tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert repr(c) == "<Window s/'a' rows=4 copy>"


def test_a_window_pickles_as_an_owned_copy() -> None:
    store = _store()
    for i in range(3):
        store.append("s", 7, (i, -i), ts_ns=10 + i)
    w = pickle.loads(pickle.dumps(store.window("s", 7)))
    assert isinstance(w, hd.Window)
    assert w.valid
    assert (w.key, w.stream, w.fields) == (7, "s", ("x", "y"))
    assert w.values.tolist() == [[0, 0], [1, -1], [2, -2]]
    assert w.ts_ns.tolist() == [10, 11, 12]
    assert repr(w) == "<Window s/7 rows=3 copy>"
