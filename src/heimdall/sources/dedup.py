"""Recognising messages already applied, by message id, in bounded memory.

Pulsar redelivers what a consumer had not acknowledged when it failed, and the embedded broker
sometimes dispatches a message twice. ``AppliedIds`` remembers the ids of the last
``capacity`` .. ``2 * capacity`` messages applied to a stream (two generations of sets: when
the newer fills, the older is dropped), so a redelivery within that horizon is recognised.
The horizon must exceed what can be in flight unacknowledged: workers x receiver queue.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


class AppliedIds:
    """Ids of recently applied messages. Not thread-safe: the stream's ingest lock guards it.

    >>> seen = AppliedIds(capacity=1000)
    >>> seen.duplicates([b"a", b"b"])
    []
    >>> seen.add([b"a", b"b"])
    >>> seen.duplicates([b"b", b"c", b"c"])
    [0, 2]
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._new: set[Hashable] = set()
        self._old: set[Hashable] = set()

    def duplicates(self, ids: Sequence[Hashable]) -> list[int]:
        """Indices in ``ids`` already applied, or repeating an earlier entry of ``ids``."""
        batch = set(ids)
        if len(batch) == len(ids) and batch.isdisjoint(self._new) and batch.isdisjoint(self._old):
            return []
        out = []
        here: set[Hashable] = set()
        for i, mid in enumerate(ids):
            if mid in here or mid in self._new or mid in self._old:
                out.append(i)
            here.add(mid)
        return out

    def add(self, ids: Sequence[Hashable]) -> None:
        """Remember ``ids`` as applied."""
        self._new.update(ids)
        if len(self._new) >= self.capacity:
            self._old, self._new = self._new, set()

    def __len__(self) -> int:
        return len(self._new) + len(self._old)
