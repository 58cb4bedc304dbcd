"""A WindowBatch's reductions read each key's real rows only, never the zero padding:
held to the store's own aggregates (which read the ring, where there is no padding)."""

from __future__ import annotations

import numpy as np
import pytest

import heimdall as hd


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rows", [None, 1, 7, 64])
def test_reductions_equal_the_stores_aggregates(seed: int, rows: int | None) -> None:
    rng = np.random.default_rng(seed)
    spec = hd.StreamSpec("s", fields=["a", "b"], window=hd.CountWindow(32))
    store = hd.WindowStore([spec], max_keys=64)
    keys = [f"k{i}" for i in range(20)]
    for k in keys[:-3]:  # the last three keys are never written: absent, NaN
        n = int(rng.integers(1, 60))
        store.append_batch("s", [k] * n, rng.normal(70, 5, (n, 2)))
    batch = store.windows("s", keys)
    agg = store.aggregate("s", keys, ["mean", "std", "min", "max", "last"], rows=rows)
    np.testing.assert_allclose(batch.mean(rows), agg["mean"], rtol=1e-12)
    np.testing.assert_allclose(batch.std(rows), agg["std"], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(batch.min(rows), agg["min"])
    np.testing.assert_array_equal(batch.max(rows), agg["max"])
    np.testing.assert_array_equal(batch.last(), agg["last"])
    assert np.isnan(batch.mean(rows)[-3:]).all()


def test_the_readme_model_no_longer_scores_the_padding() -> None:
    spec = hd.StreamSpec("sensors", fields=["temp"], window=hd.CountWindow(256))
    store = hd.WindowStore([spec], max_keys=4)
    store.append_batch("sensors", ["m-1"] * 5, [[70.0], [71.0], [72.0], [73.0], [74.0]])
    batch = store.windows("sensors", ["m-1"])
    assert abs(batch.values[:, -16:, 0].mean(axis=1)[0] - 70) > 40  # the trap: 22.5 -> 47.5
    assert batch.mean(rows=16)[0, 0] == 72.0  # the helper: the five readings only


def test_bad_rows_are_refused() -> None:
    spec = hd.StreamSpec("s", fields=["a"])
    batch = hd.WindowStore([spec], max_keys=2).windows("s", ["x"])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(hd.SchemaError, match="rows must be"):
            batch.mean(bad)  # type: ignore[arg-type]
