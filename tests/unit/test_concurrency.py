"""A writer thread and reader threads: no torn read goes unnoticed."""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import Any

import numpy as np

import heimdall as hd
from heimdall import _core as core


def test_readers_never_see_torn_rows_unnoticed() -> None:
    # Every row the writer appends is (i, i, i, i) with ts i: an intact window is consecutive.
    W = 16
    spec = hd.StreamSpec("s", fields=["a", "b", "c", "d"], window=hd.CountWindow(W))
    store = hd.WindowStore([spec], max_keys=4)
    store.append("s", "k", (0, 0, 0, 0), ts_ns=0)
    stop = threading.Event()
    seen = {"valid_views": 0, "invalid_views": 0, "copies": 0, "batches": 0}
    errors: list[str] = []

    def writer() -> None:
        i = 1
        while not stop.is_set():
            if i % 3:
                store.append("s", "k", (i, i, i, i), ts_ns=i)
                i += 1
            else:
                rows = np.repeat(np.arange(i, i + 7, dtype=np.float64)[:, None], 4, axis=1)
                store.append_batch("s", ["k"] * 7, rows, np.arange(i, i + 7))
                i += 7

    def reader() -> None:
        while not stop.is_set():
            w = store.window("s", "k")
            vals = np.array(w.values)  # copy, then ask whether the view was intact
            if w.valid:
                seen["valid_views"] += 1
                if not _intact(vals):
                    errors.append(f"valid view was torn: {vals[:, 0]}")
            else:
                seen["invalid_views"] += 1
            try:
                c = w.copy()
            except hd.StaleWindowError:
                pass
            else:
                seen["copies"] += 1
                if not _intact(c.values):
                    errors.append(f"copy was torn: {c.values[:, 0]}")
            b = store.windows("s", ["k"])
            seen["batches"] += 1
            if not _intact(b.values[0, W - b.lengths[0] :]):
                errors.append("batch torn")

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, to interleave mid-append
    try:
        for t in threads:
            t.start()
        deadline = threading.Event()
        while seen["invalid_views"] < 50 or seen["copies"] < 200:
            if deadline.wait(0.05) or errors:
                break
            if seen["batches"] > 200_000:
                break
        stop.set()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]
    # the test only means something if readers did see overwritten views
    assert seen["invalid_views"] > 0, seen
    assert seen["copies"] > 0, seen


def _intact(vals: np.ndarray) -> bool:
    col = vals[:, 0]
    return bool((vals == col[:, None]).all() and (np.diff(col) == 1).all())


def test_a_large_batched_read_copies_while_the_writer_runs() -> None:
    """``windows()`` of many keys copies with the GIL released, so the writer thread runs
    meanwhile; the seqlock must catch every key it changed under the copy (that key is read
    again once the GIL is back), and no torn window may come back."""
    W, K = 1024, 32  # 32 keys x 1024 rows x 40 bytes: copied without the GIL, slowly
    spec = hd.StreamSpec("s", fields=["a", "b", "c", "d"], window=hd.CountWindow(W))
    # 2 rows of slack: every other append compacts, moving the whole window under a copy
    store = hd.WindowStore([spec], max_keys=K, slack=1e-3)
    keys = [f"k{i}" for i in range(K)]
    store.append_batch("s", keys, np.zeros((K, 4)), np.zeros(K, np.int64))
    ring = store._rings["s"]
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def writer() -> None:
        i = 1
        while not stop.is_set():
            store.append_batch("s", keys, np.full((K, 4), float(i)), np.full(K, i, np.int64))
            i += 1
            time.sleep(0)  # let the reader have the GIL back

    def reader() -> None:
        while not stop.is_set() and (reads[0] < 1500 or ring.core.reread == 0) and reads[0] < 5000:
            b = store.windows("s", keys)
            reads[0] += 1
            m = int(b.lengths.min())  # every key's last m rows: consecutive rounds
            vals, ts = b.values[:, W - m:], b.ts_ns[:, W - m:]
            col = vals[:, :, 0]
            if not ((vals == col[:, :, None]).all() and (np.diff(col, axis=1) == 1).all()
                    and (ts == col).all()):
                errors.append(f"a torn window in read {reads[0]}")
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    threads[1].join(timeout=120)
    stop.set()
    threads[0].join()
    assert not errors, errors[:3]
    # the writer ran during the copies: keys changed under them were caught and read again
    assert store.stats()["streams"]["s"]["reads_retried"] == ring.core.reread > 0, reads


def _reads_during(call: Any, store: hd.WindowStore, rounds: int = 5) -> int:
    """How many reads another thread made while ``call`` ran (between its start and end
    stamps). No switch is forced meanwhile (a switch interval of 100 s): the GIL changes
    hands only when a thread lets it go (the reader after each read, a call that releases
    it), so a call that holds it throughout lets no read in."""
    stamps: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            store.window("s", "k7").copy()
            stamps.append(time.perf_counter())
            time.sleep(0)  # lets the GIL go

    t = threading.Thread(target=reader)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    t.start()
    spans = []
    try:
        for _ in range(rounds):
            time.sleep(0.01)
            t0 = time.perf_counter()
            call()
            spans.append((t0, time.perf_counter()))
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    return sum(1 for s in stamps for a, b in spans if a < s < b)


def test_bulk_reads_release_the_gil_so_other_threads_read_meanwhile() -> None:
    keys = [f"k{i}" for i in range(4000)]
    spec = hd.StreamSpec("s", fields=["a", "b", "c", "d"], window=hd.CountWindow(256))
    store = hd.WindowStore([spec], max_keys=len(keys))
    for _ in range(256):
        store.append_batch("s", keys, np.ones((len(keys), 4)))
    ring = store._rings["s"]
    slots = ring.lookup(keys, core.ABSENT)
    B = len(keys)
    out = np.empty((B, 7, 4))
    values, ts = np.empty((B, 256, 4)), np.empty((B, 256), np.int64)
    lengths, ok = np.zeros(B, np.int64), np.zeros(B, np.bool_)

    def aggregate() -> None:
        core.aggregate(ring.data, ring.ts, ring.meta, slots, 0, 0, out, ok)

    def gather() -> None:
        core.gather(ring.data, ring.ts, ring.meta, slots, 256, 0, values, ts, lengths, ok)

    def windows() -> None:  # the C gather: a read this large copies without the GIL
        store.windows("s", keys)

    for call in (aggregate, gather, windows):
        assert _reads_during(call, store) > 0, call.__name__


def test_large_batch_writes_release_the_gil_so_other_threads_read_meanwhile() -> None:
    """A large ``append_batch`` scatters without the GIL (another stream's reader goes on);
    a small scatter keeps it (the hand-off would cost more than the write)."""
    spec = hd.StreamSpec("s", fields=["a", "b", "c", "d"], window=hd.CountWindow(256))
    other = hd.StreamSpec("t", fields=["a", "b", "c", "d"], window=hd.CountWindow(256))
    store = hd.WindowStore([spec, other], max_keys=20_000)
    store.append("s", "k7", [1.0, 2.0, 3.0, 4.0])
    keys = [f"k{i}" for i in range(20_000)]
    big = keys * 10  # 200,000 rows
    values = np.ones((len(big), 4))
    store.append_batch("t", keys, np.ones((len(keys), 4)))  # every key held: the C path
    ring = store._rings["t"]
    slots = ring.lookup(big, core.ABSENT)
    ts = np.zeros(len(big), np.int64)

    def append_batch() -> None:
        store.append_batch("t", big, values)

    def scatter() -> None:
        with ring.lock:
            ring.core.scatter(slots, values, ts, 0)

    for call in (append_batch, scatter):
        assert _reads_during(call, store) > 0, call.__name__
    def small_scatter() -> None:  # the C write alone (numpy calls around it may let go)
        with ring.lock:
            ring.core.scatter(slots[:1000], values[:1000], ts[:1000], 0)

    assert _reads_during(small_scatter, store) == 0
    # every row landed: k3's first row, then 10 a big write (5 rounds of two), 1 a small one
    assert len(store.window("t", "k3")) == 1 + 5 * (10 + 10) + 5 * 1
    # the measure itself: a C call that keeps the GIL (a regular expression that backtracks
    # for a while) lets no read in
    pattern = re.compile(r"(a+)+b")
    assert _reads_during(lambda: pattern.match("a" * 18), store) == 0
