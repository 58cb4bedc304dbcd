"""One suite over every reader of windows: the in-process store, the gRPC and Flight clients.

Each test writes through a ``WindowStore`` and reads through ``reader``, which is the store
itself or ``hd.connect`` to a ``GrpcServer`` (or a ``FlightServer``) serving it; all must
give the same answers and raise the same exceptions. ``shared``: the store in shared memory,
read through ``hd.attach`` in this process (its own mapping); ``other process``: read through
``hd.attach`` in a spawned process, each call made there and its answer (or exception) sent
back (a window as a consistent copy of the view read there).
"""

from __future__ import annotations

import multiprocessing as mp
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import heimdall as hd
from heimdall.window import Window

W = 8
FIELDS = ["a", "b", "c"]


def make_store(dtype: str = "float64", shared_memory: str | None = None) -> hd.WindowStore:
    return hd.WindowStore(
        [
            hd.StreamSpec("s", fields=FIELDS, dtype=dtype, window=hd.CountWindow(W)),
            hd.StreamSpec("t", fields=["x"], window=hd.TimeWindow(seconds=10, max_rows=16)),
        ],
        max_keys=64,
        shared_memory=shared_memory,
    )


def _serve_reads(conn: Any) -> None:
    """In a spawned process: attach to stores and answer read calls on them."""
    reader: Any = None
    while True:
        try:
            method, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            if method == "attach":
                reader, value = hd.attach(*args), None
            elif method == "detach":
                reader.close()
                reader, value = None, None
            else:
                value = getattr(reader, method)(*args, **kwargs)
                if isinstance(value, Window):  # the view read here, as a consistent copy
                    c = value.copy()
                    value = (c.stream, c.key, c.fields, c.values, c.ts_ns)
            conn.send((True, value))
        except Exception as exc:
            conn.send((False, exc))


class OtherProcessReader:
    """``hd.attach`` in another process, behind the reader calls the suite makes."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_reads, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.conn.send((method, args, kwargs))
        ok, value = self.conn.recv()
        if not ok:
            raise value
        return value

    def window(self, stream: str, key: Any) -> Window:
        st, k, fields, values, ts = self._call("window", stream, key)
        values.flags.writeable = False
        ts.flags.writeable = False
        return Window(st, k, fields, values, ts)

    def windows(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("windows", *args, **kwargs)

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("aggregate", *args, **kwargs)

    def keys(self, stream: str) -> Any:
        return self._call("keys", stream)

    def stats(self) -> Any:
        return self._call("stats")

    def __contains__(self, item: Any) -> bool:
        return bool(self._call("__contains__", item))

    def close(self) -> None:
        self.conn.close()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


@pytest.fixture(scope="module")
def other_process() -> Iterator[OtherProcessReader]:
    reader = OtherProcessReader()
    yield reader
    reader.close()


@pytest.fixture(params=["local", "remote", "flight", "shared", "other process"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[hd.WindowStore, Any]]:
    """(the store written to, the reader under test)."""
    if request.param == "shared":  # hd.attach maps the segment as another process does
        store = make_store(shared_memory=f"hd-contract-{uuid.uuid4().hex[:10]}")
        reader = hd.attach(store.segment.name)  # type: ignore[union-attr]
        try:
            yield store, reader
        finally:
            reader.close()
            store.close()
        return
    if request.param == "other process":
        store = make_store(shared_memory=f"hd-contract-{uuid.uuid4().hex[:10]}")
        far: OtherProcessReader = request.getfixturevalue("other_process")
        far._call("attach", store.segment.name)  # type: ignore[union-attr]
        try:
            yield store, far
        finally:
            far._call("detach")
            store.close()
        return
    store = make_store()
    if request.param == "local":
        yield store, store
        return
    if request.param == "flight":
        from heimdall.remote.flight import FlightServer

        flight = FlightServer(store).start()
        reader = hd.connect(f"127.0.0.1:{flight.port}", transport="flight")
        try:
            yield store, reader
        finally:
            reader.close()
            flight.stop()
        return
    server = hd.GrpcServer(store).start()
    remote = hd.connect(f"127.0.0.1:{server.port}")
    try:
        yield store, remote
    finally:
        remote.close()
        server.stop()


def fill(store: hd.WindowStore, n: int = 50, keys: int = 5, seed: int = 0) -> dict[Any, deque]:
    """Random rows, oracle deques beside them."""
    rng = np.random.default_rng(seed)
    oracle: dict[Any, deque] = {}
    for i in range(n):
        key = f"k{rng.integers(keys)}" if i % 7 else int(rng.integers(3))
        row = rng.normal(size=len(FIELDS))
        store.append("s", key, dict(zip(FIELDS, row.tolist(), strict=True)), ts_ns=1000 + i)
        oracle.setdefault(key, deque(maxlen=W)).append((1000 + i, row))
    return oracle


def test_window_equals_the_oracle(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    oracle = fill(store)
    for key, rows in oracle.items():
        w = reader.window("s", key)
        np.testing.assert_array_equal(w.values, np.array([r for _, r in rows]))
        np.testing.assert_array_equal(w.ts_ns, np.array([t for t, _ in rows]))
        assert w.fields == tuple(FIELDS)
        assert w.key == key
        assert w.stream == "s"
        assert len(w) == len(rows)
        assert w.valid
        assert not w.values.flags.writeable
        np.testing.assert_array_equal(w["b"], w.values[:, 1])
        np.testing.assert_array_equal(w.copy().values, w.values)


def test_window_dtype_is_the_streams(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    store.append("t", "x1", {"x": 1.5}, ts_ns=10)
    w = reader.window("t", "x1")
    assert w.values.dtype == np.float64
    assert w.ts_ns.dtype == np.int64
    assert w.values.shape == (1, 1)


def test_missing_stream_key_and_field_raise_the_same(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    fill(store)
    with pytest.raises(hd.KeyNotFoundError, match="'nope'"):
        reader.window("s", "nope")
    with pytest.raises(hd.StreamNotFoundError, match="'q'"):
        reader.window("q", "k1")
    with pytest.raises(KeyError):
        reader.window("s", "nope")
    with pytest.raises(hd.FieldNotFoundError, match="'zz'"):
        reader.window("s", "k1")["zz"]
    with pytest.raises(hd.StreamNotFoundError):
        reader.keys("q")


def test_windows_batch(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    oracle = fill(store)
    keys = [*oracle, "absent"]
    b = reader.windows("s", keys)
    assert b.values.shape == (len(keys), W, len(FIELDS))
    assert b.keys == keys
    assert b.fields == tuple(FIELDS)
    assert b.found.tolist() == [True] * len(oracle) + [False]
    for i, (_key, rows) in enumerate(oracle.items()):
        n = len(rows)
        assert b.lengths[i] == n
        np.testing.assert_array_equal(b.values[i, W - n:], np.array([r for _, r in rows]))
        np.testing.assert_array_equal(b.ts_ns[i, W - n:], [t for t, _ in rows])
        assert not b.values[i, : W - n].any()
        assert b.mask[i].sum() == n
    assert b.lengths[-1] == 0
    short = reader.windows("s", list(oracle), rows=2)
    assert short.values.shape == (len(oracle), 2, len(FIELDS))
    np.testing.assert_array_equal(short.values, b.values[:-1, -2:])


def test_windows_by_seconds(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    for i in range(10):
        store.append("t", "x", {"x": float(i)}, ts_ns=i * 1_000_000_000)
    b = reader.windows("t", ["x"], seconds=3.5)
    assert b.lengths.tolist() == [4]
    assert b.values[0, -4:, 0].tolist() == [6.0, 7.0, 8.0, 9.0]


def test_aggregate(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    oracle = fill(store)
    key = next(iter(oracle))
    rows = np.array([r for _, r in oracle[key]])
    one = reader.aggregate("s", key, ["mean", "max", "count", "last"])
    np.testing.assert_allclose(one["mean"], rows.mean(axis=0))
    np.testing.assert_array_equal(one["max"], rows.max(axis=0))
    assert one["count"].dtype == np.int64
    assert one["count"].tolist() == [len(rows)] * 3
    np.testing.assert_array_equal(one["last"], rows[-1])
    many = reader.aggregate("s", [key, "absent"], ["std", "count"], rows=3)
    np.testing.assert_allclose(many["std"][0], rows[-3:].std(axis=0))
    assert many["count"][1].tolist() == [0, 0, 0]
    assert np.isnan(many["std"][1]).all()
    default = reader.aggregate("s", key)
    assert set(default) == {"count", "mean", "std", "min", "max", "last"}


def test_bad_arguments_raise_schema_error(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    fill(store)
    with pytest.raises(hd.SchemaError, match="unknown aggregate"):
        reader.aggregate("s", "k1", ["median"])
    with pytest.raises(hd.KeyNotFoundError):
        reader.aggregate("s", "absent", ["mean"])
    with pytest.raises(hd.SchemaError, match="rows"):
        reader.windows("s", ["k1"], rows=0)
    with pytest.raises(hd.SchemaError, match="seconds"):
        reader.windows("s", ["k1"], seconds=-1.0)


def test_keys_contains_and_stats(pair: tuple[hd.WindowStore, Any]) -> None:
    store, reader = pair
    oracle = fill(store)
    assert sorted(map(str, reader.keys("s"))) == sorted(map(str, oracle))
    assert {type(k) for k in reader.keys("s")} == {type(k) for k in oracle}
    assert ("s", next(iter(oracle))) in reader
    assert ("s", "absent") not in reader
    stats = reader.stats()
    assert stats == store.stats()
    assert stats["streams"]["s"]["keys"] == len(oracle)
    assert stats["streams"]["s"]["events"] == 50


READ_METHODS = ["window", "windows", "aggregate", "keys", "__contains__", "stats"]


@pytest.mark.parametrize("cls", [hd.WindowStore, hd.AttachedStore, hd.RemoteStore,
                                 hd.ClusterStore], ids=lambda c: c.__name__)
def test_every_reader_satisfies_the_reader_contract(cls: type) -> None:
    """Each reader has the contract's read methods with its parameters: names, kinds,
    defaults (the default aggregates among them) and types, as ``hd.WindowReader`` writes
    them once. (A store's instances bind its core's ``append`` and ``window`` in place of the
    class's: the class's are the typed, documented ones.)"""
    import inspect

    assert issubclass(cls, hd.WindowReader)
    for name in READ_METHODS:
        method = getattr(cls, name)
        assert inspect.isfunction(method), f"{cls.__name__}.{name}"
        want = inspect.signature(getattr(hd.WindowReader, name))
        got = inspect.signature(method)

        def shape(sig: inspect.Signature) -> list[tuple[Any, ...]]:
            return [(p.name, p.kind, p.default, p.annotation)
                    for p in list(sig.parameters.values())[1:]]  # after self

        assert shape(got) == shape(want), \
            f"{cls.__name__}.{name}{got} is not the contract's {name}{want}"
        assert got.return_annotation == want.return_annotation, f"{cls.__name__}.{name}"
