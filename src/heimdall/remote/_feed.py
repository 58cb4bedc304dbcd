"""Fan-out of changes to Subscribe calls: which keys changed, per subscriber, coalesced.

A subscriber holds an ordered set of keys changed since it last sent (and, for predictions,
the newest prediction of each). The server's Subscribe loop takes them and sends each key's
newest state, so a subscriber that falls behind skips intermediate states but never sends an
older state after a newer one. Nothing is registered on the ingest path while no one
subscribes to a stream.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from heimdall.models.predictions import Prediction, PredictionBatch, Predictions
from heimdall.sources._ingest import Listener


class Subscription:
    """One Subscribe call's pending changes. ``offer`` from writer threads, ``take`` from the
    call's thread."""

    def __init__(self, kind: str, name: str, keys: set[Hashable] | None) -> None:
        self.kind = kind
        self.name = name
        self.keys = keys
        self._pending: dict[Hashable, Prediction | None] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def offer(self, keys: Sequence[Hashable], items: Sequence[Prediction] | None = None) -> None:
        wanted = self.keys
        with self._lock:
            pending = self._pending
            if items is None:
                for key in keys:
                    if wanted is None or key in wanted:
                        pending.pop(key, None)  # re-insert: the order is the order of change
                        pending[key] = None
            else:  # items may build each Prediction when read: read only those wanted
                for i, key in enumerate(keys):
                    if wanted is None or key in wanted:
                        pending.pop(key, None)
                        pending[key] = items[i]
            if pending:
                self._ready.set()

    def take(self, timeout_s: float) -> list[tuple[Hashable, Prediction | None]]:
        """Wait up to ``timeout_s`` for changes; return them (oldest change first)."""
        if not self._ready.wait(timeout_s):
            return []
        with self._lock:
            out = list(self._pending.items())
            self._pending.clear()
            self._ready.clear()
        return out

    def wake(self) -> None:
        self._ready.set()


class Feed:
    """Subscriptions to window changes (per stream) and predictions (per model)."""

    def __init__(self, listeners: Mapping[str, list[Listener]],
                 predictions: Predictions | None) -> None:
        self._listeners = listeners
        self._predictions = predictions
        self._subs: dict[tuple[str, str], list[Subscription]] = {}
        self._hooks: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def subscribe(self, kind: str, name: str, keys: set[Hashable] | None) -> Subscription:
        """kind "window" (name a stream) or "prediction" (name a model)."""
        sub = Subscription(kind, name, keys)
        with self._lock:
            subs = self._subs.setdefault((kind, name), [])
            subs.append(sub)
            if len(subs) == 1:
                self._hook(kind, name)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get((sub.kind, sub.name), [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._unhook(sub.kind, sub.name)

    def close(self) -> None:
        """Wake every subscriber (the server is stopping)."""
        with self._lock:
            for subs in self._subs.values():
                for sub in subs:
                    sub.wake()

    def _hook(self, kind: str, name: str) -> None:
        subs = self._subs[(kind, name)]
        if kind == "window":
            def on_rows(keys: list[Any], _ids: Any, _sent: Any) -> None:
                for sub in tuple(subs):
                    sub.offer(keys)

            self._listeners[name].append(on_rows)
            self._hooks[(kind, name)] = on_rows
        elif self._predictions is not None:
            def on_predictions(model: str, preds: Sequence[Prediction]) -> None:
                if model == name:
                    keys = preds.keys if isinstance(preds, PredictionBatch) else [
                        p.key for p in preds]
                    for sub in tuple(subs):
                        sub.offer(keys, preds)

            self._predictions.listeners.append(on_predictions)
            self._hooks[(kind, name)] = on_predictions

    def _unhook(self, kind: str, name: str) -> None:
        fn = self._hooks.pop((kind, name), None)
        if fn is None:
            return
        if kind == "window":
            self._listeners[name].remove(fn)
        elif self._predictions is not None:
            self._predictions.listeners.remove(fn)
