"""The shared-memory store read from real other processes: no torn read and no wrong key
under a writer at full speed, kill -9 of a reader and of the writer, `heimdall shm`."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest

import heimdall as hd

from .conftest import wait_for

W, KEYS, MAX_KEYS = 16, 64, 48  # more keys than slots: evictions and slot reuse all along
HEIMDALL = [sys.executable, "-m", "heimdall.cli"]


def spec() -> hd.StreamSpec:
    return hd.StreamSpec("s", fields=["key_id", "seq"], window=hd.CountWindow(W))


def check_reader(name: str, seconds: float, out: Any) -> None:
    """In a child: read random keys' windows and check each against how the writer writes
    them (row = (key id, that key's sequence number), consecutive)."""
    reader = hd.attach(name)
    rng = np.random.default_rng(os.getpid())
    checked = stale = absent = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(errors) < 5:
        kid = int(rng.integers(KEYS))
        try:
            w = reader.window("s", f"k{kid}")
            try:
                c = w.copy()
            except hd.StaleWindowError:
                stale += 1
                continue
            batch = reader.windows("s", [f"k{kid}", f"k{(kid + 1) % KEYS}"])
        except hd.KeyNotFoundError:
            absent += 1
            continue
        for label, vals, n in (("window", c.values, len(c)),
                               ("windows", batch.values[0], int(batch.lengths[0]))):
            rows = vals[len(vals) - n:] if label == "windows" else vals
            if n and not (rows[:, 0] == kid).all():
                errors.append(f"{label}: key k{kid} shows rows of {set(rows[:, 0].tolist())}")
            if n > 1 and not (np.diff(rows[:, 1]) == 1).all():
                errors.append(f"{label}: k{kid} torn: {rows[:, 1].tolist()}")
        checked += 1
    reader.close()
    out.put((checked, stale, absent, errors))


def idle_reader(name: str, ready: Any) -> None:
    reader = hd.attach(name)
    ready.set()
    while True:
        reader.window("s", "k0") if ("s", "k0") in reader else None
        time.sleep(0.001)


def writer_process(name: str, ready: Any) -> None:
    store = hd.WindowStore([spec()], max_keys=MAX_KEYS, shared_memory=name)
    store.append("s", "k0", {"key_id": 0, "seq": 0})
    ready.set()
    while True:
        time.sleep(0.01)


def write_forever(store: hd.WindowStore, stop: threading.Event) -> int:
    seq = [0] * KEYS
    rng = np.random.default_rng(1)
    n = 0
    while not stop.is_set():
        kids = rng.integers(0, KEYS, 256).tolist()
        rows = []
        for kid in kids:
            seq[kid] += 1
            rows.append((kid, seq[kid]))
        # a key's rows are consecutive only while it keeps its slot; an evicted key starts
        # over in a fresh slot: restart its sequence so "consecutive" stays the invariant
        store.append_batch("s", [f"k{kid}" for kid in kids], np.array(rows, dtype=np.float64))
        for kid in set(kids):
            if ("s", f"k{kid}") not in store:
                seq[kid] = 0
        n += len(kids)
    return n


def test_readers_in_other_processes_never_see_a_torn_window_or_a_wrong_key() -> None:
    name = f"hd-it-{uuid.uuid4().hex[:10]}"
    ctx = mp.get_context("spawn")
    with hd.WindowStore([spec()], max_keys=MAX_KEYS, shared_memory=name) as store:
        stop = threading.Event()
        written: list[int] = []
        writer = threading.Thread(target=lambda: written.append(write_forever(store, stop)))
        writer.start()
        out = ctx.Queue()
        readers = [ctx.Process(target=check_reader, args=(name, 8.0, out)) for _ in range(2)]
        for p in readers:
            p.start()
        results = [out.get(timeout=60) for _ in readers]
        for p in readers:
            p.join(30)
        stop.set()
        writer.join(30)
        evictions = store.stats()["streams"]["s"]["evictions"]
    for checked, _stale, _absent, errors in results:
        assert errors == []
        assert checked > 100
    assert written[0] > 10_000
    assert evictions > 1_000  # slots were reused for other keys all along
    assert not os.path.exists(f"/dev/shm/{name}")  # the owner unlinked it


def test_a_reader_killed_does_not_disturb_the_writer() -> None:
    name = f"hd-it-{uuid.uuid4().hex[:10]}"
    ctx = mp.get_context("spawn")
    with hd.WindowStore([spec()], max_keys=MAX_KEYS, shared_memory=name) as store:
        store.append("s", "k0", {"key_id": 0, "seq": 1})
        ready = ctx.Event()
        p = ctx.Process(target=idle_reader, args=(name, ready))
        p.start()
        assert ready.wait(30)
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        p.join(10)
        for i in range(2, 100):
            store.append("s", "k0", {"key_id": 0, "seq": i})
        assert store.window("s", "k0").values[-1].tolist() == [0.0, 99.0]
        assert os.path.exists(f"/dev/shm/{name}")  # the reader's exit unlinked nothing
        again = hd.attach(name)
        assert again.window("s", "k0").values[-1].tolist() == [0.0, 99.0]
        again.close()


def test_the_writer_killed_readers_get_a_clear_error_and_shm_cleans_up() -> None:
    name = f"hd-it-{uuid.uuid4().hex[:10]}"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=writer_process, args=(name, ready))
    p.start()
    try:
        assert ready.wait(60)
        reader = hd.attach(name)
        assert reader.window("s", "k0").values.tolist() == [[0.0, 0.0]]
        assert oct(os.stat(f"/dev/shm/{name}").st_mode & 0o777) == "0o600"
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        p.join(10)

        said: list[str] = []

        def refused() -> bool:
            try:
                reader.window("s", "k0")
            except hd.SharedMemoryError as exc:
                said.append(str(exc))
                return True
            return False

        wait_for(refused, 10, "the reader to see the writer gone")
        assert "died" in said[0]
        listed = subprocess.run([*HEIMDALL, "shm", "list"], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert listed.returncode == 0
        assert name in listed.stdout
        assert "writer dead" in listed.stdout
        removed = subprocess.run([*HEIMDALL, "shm", "remove", name], capture_output=True,
                                 text=True, timeout=60)
        assert removed.returncode == 0, removed.stderr
        assert not os.path.exists(f"/dev/shm/{name}")
        again = subprocess.run([*HEIMDALL, "shm", "remove", name], capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 1
        assert "no Heimdall shared memory" in again.stderr
        reader.close()
        with pytest.raises(hd.SharedMemoryError, match="no shared-memory store"):
            hd.attach(name)
    finally:
        if p.is_alive():
            p.kill()


def test_a_live_writers_segment_cannot_be_removed_or_created_twice() -> None:
    name = f"hd-it-{uuid.uuid4().hex[:10]}"
    with hd.WindowStore([spec()], max_keys=8, shared_memory=name):
        res = subprocess.run([*HEIMDALL, "shm", "remove", name], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 1
        assert "running writer" in res.stderr
        with pytest.raises(hd.ConfigError, match="exists"):
            hd.WindowStore([spec()], max_keys=8, shared_memory=name)
    assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize(("name", "says"), [
    ("", "non-empty str"), (False, "non-empty str"), ("a/b", "no '/'"), ("x" * 201, "200 bytes"),
])
def test_a_shared_memory_name_the_os_cannot_take_gets_a_clear_error(name: Any, says: str) -> None:
    with pytest.raises(hd.ConfigError, match=says):
        hd.WindowStore([spec()], max_keys=8, shared_memory=name)
    with pytest.raises(hd.ConfigError, match=says):
        hd.attach(name)


def test_eviction_and_key_reuse_seen_from_a_reader() -> None:
    name = f"hd-it-{uuid.uuid4().hex[:10]}"
    with hd.WindowStore([spec()], max_keys=2, shared_memory=name) as store:
        reader = hd.attach(name)
        store.append("s", "a", {"key_id": 1, "seq": 1})
        store.append("s", "b", {"key_id": 2, "seq": 1})
        view = reader.window("s", "a")
        assert view.valid
        store.append("s", "c", {"key_id": 3, "seq": 1})  # evicts "a"; "c" takes its slot
        assert not view.valid
        with pytest.raises(hd.KeyNotFoundError):
            reader.window("s", "a")
        assert reader.window("s", "c").values.tolist() == [[3.0, 1.0]]
        assert sorted(reader.keys("s")) == ["b", "c"]
        # the reader remembers where "c" was; "c" evicted and back in another slot is found
        store.append("s", "b", {"key_id": 2, "seq": 2})
        store.append("s", "a", {"key_id": 1, "seq": 2})  # evicts "c"
        store.append("s", "c", {"key_id": 3, "seq": 2})  # evicts "b"; "c" is in b's old slot
        assert reader.window("s", "c").values.tolist() == [[3.0, 2.0]]
        assert reader.window("s", "a").values.tolist() == [[1.0, 2.0]]
        store.append("s", "b", {"key_id": 2, "seq": 3})  # evicts "a"
        store.append("s", "c", {"key_id": 3, "seq": 3})
        assert sorted(reader.keys("s")) == ["b", "c"]
        assert reader.stats()["streams"]["s"]["evictions"] == 4
        with pytest.raises(hd.KeyNotFoundError):
            reader.window("s", "a")
        with pytest.raises(hd.HeimdallError, match="read-only"):
            reader.append("s", "x", {"key_id": 0, "seq": 0})
        del view
        reader.close()
    with pytest.raises(hd.SharedMemoryError):
        reader.window("s", "b")


def test_a_key_shared_memory_cannot_hold_is_refused_and_nothing_is_written() -> None:
    name = f"hd-it-{uuid.uuid4().hex[:10]}"
    with hd.WindowStore([spec()], max_keys=8, shared_memory=name) as store:
        store.append("s", "ok", (1, 1), ts_ns=1)
        for key, says in ((2**63, "past int64"), (-(2**63) - 1, "past int64"),
                          ("k" * 63, "63 bytes"), ("\ud800", "not valid UTF-8")):
            with pytest.raises(hd.SchemaError, match=says):
                store.append("s", key, (1, 1), ts_ns=2)
            with pytest.raises(hd.SchemaError, match=says):
                store.append_batch("s", ["ok", key], np.ones((2, 2)), [2, 3])
        store.append("s", 2**63 - 1, (2, 2), ts_ns=4)  # the ends of int64 are held
        store.append("s", -(2**63), (3, 3), ts_ns=5)
        assert sorted(store.keys("s"), key=str) == sorted(["ok", 2**63 - 1, -(2**63)], key=str)
        assert store.window("s", "ok").values.tolist() == [[1, 1]]
        with hd.attach(name) as reader:
            assert reader.window("s", -(2**63)).values.tolist() == [[3, 3]]


_LEAVE_WITHOUT_CLOSE = """
import gc, os, sys
import heimdall as hd
store = hd.WindowStore([hd.StreamSpec("s", fields=["x"])], max_keys=10,
                       shared_memory=sys.argv[1])
store.append("s", "a", (1.0,))
reader = hd.attach(sys.argv[1])
kept = reader.window("s", "a")
reader.close()
assert kept.values.tolist() == [[1.0]]  # a view outliving its reader stays mapped
if sys.argv[2] == "collect":
    view = store.window("s", "a")  # a view outliving the store keeps the mapping, not the name
    del store
    gc.collect()
    print(os.path.exists("/dev/shm/" + sys.argv[1]), view.values.tolist())
"""


@pytest.mark.parametrize("how", ["exit", "collect"])
def test_a_segment_goes_with_its_store_without_close(how: str) -> None:
    """A script that ends (or drops its store) without close() leaves no segment behind."""
    name = f"hd-test-noclose-{uuid.uuid4().hex[:8]}"
    out = subprocess.run([sys.executable, "-c", _LEAVE_WITHOUT_CLOSE, name, how],
                         capture_output=True, text=True, timeout=60, check=True)
    if how == "collect":
        assert out.stdout.split()[0] == "False", out.stdout
    assert not os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(hd.SharedMemoryError, match="no shared-memory store"):
        hd.attach(name)
