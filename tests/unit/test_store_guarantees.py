"""What the store promises at its edges: a read retried key by key leaves the keys already
read as they are; idle expiry touches only the stream written; a rejected append of a new
key changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import heimdall as hd
from heimdall import _core as core


def _store(max_keys: int = 4, **kw: object) -> hd.WindowStore:
    spec = hd.StreamSpec("s", fields=["a", "b"], window=hd.CountWindow(4))
    return hd.WindowStore([spec], max_keys=max_keys, **kw)  # type: ignore[arg-type]


def test_read_kernels_leave_skipped_entries_alone() -> None:
    # the retry path re-runs the kernels with already-read entries marked SKIP
    store = _store()
    store.append_batch("s", ["x", "x"], [[1.0, 2.0], [3.0, 4.0]], [1, 2])
    ring = store._rings["s"]
    slots = np.array([core.SKIP], np.int64)
    values = np.full((1, 4, 2), 7.0)
    ts = np.full((1, 4), 7, np.int64)
    lengths = np.array([3], np.int64)
    ok = np.ones(1, np.bool_)  # an entry already read was consistent
    core.gather(ring.data, ring.ts, ring.meta, slots, 4, 0, values, ts, lengths, ok)
    assert lengths.tolist() == [3]
    assert (values == 7.0).all()
    assert ok.all()
    out = np.full((1, 7, 2), 5.0)
    core.aggregate(ring.data, ring.ts, ring.meta, slots, 0, 0, out, ok)
    assert (out == 5.0).all()


def test_ttl_sweep_touches_only_the_stream_being_written() -> None:
    now = [0]
    specs = [
        hd.StreamSpec("a", fields=["x"], window=hd.CountWindow(2)),
        hd.StreamSpec("b", fields=["x"], window=hd.CountWindow(2)),
    ]
    store = hd.WindowStore(specs, max_keys=4, idle_ttl_s=1, clock_ns=lambda: now[0])
    store.append("b", "old", (1.0,))
    now[0] = 5 * 10**9
    store.append("a", "new", (1.0,))  # holds stream a's lock only
    assert store.keys("b") == ["old"]
    assert store.expire_idle() == 1
    assert store.keys("b") == []


def test_rejected_append_of_a_new_key_evicts_nothing() -> None:
    store = _store(max_keys=2)
    store.append("s", "k1", (1.0, 1.0))
    store.append("s", "k2", (2.0, 2.0))
    with pytest.raises(hd.SchemaError, match="do not fit dtype"):
        store.append("s", "k3", (1.0, "x"))
    assert sorted(store.keys("s")) == ["k1", "k2"]
    assert store.stats()["streams"]["s"]["evictions"] == 0
