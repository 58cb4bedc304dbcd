"""Hostile input to the store: values and times that do not fit the stream's types are
refused by name (nothing written), never stored wrapped or as garbage; messages echo a
bounded prefix of what they received."""

from __future__ import annotations

import math

import numpy as np
import pytest

import heimdall as hd


def _store(dtype: str = "float64", window: hd.CountWindow | hd.TimeWindow | None = None
           ) -> hd.WindowStore:
    spec = hd.StreamSpec("s", fields=["x"], dtype=dtype, window=window or hd.CountWindow(4))
    store = hd.WindowStore([spec], max_keys=4)
    store.append("s", "k", (1,), ts_ns=10)
    return store


@pytest.mark.parametrize(
    "ts",
    [
        np.array([1e30]), np.array([-1e30]), np.array([2.0**63]), np.array([math.inf]),
        np.array([2**64 - 1], dtype=np.uint64), np.array([2**63], dtype=np.uint64),
    ],
)
def test_batch_times_outside_int64_are_refused(ts: np.ndarray) -> None:
    store = _store()
    with pytest.raises(hd.SchemaError, match=r"ts_ns\[0\].*int64"):
        store.append_batch("s", ["k"], np.ones((1, 1)), ts_ns=ts)
    assert store.window("s", "k").ts_ns.tolist() == [10]


def test_batch_times_at_the_int64_edges_are_kept() -> None:
    store = _store()
    edge = np.array([2**63 - 1], dtype=np.uint64)
    store.append_batch("s", ["k"], np.ones((1, 1)), ts_ns=edge)
    assert store.window("s", "k").ts_ns[-1] == 2**63 - 1


@pytest.mark.parametrize("ts", [2**63, -(2**63) - 1, 1e30, 2**70])
def test_single_times_outside_int64_are_refused(ts: float) -> None:
    store = _store()
    with pytest.raises(hd.SchemaError, match="int64"):
        store.append("s", "k", (2,), ts_ns=ts)  # type: ignore[arg-type]
    assert store.window("s", "k").ts_ns.tolist() == [10]


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        ("int32", np.array([[2**40 + 7]], dtype=np.int64)),
        ("int32", np.array([[-(2**31) - 1]], dtype=np.int64)),
        ("int64", np.array([[2**64 - 1]], dtype=np.uint64)),
        ("int32", np.array([[2**32 - 1]], dtype=np.uint32)),
    ],
)
def test_batch_ints_that_do_not_fit_are_refused(dtype: str, values: np.ndarray) -> None:
    store = _store(dtype)
    with pytest.raises(hd.SchemaError, match=rf"row 0 field 'x' is .*outside {dtype}"):
        store.append_batch("s", ["k"], values, ts_ns=[11])
    with pytest.raises(hd.SchemaError):  # append() refused these already
        store.append("s", "k", (int(values[0, 0]),), ts_ns=11)
    assert store.window("s", "k").values.tolist() == [[1]]


def test_batch_ints_that_fit_a_narrower_dtype_are_kept() -> None:
    store = _store("int32")
    store.append_batch("s", ["k", "k"], np.array([[2**31 - 1], [-(2**31)]], dtype=np.int64),
                       ts_ns=[11, 12])
    assert store.window("s", "k").values[:, 0].tolist() == [1, 2**31 - 1, -(2**31)]


@pytest.mark.parametrize("seconds", [math.inf, math.nan, -math.inf, 0.0])
def test_read_spans_that_are_not_finite_are_refused(seconds: float) -> None:
    store = _store(window=hd.TimeWindow(seconds=60))
    with pytest.raises(hd.SchemaError, match="seconds must be finite and > 0"):
        store.windows("s", ["k"], seconds=seconds)
    with pytest.raises(hd.SchemaError, match="seconds must be finite and > 0"):
        store.aggregate("s", "k", ["mean"], seconds=seconds)


def test_a_read_span_past_any_time_reads_everything() -> None:
    store = _store(window=hd.TimeWindow(seconds=60))
    assert store.windows("s", ["k"], seconds=1e300).lengths.tolist() == [1]


@pytest.mark.parametrize("seconds", [math.inf, math.nan, 1e300])
def test_time_windows_must_fit_int64(seconds: float) -> None:
    with pytest.raises(hd.ConfigError, match="0 < seconds"):
        hd.TimeWindow(seconds=seconds)


def test_error_messages_echo_a_bounded_prefix() -> None:
    store = _store()
    huge = "k" * 100_000
    with pytest.raises(hd.KeyNotFoundError) as err:
        store.window("s", huge)
    assert len(str(err.value)) < 400
    assert "100002 characters" in str(err.value)
    with pytest.raises(hd.StreamNotFoundError) as err2:
        store.window(huge, "k")
    assert len(str(err2.value)) < 400
