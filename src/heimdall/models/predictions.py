"""Predictions: one record per scored key, and the newest of each kept in process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Any, overload

import msgspec
import numpy as np

from heimdall.errors import KeyNotFoundError


class Prediction(msgspec.Struct, frozen=True):
    """What a model said about one key's window.

    ``score`` is a float (one output per key) or a list of floats (a row per key).
    ``event_time_ns`` is the newest event time in the window scored; ``message_id`` the id of
    the message whose event made the key due (None if unknown); ``latency_ms`` runs from that
    message's publish time to the prediction.
    """

    model: str
    version: str
    key: str | int
    score: float | list[float]
    event_time_ns: int
    message_id: str | None
    latency_ms: float
    predicted_at_ns: int


_encode = msgspec.json.Encoder().encode


def to_json(p: Prediction) -> bytes:
    """The prediction as a JSON object (what ``PulsarSink`` publishes)."""
    return _encode(p)


# What Predictions keeps per key: (score, event_time_ns, raw message id, latency_ms,
# predicted_at_ns, version, which id_text): made by zip in C, a Prediction only when one is
# read. Every item is a number, str, bytes or None (the id_text function is named by its
# index), so the garbage collector untracks a row the first time it sees it: rows of
# thousands of keys never make its collections longer.
_Row = tuple[Any, int, Any, float, int, str, int]


class PredictionBatch(Sequence[Prediction]):
    """One scored batch's predictions, held as columns; each ``Prediction`` is built when it
    is read (indexing or iterating), so a batch nobody reads one by one costs no object per
    key. ``keys``, ``scores`` (an (n,) or (n, K) float64 array) and ``latency_ms`` ((n,)) are
    there to read whole."""

    __slots__ = ("_ids", "_lat", "_scores", "event_time_ns", "id_text", "keys", "latency_ms",
                 "model", "predicted_at_ns", "scores", "version")

    def __init__(self, model: str, version: str, keys: list[Any], scores: np.ndarray,
                 event_time_ns: list[int], message_ids: Sequence[Any],
                 latency_ms: np.ndarray, predicted_at_ns: int,
                 id_text: Callable[[Any], str | None]) -> None:
        self.model = model
        self.version = version
        self.keys = keys
        self.scores = scores
        self.event_time_ns = event_time_ns
        self.latency_ms = latency_ms
        self.predicted_at_ns = predicted_at_ns
        self.id_text = id_text
        self._ids = message_ids
        self._scores: list[Any] = scores.tolist()
        self._lat: list[float] = latency_ms.tolist()

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, i: int) -> Prediction: ...

    @overload
    def __getitem__(self, i: slice) -> list[Prediction]: ...

    def __getitem__(self, i: int | slice) -> Prediction | list[Prediction]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Prediction(self.model, self.version, self.keys[i], self._scores[i],
                          self.event_time_ns[i], self.id_text(self._ids[i]), self._lat[i],
                          self.predicted_at_ns)

    def __iter__(self) -> Iterator[Prediction]:
        for i in range(len(self.keys)):
            yield self[i]

    def rows(self, id_text_at: int) -> Iterator[_Row]:
        """What ``Predictions`` keeps per key, in key order (made in C); ``id_text_at``: the
        index under which ``Predictions`` holds this batch's ``id_text``."""
        return zip(self._scores, self.event_time_ns, self._ids, self._lat,
                   repeat(self.predicted_at_ns), repeat(self.version), repeat(id_text_at))

    def __repr__(self) -> str:
        return f"<PredictionBatch {self.model!r} v{self.version} of {len(self)} keys>"


def _build(model: str, key: Any, row: _Row, id_texts: list[Callable[[Any], Any]]
           ) -> Prediction:
    score, ts, mid, lat, at, version, id_text_at = row
    return Prediction(model, version, key, score, ts, id_texts[id_text_at](mid), lat, at)


class Predictions:
    """The newest prediction of each (model, key), in process. Thread-safe.

    Per model it holds the newest prediction of at least the ``max_keys`` keys most recently
    predicted, and of at most twice as many: keys are recorded in a young generation; when it
    reaches ``max_keys`` keys it becomes the old one and the previous old one is dropped (one
    C-level dict update per batch instead of a recency update per key). ``listeners`` are
    called with (model, predictions) after each ``record``, on the runner's thread (the gRPC
    server's Subscribe uses this).
    """

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.max_keys = max_keys
        # model -> (young, old): key -> _Row
        self._by_model: dict[str, tuple[dict[Any, _Row], dict[Any, _Row]]] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str, Sequence[Prediction]], None]] = []
        # the rows' id_text functions, named in a row by their index here
        self._id_texts: list[Callable[[Any], Any]] = [_same]

    def latest(self, model: str, key: str | int) -> Prediction:
        """The newest prediction of ``model`` for ``key``.

        Raises ``KeyNotFoundError`` naming the model and key if there is none yet.
        """
        with self._lock:
            gens = self._by_model.get(model)
            row = None if gens is None else gens[0].get(key) or gens[1].get(key)
        if row is None:
            known = sorted(self._by_model)
            raise KeyNotFoundError(
                f"no prediction of model {model!r} for key {key!r}"
                + ("" if model in self._by_model else f"; models with predictions: {known}")
            )
        return _build(model, key, row, self._id_texts)

    def record(self, model: str, predictions: Sequence[Prediction]) -> None:
        """Keep the newest of each key (the runner calls this with a ``PredictionBatch``)."""
        with self._lock:
            if isinstance(predictions, PredictionBatch):
                id_text = predictions.id_text
                if id_text not in self._id_texts:
                    self._id_texts.append(id_text)
                keys = predictions.keys
                rows = predictions.rows(self._id_texts.index(id_text))
            else:
                keys = [p.key for p in predictions]
                rows = ((p.score, p.event_time_ns, p.message_id, p.latency_ms,
                         p.predicted_at_ns, p.version, 0) for p in predictions)
            gens = self._by_model.get(model)
            if gens is None:
                gens = self._by_model[model] = ({}, {})
            young = gens[0]
            young.update(zip(keys, rows, strict=True))
            if len(young) >= self.max_keys:
                self._by_model[model] = ({}, young)
        for fn in tuple(self.listeners):
            fn(model, predictions)

    def snapshot(self, model: str) -> dict[str | int, Prediction]:
        """The newest prediction of every key of ``model`` held (empty if none), built now."""
        with self._lock:
            young, old = self._by_model.get(model, ({}, {}))
            rows = {**old, **young}
            id_texts = list(self._id_texts)
        return {key: _build(model, key, row, id_texts) for key, row in rows.items()}

    def models(self) -> list[str]:
        """Models that have predicted at least once."""
        with self._lock:
            return sorted(self._by_model)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(young) + sum(1 for k in old if k not in young)
                       for young, old in self._by_model.values())


def _same(mid: Any) -> Any:
    """A message id already in text form."""
    return mid
