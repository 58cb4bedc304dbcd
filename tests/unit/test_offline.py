"""hd.replay and hd.training_windows against oracles that step the live store one event at a
time, and every kind of bad history and bad label refused clearly, nothing half-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import heimdall as hd

COUNT = hd.StreamSpec("s", key="id", time="ts", fields=["a", "b"], window=hd.CountWindow(5))
TIME = hd.StreamSpec("s", key="id", time="ts", fields=["a", "b"],
                     window=hd.TimeWindow(seconds=0.05, max_rows=6), allowed_lateness_s=0.02)


def _history(seed: int, n: int = 400, keys: int = 7) -> pa.Table:
    """Times mostly rising, some late (behind the key's newest), some repeated."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 8, n)) + 100
    late = rng.random(n) < 0.2
    ts = np.where(late, ts - rng.integers(0, 60, n), ts)
    return pa.table({"id": [f"k{k}" for k in rng.integers(0, keys, n).tolist()], "ts": ts,
                     "a": rng.normal(size=n), "b": np.arange(n, dtype=np.float64)})


def _stepped(spec: hd.StreamSpec, events: pa.Table, key: str, t_ms: int) -> hd.WindowBatch:
    """The oracle: a fresh store given the key's events one at a time, in arrival order,
    up to the first one later than ``t_ms``."""
    store = hd.WindowStore([spec], max_keys=2)
    for r in events.to_pylist():
        if r["id"] != key:
            continue
        if r["ts"] > t_ms:
            break
        store.append("s", key, [r["a"], r["b"]], ts_ns=r["ts"] * 1_000_000)
    return store.windows("s", [key])


@pytest.mark.parametrize("spec", [COUNT, TIME], ids=["count", "time"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_training_windows_match_the_store_stepped_event_by_event(
        spec: hd.StreamSpec, seed: int) -> None:
    events = _history(seed)
    rng = np.random.default_rng(seed + 10)
    n = 150
    label_keys = [f"k{k}" for k in rng.integers(0, 8, n).tolist()]  # k7: never seen
    label_ts = rng.integers(0, int(np.max(events.column("ts"))) + 50, n)
    labels = pa.table({"id": label_keys, "ts": label_ts, "y": np.arange(n)})
    tw = hd.training_windows(events, labels, spec, chunk=16)  # many chunks, keys across them
    assert len(tw) == n
    for i in range(n):
        want = _stepped(spec, events, label_keys[i], int(label_ts[i]))
        assert tw.lengths[i] == want.lengths[0], i
        assert np.array_equal(tw.values[i], want.values[0]), i
        assert np.array_equal(tw.ts_ns[i], want.ts_ns[0]), i
        assert tw.keys[i] == label_keys[i]
    assert tw.labels.column("y").to_pylist() == list(range(n))
    assert (tw.lengths[np.array(label_keys) == "k7"] == 0).all()
    # rows= keeps the newest rows of each
    short = hd.training_windows(events, labels, spec, rows=2)
    assert np.array_equal(short.values, tw.values[:, -2:])


@pytest.mark.parametrize("seed", [4, 5])
def test_last_time_finds_each_count_window_state_among_late_arrivals(seed: int) -> None:
    """Every state a count window passes through, named by its newest time and its last
    row's time (what a prediction carries), is found again: the latest state with both."""
    events = _history(seed, n=300, keys=4)
    rows = events.to_pylist()
    labels: dict[str, list[Any]] = {"id": [], "ts": [], "last": []}
    want: list[tuple[str, int]] = []  # (key, events of it taken)
    per_key: dict[str, list[int]] = {}
    for r in rows:
        per_key.setdefault(r["id"], []).append(r["ts"])
    for key, times in per_key.items():
        newest = np.maximum.accumulate(times)
        for c in range(1, len(times) + 1):
            T, L = int(newest[c - 1]), times[c - 1]
            # the latest state with that newest time and that last row (ties: the later)
            same = [c2 for c2 in range(1, len(times) + 1)
                    if newest[c2 - 1] == T and times[c2 - 1] == L]
            labels["id"].append(key)
            labels["ts"].append(T)
            labels["last"].append(L)
            want.append((key, max(same)))
    tw = hd.training_windows(events, labels, COUNT, last_time="last", chunk=64)
    for i, (key, c) in enumerate(want):
        store = hd.WindowStore([COUNT], max_keys=2)
        taken = 0
        for r in rows:
            if r["id"] == key and taken < c:
                store.append("s", key, [r["a"], r["b"]], ts_ns=r["ts"] * 1_000_000)
                taken += 1
        expect = store.windows("s", [key])
        assert np.array_equal(tw.values[i], expect.values[0]), (i, key, c)
        assert tw.lengths[i] == expect.lengths[0]


def test_replay_equals_a_store_fed_one_event_at_a_time() -> None:
    events = _history(5, n=600)
    for spec in (COUNT, TIME):
        got = hd.replay(events, spec, max_keys=16, progress=True)  # a bar on stderr too
        want = hd.WindowStore([spec], max_keys=16)
        for r in events.to_pylist():
            want.append("s", r["id"], [r["a"], r["b"]], ts_ns=r["ts"] * 1_000_000)
        keys = sorted(want.keys("s"))
        assert sorted(got.keys("s")) == keys
        a, b = got.windows("s", keys), want.windows("s", keys)
        assert np.array_equal(a.values, b.values)
        assert np.array_equal(a.ts_ns, b.ts_ns)
        sa, sb = got.stats()["streams"]["s"], want.stats()["streams"]["s"]
        assert sa["late_rejected"] == sb["late_rejected"]
        assert sa["out_of_order"] == sb["out_of_order"]


def test_files_of_every_kind_and_directories_read_in_name_order(tmp_path: Path) -> None:
    events = _history(7, n=300)
    d = tmp_path / "hist"
    d.mkdir()
    pq.write_table(events.slice(0, 100), d / "a.parquet")
    with pa.ipc.new_file(d / "b.arrow", events.schema) as w:
        w.write_table(events.slice(100, 100))
    pcsv.write_csv(events.slice(200, 100), d / "c.csv")
    (d / "notes.txt").write_text("ignored: not a history file")
    want = hd.replay(events, COUNT)
    for history in (d, [d / "a.parquet", d / "b.arrow", d / "c.csv"], str(d)):
        got = hd.replay(history, COUNT)
        keys = sorted(want.keys("s"))
        assert np.array_equal(got.windows("s", keys).values, want.windows("s", keys).values)
    reader = pa.RecordBatchReader.from_batches(events.schema, events.to_batches(50))
    got = hd.replay(reader, COUNT)
    assert got.keys("s") == want.keys("s")


def test_bad_rows_are_left_out_and_counted_with_their_reason() -> None:
    spec = hd.StreamSpec("s", key="id", time="ts", fields=["a"], dtype="int32",
                         window=hd.CountWindow(4))
    t = pa.table({"id": ["x", None, "x", "x", "", "x", "x"],
                  "ts": [1, 2, None, 4, 5, -6, 7],
                  "a": [1, 2, 3, 2**40, 5, 6, None]})
    report = hd.HistoryReport()
    store = hd.replay(t, spec, report=report)
    assert store.window("s", "x").values[:, 0].tolist() == [1]
    assert (report.rows, report.taken, report.left_out) == (7, 1, 6)
    reasons = " | ".join(report.examples)
    for why in ("row 1: null in key column 'id'", "row 2: null in time column 'ts'",
                "row 3: field 'a': outside int32", "row 4: empty key",
                "row 5: time column 'ts': outside", "row 6: null in field 'a'"):
        assert why in reasons
    nan = hd.replay(pa.table({"id": ["x", "x"], "ts": [1, 2], "a": [1.0, float("nan")]}),
                    hd.StreamSpec("s", key="id", time="ts", fields=["a"]),
                    report=(r := hd.HistoryReport()))
    assert len(nan.window("s", "x")) == 1
    assert "non-finite" in r.examples[0]


def test_broken_histories_are_refused_naming_file_and_column_nothing_written(
        tmp_path: Path) -> None:
    good = tmp_path / "a.parquet"
    pq.write_table(_history(1, n=20), good)
    no_time = tmp_path / "b.parquet"
    pq.write_table(_history(1, n=20).drop_columns(["ts"]), no_time)
    store = hd.WindowStore([COUNT], max_keys=16)
    with pytest.raises(hd.SchemaError, match=r"b\.parquet.*\['ts'\] missing"):
        hd.replay([good, no_time], COUNT, store=store)
    assert store.keys("s") == []  # the good file first: still nothing written
    text = tmp_path / "c.parquet"
    pq.write_table(_history(1, n=5).set_column(2, "a", pa.array(["x"] * 5)), text)
    with pytest.raises(hd.SchemaError, match=r"c\.parquet: field 'a' is string, not a number"):
        hd.replay(text, COUNT)
    fake = tmp_path / "d.parquet"
    fake.write_text("id,ts,a,b\n")
    with pytest.raises(hd.SourceError, match=r"d\.parquet: cannot be read as parquet"):
        hd.replay(fake, COUNT)
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(hd.SourceError, match=r"e\.json: not a history file"):
        hd.replay(tmp_path / "e.json", COUNT)
    with pytest.raises(hd.SourceError, match="no such file"):
        hd.replay(tmp_path / "missing.parquet", COUNT)
    with pytest.raises(hd.ConfigError, match="history must be"):
        hd.replay(42, COUNT)  # type: ignore[arg-type]
    with pytest.raises(hd.SchemaError, match="key column 'id' is double"):
        hd.replay(pa.table({"id": [1.5], "ts": [1], "a": [1.0], "b": [1.0]}), COUNT)
    arrival = hd.StreamSpec("s", key="id", fields=["a", "b"])
    with pytest.raises(hd.SchemaError, match="name the history's time column"):
        hd.replay(_history(1, n=5), arrival)
    assert len(hd.replay(_history(1, n=5), arrival, time_column="ts").keys("s")) > 0


def test_bad_labels_are_refused_clearly() -> None:
    events = _history(2, n=50)
    cases: list[tuple[Any, str]] = [
        ({"id": ["k1"]}, r"column\(s\) \['ts'\] missing"),
        ({"id": ["k1", None], "ts": [1, 2]}, "column 'id' holds 1 null"),
        ({"id": ["k1"], "ts": [-5]}, "row 0: -5 is outside"),
        ({"id": ["k1"], "ts": ["noon"]}, "time column 'ts' is string"),
        ({"id": [1.5], "ts": [1]}, "key column 'id' is double"),
        ({"id": ["k1"], "ts": [1], "window": [0]}, "which the windows are written as"),
        ("not a table", "labels: not a table"),
    ]
    for labels, match in cases:
        with pytest.raises((hd.SchemaError, hd.ConfigError), match=match):
            hd.training_windows(events, labels, COUNT)
    with pytest.raises(hd.ConfigError, match=r"rows must be in 1\.\.5"):
        hd.training_windows(events, {"id": ["k1"], "ts": [1]}, COUNT, rows=6)
    with pytest.raises(hd.ConfigError, match="chunk must be"):
        hd.training_windows(events, {"id": ["k1"], "ts": [1]}, COUNT, chunk=0)


def test_training_windows_written_in_chunks_read_back_the_same(tmp_path: Path) -> None:
    events = _history(4)
    rng = np.random.default_rng(0)
    labels = pa.table({"id": [f"k{k}" for k in rng.integers(0, 7, 100).tolist()],
                       "ts": pa.array(rng.integers(0, 3000, 100) * 1_000_000,
                                      pa.timestamp("ns")),
                       "y": rng.normal(size=100)})
    tw = hd.training_windows(events, labels, COUNT, chunk=32, progress=True)
    chunks = list(tw.chunks())
    assert max(len(c.lengths) for c in chunks) <= 32
    path = tw.write_parquet(tmp_path / "tw.parquet")
    back = pq.read_table(path).sort_by("label_index")
    assert back.column("y").to_pylist() == labels.column("y").to_pylist()
    window = back.column("window").combine_chunks().to_numpy_ndarray()
    assert np.array_equal(window, tw.values)
    assert back.column("window_length").to_pylist() == tw.lengths.tolist()
    assert pq.ParquetFile(path).metadata.num_row_groups == len(chunks)
    files = tw.write_npz(tmp_path / "npz")
    parts = [np.load(f) for f in files]
    idx = np.concatenate([p["label_index"] for p in parts])
    values = np.concatenate([p["values"] for p in parts])
    assert np.array_equal(values[np.argsort(idx)], tw.values)
    assert "label_y" in parts[0]
    table = tw.to_arrow()
    assert table.num_rows == 100
    assert table.column("label_index").to_pylist() == list(range(100))
    item = tw[3]
    assert item["id"] == labels.column("id")[3].as_py()
    assert np.array_equal(item["window"], tw.values[3])
    assert tw.mask.sum(axis=1).tolist() == tw.lengths.tolist()


def test_a_failed_parquet_write_leaves_no_file(tmp_path: Path) -> None:
    events = _history(4)
    tw = hd.training_windows(events, {"id": ["k1"], "ts": [10**6]}, COUNT)
    with pytest.raises(OSError):
        tw.write_parquet(tmp_path / "no-such-dir" / "tw.parquet")
    assert not list(tmp_path.rglob("*.parquet*"))


def test_replay_of_several_streams_takes_a_history_each() -> None:
    other = hd.StreamSpec("t", key="id", time="ts", fields=["x"], window=hd.CountWindow(2))
    t_events = pa.table({"id": ["a", "a", "a"], "ts": [1, 2, 3], "x": [1.0, 2.0, 3.0]})
    store = hd.replay({"s": _history(3, n=50), "t": t_events}, [COUNT, other], max_keys=32)
    assert store.window("t", "a").values[:, 0].tolist() == [2.0, 3.0]
    assert len(store.keys("s")) > 0
    only_t = hd.replay({"t": t_events}, [COUNT, other])  # a stream without history: empty
    assert only_t.keys("s") == []
    with pytest.raises(hd.ConfigError, match=r"streams \['u'\] that no spec names"):
        hd.replay({"u": t_events}, [COUNT, other])
    with pytest.raises(hd.ConfigError, match="give history as"):
        hd.replay(t_events, [COUNT, other])
    with pytest.raises(hd.ConfigError, match="one StreamSpec"):
        hd.replay(t_events, [])
    with pytest.raises(hd.ConfigError, match="a store, not both"):
        hd.replay(t_events, other, store=hd.WindowStore([other]), max_keys=3)
