"""Keys moving between nodes: a node takes over the ranges the broker gives it, and lets go of
the ranges it moves away, with nothing lost and nothing doubled.

The durable state is the broker's own retained history (docs/cluster.md says why): when a
message arrives for a key whose hash lies outside the ranges this node holds, the node asks
the broker for its ranges again and, for each range it gained, replays the topic from the
earliest message the broker retains through the same decoder and window code as live ingest,
keeping the rows of the gained keys only, and remembering their message ids. So the gained
keys' windows are what they would have been had this node owned them all along; the broker's
redeliveries of the old owner's unacknowledged messages, and the messages of the batch that
triggered it, are then recognised by id and dropped. The old owner's dead letters are read
back too, so a poison message it dead-lettered is not dead-lettered again.

Every ``cluster.refresh_s`` a node also reads its ranges unasked, and takes over what it
gained (a node that died with nothing left to redeliver sends no message to trigger it). A
node that loses ranges (another joined, or it asked for them back) drops those keys then,
and leaves out rows that arrive for a key it does not own (a message the broker dispatched
before the move): the new owner replays them. Until a gained range is replayed, a read of its
keys is refused (NotOwnerError, "taking over"), never answered with a partial window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from heimdall.cluster._hash import key_hash
from heimdall.cluster.node import ClusterNode
from heimdall.cluster.ranges import Range, covers, merge
from heimdall.decode import Decoded
from heimdall.sources.pulsar import message_keys_and_times

if TYPE_CHECKING:
    from heimdall.sources._ingest import StreamIngest
    from heimdall.sources.pulsar import PulsarSource

log = logging.getLogger("heimdall.cluster")


def subtract(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """The parts of ranges ``a`` outside ranges ``b``.

    >>> subtract([(0, 99)], [(10, 19), (50, 200)])
    [(0, 9), (20, 49)]
    """
    out: list[Range] = []
    for lo, hi in merge(a):
        start = lo
        for blo, bhi in merge(b):
            if bhi < start or blo > hi:
                continue
            if blo > start:
                out.append((start, blo - 1))
            start = max(start, bhi + 1)
            if start > hi:
                break
        if start <= hi:
            out.append((start, hi))
    return out


def _position(handle: object) -> tuple[int, int, int]:
    """A message's position in a (non-partitioned) topic: (ledger, entry, batch index). The
    handle is a client message (either binding's) or its id serialized."""
    from _pulsar import MessageId

    mid = MessageId.deserialize(handle) if isinstance(handle, bytes) else \
        handle.message_id()  # type: ignore[attr-defined]
    return (mid.ledger_id(), mid.entry_id(), mid.batch_index())


class Takeover:
    """One node's held ranges per stream, and the replay that extends them."""

    def __init__(self, node: ClusterNode, source: PulsarSource,
                 ingests: Sequence[StreamIngest]) -> None:
        self.node = node
        self.source = source
        self.ingests = {i.name: i for i in ingests}
        self.held: dict[str, list[Range]] = {name: [] for name in self.ingests}
        # per stream, keys rebuilt by a replay -> the topic position it read up to
        self.marks: dict[str, dict[Hashable, tuple[int, int, int]]] = {
            name: {} for name in self.ingests}
        self._hashes: dict[Hashable, int] = {}  # key -> its hash (``_hash``)
        self.replays = 0
        self.replayed_messages = 0
        self.dropped_keys = 0
        self.last_replay_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for ingest in ingests:
            ingest.gate = self._gate_for(ingest)

    # ---- the gate, on each batch (under the stream's ingest lock) ----------------------------

    def _gate_for(self, ingest: StreamIngest
                  ) -> Callable[[Decoded, Sequence[Hashable]], tuple[Decoded, list[int]]]:
        def gate(d: Decoded, ids: Sequence[Hashable]) -> tuple[Decoded, list[int]]:
            return self.gate(ingest, d, ids)

        return gate

    def gate(self, ingest: StreamIngest, d: Decoded,
             ids: Sequence[Hashable]) -> tuple[Decoded, list[int]]:
        """The rows to write, and message indices found to be duplicates by a replay."""
        if not len(d):
            return d, []
        stream = ingest.name
        store = ingest.store
        unknown = {k for k in set(d.keys) if (stream, k) not in store}
        hashes = {k: key_hash(k) for k in unknown}
        held = self.held[stream]
        late: set[int] = set()
        if any(not covers(held, h) for h in hashes.values()):
            owned = merge(self._fresh_owned(stream))
            gained = subtract(owned, held)
            if gained:
                self._replay(ingest, gained)
                # this batch's poison messages the old owner dead-lettered (read back above)
                late.update(ingest.applied.known(ids))
            self._let_go(ingest, subtract(held, owned))
            self.held[stream] = held = owned
        marks = self.marks[stream]
        if marks:  # keys rebuilt by a replay: their messages up to its end are in already
            for key, m in zip(d.keys, d.row_msg.tolist(), strict=True):
                mark = marks.get(key)
                if mark is None:
                    continue
                if _position(ids[m]) <= mark:
                    late.add(m)
                else:
                    del marks[key]  # past the replay: this key's messages are new from here
        if not late and all(covers(held, h) for h in hashes.values()):
            return d, []
        keep = np.array([(k not in hashes or covers(held, hashes[k])) and m not in late
                         for k, m in zip(d.keys, d.row_msg.tolist(), strict=True)])
        if keep.all():
            return d, sorted(late)
        return d.take(keep), sorted(late)

    def _hash(self, key: Hashable) -> int:
        """A held key's hash, computed once (the sweep asks for every key, every refresh)."""
        h = self._hashes.get(key)
        if h is None:
            h = self._hashes[key] = key_hash(key)  # type: ignore[arg-type]
        return h

    def _fresh_owned(self, stream: str) -> list[Range]:
        self.node.view(max_age_s=0.0)
        return self.node.owned(stream)

    def _replay(self, ingest: StreamIngest, gained: list[Range]) -> None:
        """The gained ranges' keys rebuilt from the topic's retained history, in order."""
        t0 = time.perf_counter()
        topic = ingest.config.topic
        log.info("node %s: taking over %d range(s) of stream %s (%d hashes): replaying %s",
                 self.node.name, len(gained), ingest.name,
                 sum(b - a + 1 for a, b in gained), topic)
        self.source.recall_dead_letters(ingest)  # their dead letters: not sent again
        decoder = ingest.decoder
        cfg = ingest.config
        n = 0
        mine_by_key: dict[Hashable, bool] = {}  # a key's hash is computed once
        replayed_keys: set[Hashable] = set()
        end: tuple[int, int, int] | None = None

        def is_mine(key: Hashable) -> bool:
            got = mine_by_key.get(key)
            if got is None:
                got = mine_by_key[key] = covers(gained, key_hash(key))  # type: ignore[arg-type]
            return got

        for batch in self.source.read_history(topic):
            # the broker routed each message by its key (docs/cluster.md): the other nodes'
            # messages are left before decoding; a message without a key is decoded and kept
            # by its key field
            msgs = [m for m in batch if not (pk := m.partition_key()) or is_mine(pk)]
            if not msgs:
                continue
            payloads = [m.data() for m in msgs]
            keys, times = message_keys_and_times(cfg, msgs, replay=True)
            d = decoder.decode(payloads, keys, times)
            if not len(d):
                continue
            mine = np.fromiter(map(is_mine, d.keys), dtype=bool, count=len(d))
            if not mine.any():
                continue
            d = d.take(mine)
            ingest.store.append_batch(ingest.name, d.keys, d.values, d.ts_ns)
            ingest.counters.rows += len(d)  # rows in the windows, replayed or live
            n += len(set(d.row_msg.tolist()))
            replayed_keys.update(d.keys)
            end = _position(batch[-1])
        # the replay's end: a message of these keys at or before it (a redelivery, the rest of
        # the batch that triggered this, the backlog) is in the windows already
        if end is not None:
            marks = self.marks[ingest.name]
            for key in replayed_keys:
                marks[key] = end
        self.replays += 1
        self.replayed_messages += n
        self.last_replay_s = time.perf_counter() - t0
        log.info("node %s: stream %s: %d message(s) replayed into the taken keys in %.2f s",
                 self.node.name, ingest.name, n, self.last_replay_s)

    # ---- letting go: a background refresh ---------------------------------------------------

    def refresh(self) -> None:
        """Follow the broker's ranges without waiting for a message: take over the ranges
        gained (a node died with nothing left to redeliver) and drop the keys of ranges lost."""
        for name, ingest in self.ingests.items():
            with ingest.lock:
                owned = merge(self._fresh_owned(name))
                held = self.held[name]
                self._let_go(ingest, subtract(held, owned))
                gained = subtract(owned, held)
                if gained:
                    self._replay(ingest, gained)
                self.held[name] = owned
                self._sweep(ingest, owned)

    def _sweep(self, ingest: StreamIngest, owned: list[Range]) -> None:
        """Drop any key held outside ``owned`` (``ingest.lock`` held), whatever put it there:
        every key on exactly one node, by the broker's ranges."""
        name = ingest.name
        keys = ingest.store.keys(name)
        if len(self._hashes) > 2 * len(keys) + 1024:  # keys evicted or expired meanwhile
            self._hashes.clear()
        stray = [k for k in keys if not covers(owned, self._hash(k))]
        if stray:
            self.dropped_keys += ingest.store.discard(name, stray)
            for k in stray:
                self.marks[name].pop(k, None)
                self._hashes.pop(k, None)
            log.info("node %s: stream %s: %d key(s) outside its ranges dropped",
                     self.node.name, name, len(stray))

    def _let_go(self, ingest: StreamIngest, lost: list[Range]) -> None:
        """Drop the keys of ``lost`` ranges (``ingest.lock`` held)."""
        if not lost:
            return
        name = ingest.name
        gone = [k for k in ingest.store.keys(name) if covers(lost, self._hash(k))]
        dropped = ingest.store.discard(name, gone)
        for k in gone:
            self.marks[name].pop(k, None)
        self.dropped_keys += dropped
        log.info("node %s: stream %s: %d range(s) moved away; %d key(s) dropped",
                 self.node.name, name, len(lost), dropped)

    def start(self) -> Takeover:
        def loop() -> None:
            while not self._stop.wait(self.node.config.refresh_s):
                try:
                    self.refresh()
                except Exception as exc:  # the admin API away for a moment: next time
                    log.warning("node %s: refreshing the ranges failed: %s", self.node.name,
                                exc)

        self._thread = threading.Thread(target=loop, daemon=True, name="heimdall-cluster")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
