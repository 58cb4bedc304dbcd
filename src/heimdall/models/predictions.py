"""Predictions: one record per scored key, and the newest of each kept in process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import compress, count, repeat
from operator import is_
from typing import Any, overload

import msgspec
import numpy as np

from heimdall.errors import KeyNotFoundError, shown


class Prediction(msgspec.Struct, frozen=True):
    """What a model said about one key's window.

    ``score`` is a float (one output per key) or a list of floats (a row per key).
    ``event_time_ns`` is the newest event time in the window scored, ``window_rows`` its
    rows and ``last_event_time_ns`` its last row's time (the newest arrival, in a count
    window): with the key, what finds the window again offline (``hd.training_windows`` at
    ``event_time_ns``, ``last_time`` the last row's; docs/offline.md). ``message_id`` is the
    id of the message whose event made the key due (None if unknown); ``latency_ms`` runs
    from that message's publish time to the prediction.
    """

    model: str
    version: str
    key: str | int
    score: float | list[float]
    event_time_ns: int
    message_id: str | None
    latency_ms: float
    predicted_at_ns: int
    window_rows: int = 0
    last_event_time_ns: int = 0


_encode = msgspec.json.Encoder().encode


def to_json(p: Prediction) -> bytes:
    """The prediction as a JSON object (what ``PulsarSink`` publishes)."""
    return _encode(p)


class PredictionBatch(Sequence[Prediction]):
    """One scored batch's predictions, held as columns; each ``Prediction`` is built when it
    is read (indexing or iterating), so a batch nobody reads one by one costs no object per
    key. ``keys``, ``scores`` (an (n,) or (n, K) float64 array) and ``latency_ms`` ((n,)) are
    there to read whole."""

    __slots__ = ("_lat", "_scores", "event_time_ns", "id_text", "keys", "last_ts", "latency_ms",
                 "message_ids", "model", "predicted_at_ns", "scores", "version", "window_rows")

    def __init__(self, model: str, version: str, keys: list[Any], scores: np.ndarray,
                 event_time_ns: list[int], message_ids: Sequence[Any],
                 latency_ms: np.ndarray, predicted_at_ns: int,
                 id_text: Callable[[Any], str | None],
                 window_rows: Sequence[int] | None = None,
                 last_ts: Sequence[int] | None = None) -> None:
        self.model = model
        self.version = version
        self.keys = keys
        self.scores = scores
        self.event_time_ns = event_time_ns
        self.message_ids = message_ids  # as the tracker holds them: ``id_text`` makes text
        self.latency_ms = latency_ms
        self.predicted_at_ns = predicted_at_ns
        self.id_text = id_text
        self.window_rows = window_rows if window_rows is not None else [0] * len(keys)
        self.last_ts = last_ts if last_ts is not None else [0] * len(keys)
        self._scores: list[Any] | None = None  # Python numbers, made on the first read
        self._lat: list[float] = []

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, i: int) -> Prediction: ...

    @overload
    def __getitem__(self, i: slice) -> list[Prediction]: ...

    def __getitem__(self, i: int | slice) -> Prediction | list[Prediction]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self._scores is None:
            self._scores, self._lat = self.scores.tolist(), self.latency_ms.tolist()
        return Prediction(self.model, self.version, self.keys[i], self._scores[i],
                          self.event_time_ns[i], self.id_text(self.message_ids[i]),
                          self._lat[i], self.predicted_at_ns, self.window_rows[i],
                          self.last_ts[i])

    def __iter__(self) -> Iterator[Prediction]:
        for i in range(len(self.keys)):
            yield self[i]

    def __repr__(self) -> str:
        return f"<PredictionBatch {self.model!r} v{self.version} of {len(self)} keys>"


class _Generation:
    """The newest predictions of up to ~``max_keys`` keys of one model, in columns: a row per
    key (``index``), numpy arrays for the numbers, an object array for the message ids. A
    batch is recorded with one dict lookup per key and a few fancy-index assignments, and
    allocates no Python object per key but a new key's dict entry."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}
        self.keys: list[Any] = []
        self.cap = 0
        self.scores = np.empty((0, 1))  # (cap, K): the widest row recorded so far
        self.width = np.empty(0, np.int32)  # a row's score count; -1: one float, not a list
        self.ts = np.empty(0, np.int64)
        self.lat = np.empty(0, np.float64)
        self.at = np.empty(0, np.int64)
        self.rows = np.empty(0, np.int64)  # the window's rows
        self.last = np.empty(0, np.int64)  # the window's last row's time
        self.ids = np.empty(0, object)
        self.desc = np.empty(0, np.int32)  # which (version, id_text) of ``Predictions``

    def rows_of(self, keys: Sequence[Any]) -> np.ndarray:
        """Each key's row, new keys given the next rows (a key twice in ``keys``: one row)."""
        index = self.index
        rows = list(map(index.get, keys))
        if None in rows:  # new keys: the next rows, in order (C loops, no Python per key)
            new = dict.fromkeys(compress(keys, map(is_, rows, repeat(None))))
            index.update(zip(new, count(len(self.keys))))
            self.keys.extend(new)
            self._reserve(len(self.keys))
            rows = list(map(index.__getitem__, keys))
        return np.array(rows, np.intp)

    def _reserve(self, n: int) -> None:
        if n <= self.cap:
            return
        cap = max(64, n, 2 * self.cap)
        k = self.scores.shape[1]
        for name in ("scores", "width", "ts", "lat", "at", "rows", "last", "ids", "desc"):
            old = getattr(self, name)
            new = np.zeros((cap, k) if name == "scores" else cap, old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)
        self.cap = cap

    def put_scores(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """(n,) scores (one float a key) or (n, K) (a list of K a key)."""
        if scores.ndim == 1:
            self.scores[rows, 0] = scores
            self.width[rows] = -1
            return
        k = scores.shape[1]
        if k > self.scores.shape[1]:
            wider = np.zeros((self.cap, k))
            wider[:, :self.scores.shape[1]] = self.scores
            self.scores = wider
        self.scores[rows, :k] = scores
        self.width[rows] = k

    def score(self, row: int) -> float | list[float]:
        w = int(self.width[row])
        return float(self.scores[row, 0]) if w < 0 else self.scores[row, :w].tolist()


class Predictions:
    """The newest prediction of each (model, key), in process. Thread-safe.

    Per model it holds the newest prediction of at least the ``max_keys`` keys most recently
    predicted, and of at most twice as many: keys are recorded in a young generation; when it
    reaches ``max_keys`` keys it becomes the old one and the previous old one is dropped (no
    recency update per key). A generation keeps its predictions in columns
    (``_Generation``); a ``Prediction`` is built when one is read. ``listeners`` are called
    with (model, predictions) after each ``record``, on the runner's thread (the gRPC
    server's Subscribe uses this).
    """

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.max_keys = max_keys
        # model -> (young, old)
        self._by_model: dict[str, tuple[_Generation, _Generation]] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str, Sequence[Prediction]], None]] = []
        # what a batch's rows share: (version, id_text), named in a row by its index here
        self._descs: list[tuple[str, Callable[[Any], Any]]] = []

    def latest(self, model: str, key: str | int) -> Prediction:
        """The newest prediction of ``model`` for ``key``.

        Raises ``KeyNotFoundError`` naming the model and key if there is none yet.
        """
        with self._lock:
            for gen in self._by_model.get(model, ()):
                row = gen.index.get(key)
                if row is not None:
                    return self._build(model, key, gen, row)
        known = sorted(self._by_model)
        raise KeyNotFoundError(
            f"no prediction of model {shown(model)} for key {shown(key)}"
            + ("" if model in self._by_model else f"; models with predictions: {known}")
        )

    def _build(self, model: str, key: Any, gen: _Generation, row: int) -> Prediction:
        version, id_text = self._descs[gen.desc[row]]
        return Prediction(model, version, key, gen.score(row), int(gen.ts[row]),
                          id_text(gen.ids[row]), float(gen.lat[row]), int(gen.at[row]),
                          int(gen.rows[row]), int(gen.last[row]))

    def record(self, model: str, predictions: Sequence[Prediction]) -> None:
        """Keep the newest of each key (the runner calls this with a ``PredictionBatch``)."""
        batches = ([predictions] if isinstance(predictions, PredictionBatch)
                   else _as_batches(model, predictions))
        with self._lock:
            for batch in batches:
                if len(batch):
                    self._record(model, batch)
        for fn in tuple(self.listeners):
            fn(model, predictions)

    def _record(self, model: str, batch: PredictionBatch) -> None:
        desc = (batch.version, batch.id_text)
        if desc not in self._descs:
            self._descs.append(desc)
        gens = self._by_model.get(model)
        if gens is None:
            gens = self._by_model[model] = (_Generation(), _Generation())
        young = gens[0]
        rows = young.rows_of(batch.keys)
        young.put_scores(rows, batch.scores)
        young.ts[rows] = batch.event_time_ns
        young.lat[rows] = batch.latency_ms
        young.at[rows] = batch.predicted_at_ns
        young.rows[rows] = batch.window_rows
        young.last[rows] = batch.last_ts
        young.ids[rows] = np.fromiter(batch.message_ids, object, len(rows))
        young.desc[rows] = self._descs.index(desc)
        if len(young.keys) >= self.max_keys:
            self._by_model[model] = (_Generation(), young)

    def snapshot(self, model: str) -> dict[str | int, Prediction]:
        """The newest prediction of every key of ``model`` held (empty if none), built now."""
        out: dict[str | int, Prediction] = {}
        with self._lock:
            for gen in reversed(self._by_model.get(model, ())):  # old first: young wins
                for key, row in gen.index.items():
                    out[key] = self._build(model, key, gen, row)
        return out

    def models(self) -> list[str]:
        """Models that have predicted at least once."""
        with self._lock:
            return sorted(self._by_model)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(young.index) + sum(1 for k in old.index if k not in young.index)
                       for young, old in self._by_model.values())


def _as_batches(model: str, predictions: Sequence[Prediction]) -> list[PredictionBatch]:
    """Predictions given one by one (their ids already text), as batches of one version,
    time and score shape each; a key given twice: its last."""
    groups: dict[tuple[str, int, int], list[Prediction]] = {}
    for p in {p.key: p for p in predictions}.values():
        width = len(p.score) if isinstance(p.score, list) else -1
        groups.setdefault((p.version, p.predicted_at_ns, width), []).append(p)
    return [PredictionBatch(model, version, [p.key for p in ps],
                            np.array([p.score for p in ps], np.float64),
                            [p.event_time_ns for p in ps], [p.message_id for p in ps],
                            np.array([p.latency_ms for p in ps], np.float64), at, _same,
                            [p.window_rows for p in ps], [p.last_event_time_ns for p in ps])
            for (version, at, _), ps in groups.items()]


def _same(mid: Any) -> Any:
    """A message id already in text form."""
    return mid
