"""Which keys are due for scoring: change tracking between the ingest threads and a runner.

Ingest threads call ``notify`` once per applied batch; the model's runner thread calls
``take``. Due keys wait in one insertion-ordered dict, so the oldest trigger is served first
and a key is in it at most once: when a key triggers again before it was scored, the two
scorings become one (the runner reads the newest window when it scores) and ``coalesced``
counts the one skipped. Memory is bounded by the number of keys, however slow the model.

Triggers: ``every = N`` makes a key due after each N new events; ``interval_s`` makes every
key that changed since the last tick due at the next tick (``tick``, called by the runner).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from itertools import islice, repeat
from typing import Any

Key = str | int


class ChangeTracker:
    """Due keys of one model. Thread-safe.

    >>> t = ChangeTracker(every=2)
    >>> t.notify(["a", "b", "a"], [b"1", b"2", b"3"], [1.0, 2.0, 3.0])
    >>> t.take(10)
    ['a']
    >>> t.trigger_of("a")
    (b'3', 3.0)
    """

    def __init__(self, every: int | None = None, interval_s: float | None = None,
                 max_keys: int = 1_000_000) -> None:
        self.every = every
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.cond = threading.Condition()
        self._due: dict[Key, None] = {}
        self._changed: dict[Key, None] = {}
        self._counts: dict[Key, int] = {}
        # the newest trigger of each key: its message id and send time (ms), in two dicts
        # so that notify allocates no object per row (a tuple each would be garbage-collector
        # work at 20,000 events/s)
        self._trigger_id: dict[Key, Any] = {}
        self._trigger_sent: dict[Key, float] = {}
        self.triggers = 0
        self.coalesced = 0

    def notify(self, keys: Sequence[Key], ids: Sequence[Any],
               sent_ms: Sequence[float]) -> None:
        """Rows were applied: ``keys``, the id of each row's message and when it was sent
        (ms since the epoch). Costs O(rows) in C, plus O(distinct keys) for ``every > 1``."""
        if not keys:
            return
        with self.cond:
            self._trigger_id.update(zip(keys, ids, strict=True))
            self._trigger_sent.update(zip(keys, sent_ms, strict=True))
            if len(self._trigger_id) > 2 * self.max_keys:
                self._shrink()
            if self.interval_s is not None:
                self._changed.update(dict.fromkeys(keys))
                return
            due = self._due
            if self.every == 1:
                before = len(due)
                due.update(dict.fromkeys(keys))
                added = len(due) - before
                self.triggers += len(keys)
                self.coalesced += len(keys) - added
            else:
                self._count(Counter(keys))
            if due:
                self.cond.notify()

    def _count(self, batch: Counter[Key]) -> None:
        every = self.every or 1
        counts, due = self._counts, self._due
        for k, n in batch.items():
            total = counts.get(k, 0) + n
            fired, counts[k] = divmod(total, every)
            if fired:
                self.triggers += fired
                if k in due:
                    self.coalesced += fired
                else:
                    due[k] = None
                    self.coalesced += fired - 1

    def _shrink(self) -> None:
        """Keys churn past the store's capacity: drop the older half of what is held for
        them (a key dropped here and seen again has no trigger id for one scoring)."""
        for name in ("_trigger_id", "_trigger_sent", "_counts"):
            d: dict[Key, Any] = getattr(self, name)
            setattr(self, name, dict(list(d.items())[len(d) // 2:]))

    def tick(self) -> None:
        """``interval_s``: the keys changed since the last tick become due."""
        with self.cond:
            changed, self._changed = self._changed, {}
            before = len(self._due)
            self._due.update(changed)
            added = len(self._due) - before
            self.triggers += len(changed)
            self.coalesced += len(changed) - added

    def take(self, max_batch: int) -> list[Key]:
        """Up to ``max_batch`` due keys, oldest trigger first; they are no longer due."""
        with self.cond:
            due = self._due
            if len(due) <= max_batch:
                out = list(due)
                due.clear()
                return out
            out = list(islice(due, max_batch))
            for k in out:
                del due[k]
            return out

    def wait(self, timeout_s: float) -> bool:
        """Block until a key is due or ``timeout_s`` passes; True if one is due."""
        with self.cond:
            if not self._due:
                self.cond.wait(timeout_s)
            return bool(self._due)

    def wake(self) -> None:
        """Wake a waiting runner (to stop it)."""
        with self.cond:
            self.cond.notify_all()

    def trigger_of(self, key: Key) -> tuple[Any, float]:
        """The newest message id of ``key`` and when it was sent (ms), as last notified."""
        ids, sent = self.triggers_of([key])
        return ids[0], sent[0]

    def triggers_of(self, keys: Sequence[Key]) -> tuple[list[Any], list[float]]:
        """``trigger_of`` for many keys under one lock: their ids, and their send times (a
        key with none known: None, sent now)."""
        now = time.time() * 1e3
        with self.cond:
            return (list(map(self._trigger_id.get, keys)),
                    list(map(self._trigger_sent.get, keys, repeat(now))))

    def forget(self, keys: Sequence[Key]) -> None:
        """Drop what is held for keys the store no longer has."""
        with self.cond:
            for k in keys:
                self._trigger_id.pop(k, None)
                self._trigger_sent.pop(k, None)
                self._counts.pop(k, None)

    @property
    def pending(self) -> int:
        """Keys due now."""
        return len(self._due)
