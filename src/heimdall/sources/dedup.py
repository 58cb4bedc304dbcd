"""Recognising messages already applied, by message id, in bounded memory.

Pulsar redelivers what a consumer had not acknowledged when it failed, and the embedded broker
sometimes dispatches a message twice. ``AppliedIds`` remembers the last ``capacity`` ..
``2 * capacity`` messages applied to a stream (two generations: when the newer has taken
``capacity`` messages, the older is dropped), so a redelivery within that horizon is
recognised. The horizon must exceed what can be in flight unacknowledged: workers x receiver
queue.

A message is remembered under a *fingerprint* (the source's choice; Heimdall's ingest takes the
hash of the payload, which a redelivery repeats byte for byte) and a *handle* from which its
id can be read (``id_of``; a Pulsar message, whose id costs ~1-2 us to read). Ids are read only
where fingerprints meet: a redelivery, or another message with the same payload. So in the
common case a message costs a hash and two probes of a table of the native core
(``heimdall._core.FpTable``, ``native/src/seen.rs``), not an id; and the answer is still by id:
two messages with equal payloads and different ids are both applied. A fingerprint held by
more than one message keeps the set of their ids.

Ids known without a fingerprint (restored from a checkpoint: ``add_ids``) are kept apart;
while any are held, every message's id is read and looked up among them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from itertools import compress
from operator import or_
from typing import Any

from heimdall._core import FpTable, candidates


def _same(handle: Any) -> Hashable:
    return handle  # type: ignore[no-any-return]


class AppliedIds:
    """Ids of recently applied messages. Not thread-safe: the stream's ingest lock guards it.

    Without fingerprints the handles are the ids (and their own fingerprints):

    >>> seen = AppliedIds(capacity=1000)
    >>> seen.duplicates([b"a", b"b"])
    []
    >>> seen.add([b"a", b"b"])
    >>> seen.duplicates([b"b", b"c", b"c"])
    [0, 2]
    """

    def __init__(self, capacity: int, id_of: Callable[[Any], Hashable] = _same) -> None:
        self.capacity = capacity
        self.id_of = id_of
        # fingerprint -> the handle of the one message applied with it, or the set of the
        # ids of all of them (the core's tables: ``FpTable``)
        self._new = FpTable(capacity)
        self._old = FpTable(capacity)
        self._taken = 0  # messages remembered in ``_new``
        self._exact_new: set[Hashable] = set()  # ids without a fingerprint (``add_ids``)
        self._exact_old: set[Hashable] = set()
        self._dying: deque[list[Any]] = deque()  # handles of dropped generations, let go slowly
        self._owed = 0  # handles of ``_dying`` to free at the next ``release``

    def check(self, handles: Sequence[Any],
              fingerprints: Sequence[Hashable] | None = None) -> tuple[list[int], bool]:
        """``duplicates``, and whether the batch was clean: no fingerprint held or repeated
        (then no id was read to compare fingerprints; ids restored without one, while held,
        are still looked up)."""
        fps = handles if fingerprints is None else fingerprints
        new, old = self._new, self._old
        exact = self._exact_new or self._exact_old
        # candidates: a fingerprint held, or repeating an earlier one of the batch (one call)
        at, firsts = candidates(new, old, fps)
        if not at:
            return (self._exact_hits(handles) if exact else []), True
        dups = set(self._exact_hits(handles)) if exact else set()
        id_of = self.id_of
        here: dict[Hashable, set[Hashable]] = {}  # ids of this batch, by fingerprint
        for i, j in zip(at, firsts, strict=True):
            f = fps[i]
            mid = id_of(handles[i])
            ids = here.get(f)
            if ids is None and j < i:  # its first entry was no candidate
                ids = here[f] = {id_of(handles[j])}
            if (i in dups or (ids is not None and mid in ids) or self._holds(new.get(f), mid)
                    or self._holds(old.get(f), mid)):
                dups.add(i)
            here.setdefault(f, set()).add(mid)
        return sorted(dups), False

    def duplicates(self, handles: Sequence[Any],
                   fingerprints: Sequence[Hashable] | None = None) -> list[int]:
        """Indices in ``handles`` already applied, or repeating an earlier entry's id.
        A batch whose fingerprints are all new costs C loops only."""
        return self.check(handles, fingerprints)[0]

    def known(self, handles: Sequence[Any]) -> list[int]:
        """Indices in ``handles`` whose ids were added without a fingerprint (``add_ids``)."""
        return self._exact_hits(handles) if (self._exact_new or self._exact_old) else []

    def _exact_hits(self, handles: Sequence[Any]) -> list[int]:
        ids = list(map(self.id_of, handles))
        hit = map(or_, map(self._exact_new.__contains__, ids),
                  map(self._exact_old.__contains__, ids))
        return list(compress(range(len(ids)), hit))

    def _holds(self, entry: Any, mid: Hashable) -> bool:
        if entry is None:
            return False
        if type(entry) is set:
            return mid in entry
        return bool(self.id_of(entry) == mid)

    def add(self, handles: Sequence[Any], fingerprints: Sequence[Hashable] | None = None
            ) -> None:
        """Remember messages as applied."""
        fps = handles if fingerprints is None else fingerprints
        new = self._new
        clash = new.add(fps, handles)  # one call; what it did not add shares a fingerprint
        if clash:
            id_of = self.id_of
            for i in clash:
                f, h = fps[i], handles[i]
                entry = new.get(f)
                if type(entry) is set:
                    entry.add(id_of(h))
                elif (a := id_of(entry)) != (b := id_of(h)):  # equal: a redelivery, kept once
                    new.put(f, {a, b})
        self._count(len(fps))

    def add_ids(self, ids: Sequence[Hashable]) -> None:
        """Remember ids known without a fingerprint (from a checkpoint)."""
        self._exact_new.update(ids)
        self._count(len(ids))

    def exact_ids(self) -> list[Hashable]:
        """The ids known without a fingerprint (``add_ids``) still held: a checkpoint carries
        them on for as long as a redelivery of one would be recognised here."""
        return [*self._exact_new, *self._exact_old]

    def _count(self, n: int) -> None:
        self._taken += n
        if self._taken >= self.capacity:
            # the generation dropped is let go by ``release``, not here: freeing ``capacity``
            # client messages in one go would stall ingest (~50 ms). Its table is the next one
            self._dying.append(self._old.reset())
            self._old, self._new = self._new, self._old
            self._exact_old, self._exact_new = self._exact_new, set()
            self._taken = 0
        if self._dying:
            self._owed += 2 * n

    def release(self) -> None:
        """Free part of the generations dropped: two entries per message added since the last
        call, so they are gone before the next is dropped. The caller chooses when (ingest:
        after a batch is acknowledged, off its latency)."""
        n, self._owed = self._owed, 0
        while n > 0 and self._dying:
            d = self._dying[0]
            if len(d) <= n:
                n -= len(d)
                self._dying.popleft()
            else:  # the last n handles, freed in a C loop
                del d[-n:]
                n = 0

    def __len__(self) -> int:
        """Fingerprints and ids held (a fingerprint shared by several messages counts once)."""
        return len(self._new) + len(self._old) + len(self._exact_new) + len(self._exact_old)
