"""Decoders: good payloads become rows; every bad one comes back with a reason, none raise."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pyarrow as pa
import pytest

import heimdall as hd
from heimdall.decode import make_decoder

SPEC = hd.StreamSpec("s", key="id", time="ts", fields=["a", "b"], dtype="float32",
                     window=hd.CountWindow(4))


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_records_decode_and_bad_ones_are_reported(fmt: str) -> None:
    enc = orjson.dumps if fmt == "json" else msgpack.packb
    good = [{"id": "k1", "ts": 1000, "a": 1, "b": 2.5}, {"id": 7, "ts": 5.5, "a": 3, "b": 4,
                                                         "extra": "ignored"}]
    payloads = [
        enc(good[0]),
        b"\xc1{bad" if fmt == "msgpack" else b"{bad",
        enc({"id": "k2", "ts": 1, "a": "x", "b": 1}),
        enc({"id": "k3", "ts": -5, "a": 1, "b": 1}),
        enc({"id": "", "ts": 5, "a": 1, "b": 1}),
        enc(good[1]),
        enc({"id": "k9", "a": 1, "b": 1}),
        enc({"id": "k4", "ts": 1, "a": 1e300, "b": 1}),  # inf as float32
    ]
    d = make_decoder(SPEC, fmt).decode(payloads)
    assert d.keys == ["k1", 7]
    np.testing.assert_array_equal(d.values, np.array([[1, 2.5], [3, 4]], np.float32))
    assert d.ts_ns.tolist() == [1_000_000_000, 5_500_000]
    assert d.row_msg.tolist() == [0, 5]
    reasons = dict(d.bad)
    assert sorted(reasons) == [1, 2, 3, 4, 6, 7]
    assert "at `$.a`" in reasons[2]
    assert "out of range" in reasons[3]
    assert "`$.id`" in reasons[4]
    assert "missing required field `ts`" in reasons[6]
    assert "non-finite" in reasons[7]
    assert "'a'" in reasons[7]


def test_nan_in_msgpack_is_rejected_or_allowed_by_policy() -> None:
    p = [msgpack.packb({"id": "k", "ts": 1, "a": float("nan"), "b": 1.0})]
    assert make_decoder(SPEC, "msgpack").decode(p).bad[0][0] == 0
    allow = hd.StreamSpec("s", key="id", time="ts", fields=["a", "b"], nan="allow")
    d = make_decoder(allow, "msgpack").decode(p)
    assert not d.bad
    assert np.isnan(d.values[0, 0])


def test_key_from_message_and_times_from_the_broker() -> None:
    spec = hd.StreamSpec("s", key="id", fields=["a"], dtype="int32")
    d = make_decoder(spec, "json", key_from="message_key", time_from="arrival").decode(
        [b'{"a": 5}', b'{"a": 99999999999}', b'{"a": 1.5}', b'{"a": 3}'],
        ["k", "k", "k", ""], [10, 11, 12, 13],
    )
    assert d.keys == ["k"]
    assert d.values.ravel().tolist() == [5]
    assert d.ts_ns.tolist() == [10]
    reasons = dict(d.bad)
    assert "does not fit int32" in reasons[1]
    assert "Expected `int`" in reasons[2]
    assert "no key" in reasons[3]


def test_arrow_message_carries_many_rows_and_bad_ones_are_whole() -> None:
    t = pa.table({"id": ["x", "y", "x"], "ts": [1, 2, 3], "a": [1.0, 2.0, 3.0], "b": [3, 4, 5]})
    payloads = [
        _ipc(t),
        b"junk",
        _ipc(pa.table({"id": ["x"], "a": [1.0]})),
        _ipc(pa.table({"id": ["x"], "ts": [1], "a": [None], "b": [1.0]})),
        _ipc(pa.table({"id": ["x"], "ts": [1], "a": [float("inf")], "b": [1.0]})),
        _ipc(pa.table({"id": ["z"], "ts": [4], "a": [9.0], "b": [9.0]})),
    ]
    d = make_decoder(SPEC, "arrow").decode(payloads)
    assert d.keys == ["x", "y", "x", "z"]
    assert d.row_msg.tolist() == [0, 0, 0, 5]
    assert d.values[:, 0].tolist() == [1, 2, 3, 9]
    assert d.ts_ns.tolist() == [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    reasons = dict(d.bad)
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "missing" in reasons[2]
    assert "null" in reasons[3]
    assert "non-finite" in reasons[4]


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(hd.ConfigError, match="unknown format"):
        make_decoder(SPEC, "xml")  # type: ignore[arg-type]


def test_payload_times_fast_path_matches_the_array_path() -> None:
    dec = make_decoder(SPEC, "json")
    ns = dec.ns_per_unit
    limit = np.iinfo(np.int64).max // ns
    for times in ([1, 2, 3], [0, limit], [1, limit + 1], [-1, 2], [1, 2.5], [2**70]):
        ts, ok = dec.payload_times_to_ns(times)  # a list: the fast path when it applies
        ts2, _ = dec.payload_times_to_ns(np.asarray(times))  # an array: numpy's path
        good = [0 <= t <= limit for t in times]
        assert ok is not None or all(good)  # None: every time is valid
        assert ok is None or not all(good) or 2.5 in times  # ints in range: no mask
        assert (ok if ok is not None else np.ones(len(times), bool)).tolist() == good
        assert ts.tolist() == ts2.tolist()
        assert ts.tolist() == [round(t * ns) if g else 0 for t, g in zip(times, good, strict=True)]
