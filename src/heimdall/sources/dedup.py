"""Recognising messages already applied, by message id, in bounded memory.

Pulsar redelivers what a consumer had not acknowledged when it failed, and the embedded broker
sometimes dispatches a message twice. ``AppliedIds`` remembers the ids of the last
``capacity`` .. ``2 * capacity`` messages applied to a stream (two generations of sets: when
the newer fills, the older is dropped), so a redelivery within that horizon is recognised.
The horizon must exceed what can be in flight unacknowledged: workers x receiver queue.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import compress
from operator import ne, or_


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
        """Indices in ``ids`` already applied, or repeating an earlier entry of ``ids``. C
        loops only: a batch that brings a few duplicates costs no Python step per id."""
        batch = set(ids)
        new, old = self._new, self._old
        if len(batch) == len(ids) and batch.isdisjoint(new) and batch.isdisjoint(old):
            return []
        n = len(ids)
        held = map(or_, map(new.__contains__, ids), map(old.__contains__, ids))
        if len(batch) < n:  # an id repeated within the batch: its later entries
            first = dict(zip(reversed(ids), range(n - 1, -1, -1), strict=True))
            held = map(or_, held, map(ne, map(first.__getitem__, ids), range(n)))
        return list(compress(range(n), held))

    def add(self, ids: Sequence[Hashable]) -> None:
        """Remember ``ids`` as applied."""
        self._new.update(ids)
        if len(self._new) >= self.capacity:
            self._old, self._new = self._new, set()

    def __len__(self) -> int:
        return len(self._new) + len(self._old)
