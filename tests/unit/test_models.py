"""The model runner without a broker: triggers, batching, coalescing, failures, adapters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import heimdall as hd
from heimdall.errors import ConfigError, KeyNotFoundError, ModelError, StreamNotFoundError
from heimdall.models import ModelRunner, ModelSpec, Predictions, adapt, window_features
from heimdall.models._tracker import ChangeTracker
from heimdall.models.runner import check_output
from heimdall.window import WindowBatch

W = 8
F = 2


def make_store(max_keys: int = 1000) -> hd.WindowStore:
    spec = hd.StreamSpec("s", key="id", fields=["a", "b"], window=hd.CountWindow(W))
    return hd.WindowStore([spec], max_keys=max_keys)


class Feed:
    """Appends rows to the store and tells the runner, as the ingest does."""

    def __init__(self, store: hd.WindowStore, runner: ModelRunner) -> None:
        self.store, self.runner, self.ts, self.msg = store, runner, 0, 0

    def __call__(self, keys: list[str]) -> None:
        n = len(keys)
        vals = np.column_stack([np.arange(self.ts, self.ts + n), np.full(n, 1.0)]).astype(float)
        ts = np.arange(self.ts + 1, self.ts + n + 1, dtype=np.int64)
        self.store.append_batch("s", keys, vals, ts)
        ids = [f"msg-{self.msg + i}" for i in range(n)]
        self.runner.notify(keys, ids, [time.time() * 1e3] * n)
        self.ts += n
        self.msg += n


def window_mean(batch: WindowBatch) -> np.ndarray:
    return (batch.values[:, :, 0] * batch.mask).sum(axis=1) / batch.lengths


def runner_for(fn: Callable[[WindowBatch], Any], store: hd.WindowStore | None = None,
               **kw: Any) -> tuple[ModelRunner, Feed, hd.WindowStore]:
    store = store or make_store()
    spec = ModelSpec(kw.pop("name", "m"), "s", adapt(fn), **kw)
    runner = ModelRunner(spec, store, Predictions())
    return runner, Feed(store, runner), store


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


# ---- the change tracker ------------------------------------------------------------------


def test_every_one_makes_each_changed_key_due_once_oldest_first() -> None:
    t = ChangeTracker(every=1)
    t.notify(["a", "b", "a", "c"], [1, 2, 3, 4], [0.0] * 4)
    assert t.take(2) == ["a", "b"]
    assert t.take(10) == ["c"]
    assert t.take(10) == []
    assert (t.triggers, t.coalesced) == (4, 1)  # the second "a" was folded into the first


def test_every_n_counts_events_per_key_across_batches() -> None:
    t = ChangeTracker(every=3)
    t.notify(["a", "a", "b"], [1, 2, 3], [0.0] * 3)
    assert t.take(10) == []
    t.notify(["a", "b"], [4, 5], [0.0] * 2)
    assert t.take(10) == ["a"]
    t.notify(["b"] * 7, list(range(7)), [0.0] * 7)  # b: 2 + 7 = 9 events -> three triggers
    assert t.take(10) == ["b"]
    assert (t.triggers, t.coalesced) == (4, 2)


def test_interval_makes_changed_keys_due_at_the_tick() -> None:
    t = ChangeTracker(interval_s=1.0)
    t.notify(["a", "b", "a"], [1, 2, 3], [0.0] * 3)
    assert t.take(10) == []
    t.tick()
    assert t.take(10) == ["a", "b"]
    t.tick()
    assert t.take(10) == []


def test_trigger_is_the_newest_message_of_the_key() -> None:
    t = ChangeTracker(every=1)
    t.notify(["a", "a"], ["m1", "m2"], [10.0, 20.0])
    assert t.trigger_of("a") == ("m2", 20.0)


# ---- the runner ----------------------------------------------------------------------------


def test_every_n_scores_a_key_after_n_events_with_its_newest_window() -> None:
    runner, feed, store = runner_for(window_mean, every=3)
    feed(["a", "a", "b"])
    assert runner.run_once() == 0
    feed(["a", "b", "c"])
    assert runner.run_once() == 1  # a: 3 events; b: 2; c: 1
    p = runner.predictions.latest("m", "a")
    w = store.window("s", "a")
    assert p.score == pytest.approx(float(w["a"].mean()))
    assert p.event_time_ns == int(w.ts_ns[-1])
    assert p.message_id == "msg-3"  # the message whose event made "a" due
    assert (p.model, p.version) == ("m", "1")
    assert p.latency_ms >= 0
    with pytest.raises(KeyNotFoundError, match="'b'"):
        runner.predictions.latest("m", "b")


def test_scores_equal_the_model_called_directly() -> None:
    runner, feed, store = runner_for(window_mean, every=1, max_batch=1000)
    rng = np.random.default_rng(3)
    keys = [f"k{i}" for i in rng.integers(0, 50, 2000).tolist()]
    for i in range(0, len(keys), 100):
        feed(keys[i:i + 100])
    while runner.run_once():
        pass
    direct = window_mean(store.windows("s", sorted(set(keys))))
    got = [runner.predictions.latest("m", k).score for k in sorted(set(keys))]
    np.testing.assert_allclose(got, direct)


def test_due_keys_are_batched_up_to_max_batch() -> None:
    sizes: list[int] = []

    def model(batch: WindowBatch) -> np.ndarray:
        sizes.append(len(batch))
        assert batch.values.shape == (len(batch), W, F)
        return np.zeros(len(batch))

    runner, feed, _ = runner_for(model, every=1, max_batch=4)
    feed([f"k{i}" for i in range(10)])
    while runner.run_once():
        pass
    assert sizes == [4, 4, 2]
    assert (runner.stats.scored, runner.stats.batches) == (10, 3)


def test_min_rows_keeps_short_windows_out_until_they_fill() -> None:
    scored: list[list[Any]] = []

    def model(batch: WindowBatch) -> np.ndarray:
        scored.append(list(batch.keys))
        assert (batch.lengths >= 3).all()
        return np.ones(len(batch))

    runner, feed, _ = runner_for(model, every=1, min_rows=3)
    feed(["a", "a", "a", "b"])
    runner.run_once()
    assert scored == [["a"]]
    assert runner.stats.too_short == 1
    feed(["b", "b"])
    runner.run_once()
    assert scored[-1] == ["b"]


def test_a_slow_model_coalesces_keys_memory_stays_bounded_newest_window_wins() -> None:
    gate = threading.Event()
    started = threading.Event()

    def slow(batch: WindowBatch) -> np.ndarray:
        started.set()
        gate.wait(10)
        return batch.values[:, -1, 0].copy()  # the newest row's value

    runner, feed, store = runner_for(slow, every=1, max_batch=16)
    keys = [f"k{i}" for i in range(40)]
    runner.start()
    try:
        feed(keys)
        assert started.wait(5)
        for _ in range(200):  # 8,000 more events while the model is stuck on one batch
            feed(keys)
        assert runner.tracker.pending <= len(keys)  # bounded by the keys, not the events
        gate.set()
        wait_for(lambda: runner.tracker.pending == 0 and all(
            (p := runner.predictions.snapshot("m").get(k)) is not None
            and p.score == float(store.window("s", k)["a"][-1]) for k in keys))
    finally:
        gate.set()
        runner.stop()
    assert runner.skipped > 7000
    assert runner.skipped + runner.stats.scored == runner.tracker.triggers
    assert runner.stats.scored < 200


def test_interval_scores_changed_keys_on_a_timer() -> None:
    runner, feed, _ = runner_for(window_mean, interval_s=0.05)
    runner.start()
    try:
        feed(["a", "b"])
        wait_for(lambda: runner.stats.scored >= 2)
        scored = runner.stats.scored
        time.sleep(0.2)  # nothing changed: nothing more is scored
        assert runner.stats.scored == scored
        feed(["a"])
        wait_for(lambda: runner.stats.scored == scored + 1)
    finally:
        runner.stop()


def test_a_failing_model_is_logged_counted_and_the_runner_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky(batch: WindowBatch) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros(len(batch))

    runner, feed, _ = runner_for(flaky, every=1, name="flaky", version="7")
    feed(["a", "b", "c"])
    with caplog.at_level(logging.ERROR, logger="heimdall.models"):
        assert runner.run_once() == 0
    assert "'flaky' (version 7) failed on a batch of 3 keys" in caplog.text
    assert runner.stats.failed == 1
    feed(["a"])
    assert runner.run_once() == 1


def test_a_wrong_shaped_output_is_a_clear_error_naming_the_model(
        caplog: pytest.LogCaptureFixture) -> None:
    runner, feed, _ = runner_for(lambda b: np.zeros((len(b), 2, 2)), every=1, name="bad")
    feed(["a", "b"])
    with caplog.at_level(logging.ERROR, logger="heimdall.models"):
        assert runner.run_once() == 0
    assert "model 'bad' returned shape (2, 2, 2) for a batch of 2 keys" in caplog.text
    assert runner.stats.wrong_output == 1
    with pytest.raises(ModelError, match=r"returned shape \(3,\) for a batch of 2 keys"):
        check_output("m", np.zeros(3), 2)
    with pytest.raises(ModelError, match="dtype <U1"):
        check_output("m", np.array(["a", "b"]), 2)
    assert check_output("m", [[1, 2], [3, 4]], 2).shape == (2, 2)


def test_row_outputs_become_lists_of_scores() -> None:
    runner, feed, _ = runner_for(lambda b: np.ones((len(b), 3)), every=1)
    feed(["a"])
    runner.run_once()
    assert runner.predictions.latest("m", "a").score == [1.0, 1.0, 1.0]


def test_evicted_keys_are_not_scored() -> None:
    store = make_store(max_keys=2)
    runner, feed, _ = runner_for(window_mean, store, every=1)
    feed(["a", "b", "c"])  # "a" is evicted by "c"
    runner.run_once()
    assert runner.stats.scored == 2
    with pytest.raises(KeyNotFoundError):
        runner.predictions.latest("m", "a")


def test_spec_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="not both"):
        ModelSpec("m", "s", window_mean, every=1, interval_s=1.0)
    with pytest.raises(ConfigError, match="every must be"):
        ModelSpec("m", "s", window_mean, every=0)
    with pytest.raises(ConfigError, match="max_batch must be"):
        ModelSpec("m", "s", window_mean, max_batch=0)
    with pytest.raises(StreamNotFoundError, match="no stream 'nope'"):
        ModelRunner(ModelSpec("m", "nope", window_mean), make_store(), Predictions())
    with pytest.raises(ConfigError, match="cannot run 'int' as a model"):
        adapt(3)


def test_predictions_keep_the_newest_per_key_within_max_keys() -> None:
    from heimdall.models import Prediction

    def mk(keys: str, start: int) -> list[Prediction]:
        return [Prediction("m", "1", k, float(start + i), start + i, None, 0.0, 0)
                for i, k in enumerate(keys)]

    preds = Predictions(max_keys=3)
    preds.record("m", mk("ab", 0))
    preds.record("m", mk("cb", 2))  # a full young generation becomes the old one
    assert preds.latest("m", "b").score == 3.0  # the newest wins
    assert preds.latest("m", "c").score == 2.0
    preds.record("m", mk("d", 4))
    assert preds.latest("m", "a").score == 0.0  # still held (old generation)
    assert len(preds) == 4  # between max_keys and 2 x max_keys
    with pytest.raises(KeyNotFoundError, match="models with predictions: \\['m'\\]"):
        preds.latest("other", "a")
    preds.record("m", mk("ef", 5))  # {d, e, f} becomes the old generation: a, b, c are gone
    with pytest.raises(KeyNotFoundError):
        preds.latest("m", "a")
    for key in "def":  # the max_keys most recently predicted keys are always held
        preds.latest("m", key)
    assert sorted(preds.snapshot("m")) == ["d", "e", "f"]


def test_a_prediction_batch_builds_predictions_when_read() -> None:
    from heimdall.models.predictions import PredictionBatch

    seen: list[object] = []
    batch = PredictionBatch("m", "2", ["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]),
                            [10, 20], [b"x", None], np.array([1.5, 2.5]), 99,
                            lambda mid: seen.append(mid) or (None if mid is None else "id"))
    assert len(batch) == 2
    assert seen == []
    p = batch[1]
    assert (p.model, p.version, p.key, p.score, p.event_time_ns, p.message_id,
            p.latency_ms, p.predicted_at_ns) == ("m", "2", "b", [3.0, 4.0], 20, None, 2.5, 99)
    assert [q.key for q in batch] == ["a", "b"]
    assert batch[0].message_id == "id"
    assert [q.key for q in batch[::-1]] == ["b", "a"]
    preds = Predictions()
    preds.record("m", batch)
    assert preds.latest("m", "a") == batch[0]


def test_predictions_of_mixed_shapes_versions_and_repeated_keys() -> None:
    from heimdall.models import Prediction

    preds = Predictions(max_keys=100)
    preds.record("m", [Prediction("m", "1", "a", 1.0, 1, "i1", 0.5, 7),
                       Prediction("m", "2", "b", [1.0, 2.0], 2, None, 0.25, 8),
                       Prediction("m", "1", "a", 3.0, 3, "i3", 0.75, 7)])  # a's last wins
    assert preds.latest("m", "a") == Prediction("m", "1", "a", 3.0, 3, "i3", 0.75, 7)
    assert preds.latest("m", "b") == Prediction("m", "2", "b", [1.0, 2.0], 2, None, 0.25, 8)
    # a wider row widens the columns; the rows already there keep their scores
    preds.record("m", [Prediction("m", "3", "c", [4.0, 5.0, 6.0], 4, None, 0.0, 9)])
    preds.record("m", [Prediction("m", "1", "b", 9.0, 5, None, 0.0, 9)])  # a list, then a float
    assert preds.latest("m", "a").score == 3.0
    assert preds.latest("m", "b").score == 9.0
    assert preds.latest("m", "c").score == [4.0, 5.0, 6.0]
    assert sorted(preds.snapshot("m")) == ["a", "b", "c"]
    many = [Prediction("m", "1", f"k{i}", float(i), i, None, 0.0, 0) for i in range(300)]
    preds.record("m", many)  # the columns grow past their first size
    assert preds.latest("m", "k299").score == 299.0
    assert preds.latest("m", "k0").score == 0.0
    assert len(preds) == 303


# ---- adapters ------------------------------------------------------------------------------


def _batch(store: hd.WindowStore, keys: list[str]) -> WindowBatch:
    return store.windows("s", keys)


def _filled_store() -> tuple[hd.WindowStore, list[str]]:
    store = make_store()
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(6)]
    for t in range(W):
        store.append_batch("s", keys, rng.normal(size=(6, F)),
                           np.full(6, t + 1, dtype=np.int64))
    return store, keys


def test_window_features_are_last_mean_std_over_the_rows() -> None:
    store, keys = _filled_store()
    store.append("s", "short", [1.0, 2.0], 1)
    b = _batch(store, [*keys[:2], "short"])
    f = window_features(b)
    v = store.window("s", keys[0]).values
    np.testing.assert_allclose(f[0], np.concatenate([v[-1], v.mean(0), v.std(0)]))
    np.testing.assert_allclose(f[2], [1.0, 2.0, 1.0, 2.0, 0.0, 0.0])


def test_sklearn_estimator_adapter() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model", reason="the sklearn extra")
    store, keys = _filled_store()
    b = _batch(store, keys)
    x = window_features(b)
    y = x[:, 1] * 2.0
    est = linear_model.LinearRegression().fit(x, y)
    np.testing.assert_allclose(adapt(est)(b), y, atol=1e-9)
    clf = linear_model.LogisticRegression().fit(x, (y > y.mean()).astype(int))
    proba = adapt(clf, method="predict_proba")(b)
    assert proba.shape == (6, 2)
    feats = lambda batch: batch.values[:, -1, :]  # noqa: E731
    est2 = linear_model.LinearRegression().fit(b.values[:, -1, :], y)
    assert adapt(est2, features=feats)(b).shape == (6,)
    with pytest.raises(ConfigError, match="no method 'transform'"):
        adapt(est, method="transform")


def test_onnx_session_adapter() -> None:
    onnx = pytest.importorskip("onnx", reason="the onnx test dependency")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra")
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph(
        [node], "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", W, F])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B"])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    store, keys = _filled_store()
    b = _batch(store, keys)
    np.testing.assert_allclose(adapt(sess)(b), b.values.mean(axis=(1, 2)), rtol=1e-5)
    assert onnx is not None


def test_torch_module_adapter_shares_the_batch_memory() -> None:
    torch = pytest.importorskip("torch", reason="the torch extra")
    seen: list[Any] = []

    class Mean(torch.nn.Module):  # type: ignore[misc,name-defined]
        def forward(self, x: Any) -> Any:
            seen.append(x)
            return x.mean(dim=(1, 2))

    store, keys = _filled_store()
    b = _batch(store, keys)
    out = adapt(Mean())(b)
    np.testing.assert_allclose(out, b.values.mean(axis=(1, 2)))
    assert np.shares_memory(seen[0].numpy(), b.values)  # torch.from_numpy: no copy
