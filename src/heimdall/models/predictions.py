"""Predictions: one record per scored key, and the newest of each kept in process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import msgspec

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


class Predictions:
    """The newest prediction of each (model, key), in process. Thread-safe.

    At most ``max_keys`` keys per model are held; past that the least recently predicted key
    is dropped. ``listeners`` are called with (model, predictions) after each ``record``, on
    the runner's thread (the gRPC server's Subscribe uses this).
    """

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.max_keys = max_keys
        self._by_model: dict[str, dict[str | int, Prediction]] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str, Sequence[Prediction]], None]] = []

    def latest(self, model: str, key: str | int) -> Prediction:
        """The newest prediction of ``model`` for ``key``.

        Raises ``KeyNotFoundError`` naming the model and key if there is none yet.
        """
        with self._lock:
            by_key = self._by_model.get(model)
            p = None if by_key is None else by_key.get(key)
        if p is None:
            known = sorted(self._by_model)
            raise KeyNotFoundError(
                f"no prediction of model {model!r} for key {key!r}"
                + ("" if model in self._by_model else f"; models with predictions: {known}")
            )
        return p

    def record(self, model: str, predictions: Sequence[Prediction]) -> None:
        """Keep the newest of each key (the runner calls this)."""
        with self._lock:
            by_key = self._by_model.setdefault(model, {})
            for p in predictions:
                by_key.pop(p.key, None)  # re-insert: the dict's order is recency
                by_key[p.key] = p
            extra = len(by_key) - self.max_keys
            if extra > 0:
                for k in list(by_key)[:extra]:
                    del by_key[k]
        for fn in tuple(self.listeners):
            fn(model, predictions)

    def snapshot(self, model: str) -> dict[str | int, Prediction]:
        """A copy of the newest prediction of every key of ``model`` (empty if none)."""
        with self._lock:
            return dict(self._by_model.get(model, {}))

    def models(self) -> list[str]:
        """Models that have predicted at least once."""
        with self._lock:
            return sorted(self._by_model)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(d) for d in self._by_model.values())
