"""Apply one batch of one stream's messages: drop redeliveries, decode, write the windows.

Broker-neutral: a source hands over payloads and message handles (ids, or objects the source
reads ids from: ``applied.id_of``) and gets back which messages must go to the dead-letter
topic, and why. A message is remembered under the hash of its payload, so its id is read only
when that hash was seen before (``dedup``). Workers of one stream share one ``StreamIngest``;
its lock makes "already applied?" and "apply, then remember" one step, so a message
redelivered to another worker while the first applies it is still recognised.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.config import StreamConfig
from heimdall.decode import Decoded, make_decoder
from heimdall.errors import HeimdallError
from heimdall.metrics import StreamCounters
from heimdall.sources.dedup import AppliedIds
from heimdall.window import WindowStore

# called after each batch with the applied rows' keys, their messages' ids and send times (ms)
Listener = Callable[[list[Any], list[Hashable], list[float]], None]


def notify_pushed(listeners: Sequence[Listener], keys: Sequence[Any]) -> None:
    """Tell ``listeners`` about rows that came without a message (no id; sent now)."""
    if listeners and keys:
        n = len(keys)
        sent = [time.time() * 1e3] * n
        for fn in tuple(listeners):  # tuple: a subscriber may (un)register meanwhile
            fn(list(keys), [None] * n, sent)


@dataclass
class Applied:
    """What became of a batch: ``bad`` (message index, reason), ``duplicates`` (indices),
    and when its rows were in the windows (``written_ms``, since the epoch): what a
    publish-to-window latency is read against."""

    bad: list[tuple[int, str]]
    duplicates: list[int]
    rows: int
    written_ms: float


class StreamIngest:
    """Decode-and-apply for one stream. Thread-safe; ``apply`` blocks other workers of the
    stream for the time of one batch (they would wait on the store's stream lock anyway)."""

    def __init__(self, config: StreamConfig, store: WindowStore, dedup_window: int,
                 max_message_bytes: int) -> None:
        self.config = config
        self.name = config.name
        self.store = store
        self.decoder = make_decoder(config.spec(), config.format, config.key_from,
                                    config.time_from or "arrival")
        self.max_message_bytes = max_message_bytes
        self.applied = AppliedIds(dedup_window)
        self.counters = StreamCounters()
        self.lock = threading.Lock()
        self.listeners: list[Listener] = []
        # with checkpoints on, applied batches wait here for the checkpoint that covers them:
        # (consumer, messages, their ids); the checkpointer swaps the list under ``lock``
        self.pending: list[tuple[Any, list[Any], list[Hashable]]] = []
        self.pending_messages = 0
        self.dead_letter_ids: set[str] = set()  # on the dead-letter topic before a restart
        self.defer_acks = False
        # a cluster node: after decoding, before writing, under ``lock``, the rows of keys
        # this node does not own are left out (and keys newly owned are taken over first);
        # returns the rows to write and the message indices now known as duplicates
        self.gate: Callable[[Decoded, Sequence[Hashable]], tuple[Decoded, list[int]]] | None \
            = None
        # after a backfill (``heimdall backfill``): rows with event times at or before it are
        # in the windows from history; they are left out (counted), their messages taken
        self.boundary_ns: int | None = None

    def apply(
        self,
        payloads: Sequence[bytes],
        ids: Sequence[Hashable],
        message_keys: Sequence[str] | None = None,
        times_ns: Sequence[int] | None = None,
        sent_ms: Sequence[float] | None = None,
        defer: tuple[Any, Sequence[Any]] | None = None,
    ) -> Applied:
        """Apply a batch. Never raises for bad input: bad messages come back with a reason.

        ``ids``: each message's handle, its id or what ``applied.id_of`` reads the id from;
        listeners are given the handles, ``pending`` the ids.

        ``defer`` = (ack handle, the batch's messages): with checkpoints on, the good ones
        join ``pending`` in the same locked step as their rows join the store, so a
        checkpoint that holds the rows also holds (and later acknowledges) the messages.

        ``sent_ms``: when each message was published (ms since the epoch), for the listeners'
        latency; the arrival time when not given.
        """
        t0 = time.perf_counter()
        c = self.counters
        sizes = list(map(len, payloads))
        fps = list(map(hash, payloads))
        limit = self.max_message_bytes
        with self.lock:
            dups = self.applied.duplicates(ids, fps)
            drop = set(dups)
            oversized = [] if max(sizes, default=0) <= limit else [
                (i, f"oversized: {n} bytes > max_message_bytes {limit}")
                for i, n in enumerate(sizes) if n > limit and i not in drop]
            drop.update(i for i, _ in oversized)
            if drop:
                keep = sorted(set(range(len(payloads))) - drop)
                decoded = self._decode_subset(payloads, keep, message_keys, times_ns)
            else:
                decoded = self.decoder.decode(payloads, message_keys, times_ns)
            bad = oversized + decoded.bad
            if self.gate is not None:
                decoded, late_dups = self.gate(decoded, ids)
                if late_dups:  # known now (a takeover read them back): applied, or dead letters
                    late = set(late_dups)
                    dups = sorted(late.union(dups))
                    bad = [b for b in bad if b[0] not in late]
            if self.boundary_ns is not None and len(decoded):
                after = decoded.ts_ns > self.boundary_ns
                if not after.all():
                    c.before_boundary += len(decoded) - int(after.sum())
                    decoded = decoded.take(after)
            refused = self._write(decoded)
            written_ms = time.time_ns() / 1e6  # readers see the rows from here on
            bad.extend(refused)
            if self.listeners and len(decoded):
                self._notify(decoded, ids, sent_ms, refused)
            # a bad message is remembered only once it is on the dead-letter topic
            # (``dead_lettered``): if that publish fails and the message comes back, it is
            # dead-lettered again rather than dropped
            bad_at = {i for i, _ in bad}
            if bad:
                good = [i not in bad_at for i in range(len(ids))]
                self.applied.add(list(itertools.compress(ids, good)),
                                 list(itertools.compress(fps, good)))
            else:
                self.applied.add(ids, fps)
            if defer is not None:
                handle, msgs = defer
                keep = [i for i in range(len(msgs)) if i not in bad_at]
                if keep:
                    # the ids a checkpoint records (a source whose ids are cheap to keep,
                    # as Pulsar's with checkpoints on, hands them over as the handles)
                    self.pending.append((handle, [msgs[i] for i in keep],
                                         list(map(self.applied.id_of,
                                                  map(ids.__getitem__, keep)))))
                    self.pending_messages += len(keep)
            c.messages += len(payloads) - len(dups)
            c.bytes += sum(sizes)
            c.rows += len(decoded)
            c.duplicates += len(dups)
            c.dead_letters += len(bad)
            c.batches += 1
            for _, reason in bad:
                c.count_reason(reason)
        c.apply_s.observe(time.perf_counter() - t0)
        return Applied(sorted(bad), dups, len(decoded), written_ms)

    def tidy(self) -> None:
        """Free what deduplication let go of (``AppliedIds.release``); call after a batch,
        outside its latency."""
        with self.lock:
            self.applied.release()

    def _notify(self, d: Decoded, ids: Sequence[Hashable], sent_ms: Sequence[float] | None,
                refused: list[tuple[int, str]]) -> None:
        keys, rows = d.keys, d.row_msg
        if refused:
            keep = ~np.isin(rows, [i for i, _ in refused])
            keys = [k for k, ok in zip(keys, keep.tolist(), strict=True) if ok]
            rows = rows[keep]
        if len(rows) == len(ids) and (rows == np.arange(len(ids))).all():
            row_ids, at = list(ids), None  # a row per message, in order: the common case
        else:
            at = rows.tolist()
            row_ids = [ids[i] for i in at]
        if sent_ms is None:
            sent = [time.time() * 1e3] * len(row_ids)
        elif at is None:
            sent = list(sent_ms)
        else:
            sent = [sent_ms[i] for i in at]
        for fn in tuple(self.listeners):  # tuple: a subscriber may (un)register meanwhile
            fn(keys, row_ids, sent)

    def push(self, keys: Sequence[Any], values: np.ndarray, ts_ns: np.ndarray | None) -> int:
        """Write rows that came without a broker (the gRPC Push call): the store, the counters
        and the listeners, as for a batch of messages. Raises SchemaError for rows that do
        not fit, writing none of them. Returns the rows written."""
        with self.lock:
            self.store.append_batch(self.name, keys, values, ts_ns)
            n = len(keys)
            self.counters.rows += n
            self.counters.pushed += n
            notify_pushed(self.listeners, keys)
        return n

    def dead_lettered(self, payloads: Sequence[bytes], ids: Sequence[Hashable]) -> None:
        """Remember messages now safely on the dead-letter topic, so a redelivery of one
        is dropped as a duplicate instead of being dead-lettered twice."""
        with self.lock:
            self.applied.add(ids, list(map(hash, payloads)))

    def _decode_subset(self, payloads: Sequence[bytes], keep: list[int],
                       message_keys: Sequence[str] | None,
                       times_ns: Sequence[int] | None) -> Decoded:
        """Decode only ``keep``, reporting message indices of the full batch."""
        sub = self.decoder.decode(
            list(map(payloads.__getitem__, keep)),
            None if message_keys is None else list(map(message_keys.__getitem__, keep)),
            None if times_ns is None else list(map(times_ns.__getitem__, keep)),
        )
        sub.row_msg = np.asarray(keep, dtype=sub.row_msg.dtype)[sub.row_msg]
        sub.bad = [(keep[i], reason) for i, reason in sub.bad]
        return sub

    def _write(self, d: Decoded) -> list[tuple[int, str]]:
        """Write the rows; if the store refuses the batch, retry message by message."""
        if not len(d):
            return []
        try:
            self.store.append_batch(self.name, d.keys, d.values, d.ts_ns)
            return []
        except HeimdallError:
            pass
        bad: list[tuple[int, str]] = []
        bounds = [0, *(i for i in range(1, len(d)) if d.row_msg[i] != d.row_msg[i - 1]), len(d)]
        for a, b in itertools.pairwise(bounds):
            try:
                self.store.append_batch(self.name, d.keys[a:b], d.values[a:b], d.ts_ns[a:b])
            except HeimdallError as exc:
                bad.append((int(d.row_msg[a]), f"{type(exc).__name__}: {exc}"))
        return bad
