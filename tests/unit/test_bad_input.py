"""Every bad input gets a typed error that names what was wrong; a rejected batch writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import heimdall as hd


@pytest.fixture
def store() -> hd.WindowStore:
    spec = hd.StreamSpec(
        "sensors", key="id", time="ts", fields=["temp", "rpm"], window=hd.CountWindow(4)
    )
    s = hd.WindowStore([spec], max_keys=3)
    s.append("sensors", "m-1", {"temp": 1.0, "rpm": 2.0}, ts_ns=1)
    return s


def test_unknown_stream(store: hd.WindowStore) -> None:
    with pytest.raises(hd.StreamNotFoundError, match=r"'nope'.*sensors"):
        store.append("nope", "m-1", (1, 2))
    with pytest.raises(KeyError):
        store.window("nope", "m-1")


def test_unknown_key_and_field(store: hd.WindowStore) -> None:
    with pytest.raises(hd.KeyNotFoundError, match="m-9"):
        store.window("sensors", "m-9")
    with pytest.raises(hd.FieldNotFoundError, match=r"'vib'.*temp"):
        store.window("sensors", "m-1")["vib"]
    with pytest.raises(hd.SchemaError, match=r"lacks field\(s\) \['rpm'\]"):
        store.append("sensors", "m-1", {"temp": 1.0})


@pytest.mark.parametrize("key", [1.5, None, (1, 2), b"x", True, ["m-1"], {}])
def test_key_type(store: hd.WindowStore, key: object) -> None:
    with pytest.raises(hd.SchemaError, match="str or int"):
        store.append("sensors", key, (1, 2))  # type: ignore[arg-type]
    with pytest.raises(hd.SchemaError, match="str or int"):
        store.append_batch("sensors", ["m-1", key], [[1, 2], [3, 4]])  # type: ignore[list-item]
    assert store.keys("sensors") == ["m-1"]
    assert len(store.window("sensors", "m-1")) == 1


@pytest.mark.parametrize(
    ("values", "ts", "match"),
    [
        (np.ones((2, 3)), None, r"shape \(2, 2\)"),
        (np.ones((3, 2)), None, r"shape \(2, 2\)"),
        (np.array([["a", "b"], ["c", "d"]]), None, "cannot be stored"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), None, r"row 0 field 'rpm'.*nan"),
        (np.array([[1.0, 2.0], [np.inf, 2.0]]), None, "row 1 field 'temp'"),
        (np.ones((2, 2)), [1, 2, 3], r"ts_ns must have shape \(2,\)"),
        (np.ones((2, 2)), [1.0, float("nan")], "non-finite"),
        (np.ones((2, 2)), ["a", "b"], "int64 nanoseconds"),
    ],
)
def test_rejected_batch_changes_nothing(
    store: hd.WindowStore, values: object, ts: object, match: str
) -> None:
    before = store.window("sensors", "m-1").copy()
    with pytest.raises(hd.SchemaError, match=match):
        store.append_batch("sensors", ["m-1", "m-2"], values, ts)  # type: ignore[arg-type]
    assert store.keys("sensors") == ["m-1"]
    after = store.window("sensors", "m-1")
    assert after.values.tolist() == before.values.tolist()
    assert after.ts_ns.tolist() == before.ts_ns.tolist()


@pytest.mark.parametrize(
    ("values", "kw", "match"),
    [
        ((1.0, float("nan")), {}, r"non-finite value in field\(s\) \['rpm'\]"),
        ((float("inf"), 1.0), {}, r"\['temp'\]"),
        ((1.0, "x"), {}, "do not fit dtype float64"),
        ((1.0,), {}, "expected 2 values"),
        ((1.0, 2.0), {"ts_ns": float("nan")}, "ts_ns nan is non-finite"),
        ((1.0, 2.0), {"ts_ns": "now"}, "ts_ns must be an int"),
    ],
)
def test_rejected_append_changes_nothing(
    store: hd.WindowStore, values: tuple[object, ...], kw: dict[str, object], match: str
) -> None:
    for key in ("m-1", "m-new"):
        with pytest.raises(hd.SchemaError, match=match):
            store.append("sensors", key, values, **kw)  # type: ignore[arg-type]
    assert store.keys("sensors") == ["m-1"]
    w = store.window("sensors", "m-1")
    assert w.values.tolist() == [[1.0, 2.0]]
    assert w.valid


def test_payload_time_field(store: hd.WindowStore) -> None:
    store.append("sensors", "m-1", {"temp": 1.0, "rpm": 2.0, "ts": 5})  # ms by default
    assert store.window("sensors", "m-1").ts_ns[-1] == 5_000_000
    with pytest.raises(hd.SchemaError, match="time field 'ts' must be a number"):
        store.append("sensors", "m-1", {"temp": 1.0, "rpm": 2.0, "ts": "5"})


def test_nan_allowed_when_asked() -> None:
    spec = hd.StreamSpec("s", fields=["x"], nan="allow", window=hd.CountWindow(2))
    store = hd.WindowStore([spec], max_keys=1)
    store.append("s", 1, (float("nan"),))
    assert np.isnan(store.window("s", 1).values[0, 0])


def test_capacity_error_when_eviction_off() -> None:
    spec = hd.StreamSpec("s", fields=["x"], window=hd.CountWindow(2))
    store = hd.WindowStore([spec], max_keys=2, evict=False)
    store.append_batch("s", ["a", "b"], [[1], [2]])
    with pytest.raises(hd.CapacityError, match="max_keys=2"):
        store.append("s", "c", (3,))
    with pytest.raises(hd.CapacityError, match="room for 0"):
        store.append_batch("s", ["a", "c"], [[1], [3]])
    assert sorted(store.keys("s")) == ["a", "b"]
    assert store.window("s", "a").values.tolist() == [[1.0]]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: hd.CountWindow(0), "n >= 1"),
        (lambda: hd.TimeWindow(seconds=-1), "0 < seconds"),
        (lambda: hd.StreamSpec("s", fields=[]), "at least one field"),
        (lambda: hd.StreamSpec("s", fields=["a", "a"]), "repeat"),
        (lambda: hd.StreamSpec("s", fields=["a"], dtype="complex64"), "not supported"),
        (lambda: hd.WindowStore([hd.StreamSpec("s", fields=["a"])], max_keys=0), "max_keys"),
        (lambda: hd.WindowStore([]), "at least one"),
    ],
)
def test_bad_specs(make: object, match: str) -> None:
    with pytest.raises(hd.ConfigError, match=match):
        make()  # type: ignore[operator]


def test_bad_read_arguments(store: hd.WindowStore) -> None:
    with pytest.raises(hd.SchemaError, match="unknown aggregate 'median'"):
        store.aggregate("sensors", "m-1", ["median"])
    with pytest.raises(hd.SchemaError, match="rows must be"):
        store.windows("sensors", ["m-1"], rows=0)
    with pytest.raises(hd.KeyNotFoundError):
        store.aggregate("sensors", "zz", ["mean"])
