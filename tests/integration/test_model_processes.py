"""Models in worker processes reading windows from shared memory: the same predictions as on
the runner's thread, computed in other processes, only scores sent back."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest

import heimdall as hd
from heimdall.models import ModelRunner, ModelSpec, Predictions


def last_a_and_pid(batch: hd.WindowBatch) -> np.ndarray:
    """Module level, so worker processes can import it: the newest "a" and who scored it."""
    return np.stack([batch.values[:, -1, 0], np.full(len(batch), float(os.getpid()))], axis=1)


def slow_mean(batch: hd.WindowBatch) -> np.ndarray:
    """A CPU-bound model: ~2 ms per batch of 64 (the benchmark's)."""
    t = time.perf_counter() + 0.002 * len(batch) / 64
    while time.perf_counter() < t:
        pass
    return batch.values.mean(axis=(1, 2))


def store_with(name: str, keys: int = 200) -> hd.WindowStore:
    spec = hd.StreamSpec("s", fields=["a", "b"], window=hd.CountWindow(8))
    store = hd.WindowStore([spec], max_keys=keys, shared_memory=name)
    for t in range(3):
        store.append_batch("s", [f"k{i}" for i in range(keys)],
                           np.array([[i * 10 + t, 0.0] for i in range(keys)]))
    return store


def test_worker_processes_score_like_the_thread() -> None:
    keys = [f"k{i}" for i in range(200)]
    with store_with(f"hd-mp-{uuid.uuid4().hex[:8]}") as store:
        preds = Predictions()
        spec = ModelSpec("m", "s", last_a_and_pid, max_batch=32, processes=2,
                         source=(last_a_and_pid, None, None))
        runner = ModelRunner(spec, store, preds)
        try:
            runner.notify(keys, [None] * len(keys), [time.time() * 1e3] * len(keys))
            while runner.run_once():
                pass
        finally:
            runner.close()
        got = preds.snapshot("m")
    assert sorted(got) == sorted(keys)
    for i, k in enumerate(keys):
        assert got[k].score[0] == i * 10 + 2  # the newest "a"
    pids = {int(p.score[1]) for p in got.values()}
    assert os.getpid() not in pids
    assert len(pids) == 2  # both workers scored
    assert runner.stats.scored == 200
    assert runner.stats.failed == 0


def test_processes_need_shared_memory_and_a_picklable_model() -> None:
    plain = hd.WindowStore([hd.StreamSpec("s", fields=["a"])], max_keys=4)
    spec = ModelSpec("m", "s", last_a_and_pid, processes=2, source=(last_a_and_pid, None, None))
    with pytest.raises(hd.ConfigError, match="shared memory"):
        ModelRunner(spec, plain, Predictions())
    with store_with(f"hd-mp-{uuid.uuid4().hex[:8]}", keys=4) as store:
        fn = lambda b: b.values[:, -1, 0]  # noqa: E731 - the point: not picklable by name
        bad = ModelSpec("m", "s", fn, processes=2, source=(fn, None, None))
        with pytest.raises(hd.ConfigError, match="cannot be pickled"):
            ModelRunner(bad, store, Predictions())
