"""Checkpoints of a pipeline: the store and what the broker may redeliver, on an interval, at
shutdown, and early when too many messages await acknowledgement; restore at start.

With checkpoints on, ingest does not acknowledge a batch it applied: it leaves it in its
stream's ``pending`` list. A checkpoint takes each stream's ingest lock (the pause ingest
sees: the time to copy the stream's used slots), copies its rows and swaps out its pending
list, releases the lock, writes the file (fsync, rename), and only then acknowledges what it
swapped out. So after a crash the broker redelivers exactly what the newest checkpoint lacks,
and the ids of what it covers but may not have seen acknowledged are in the checkpoint, to
drop their redeliveries: those of the checkpoints acknowledged in the last second (the client
sends acknowledgements in groups), those of producer batches acknowledged only in part so
far (``OpenBatches``), and those restored at start, for as long as ingest's deduplication
holds them (their redeliveries may come late, and the process may die again before they do).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heimdall.checkpoint import _file
from heimdall.config import CheckpointConfig
from heimdall.errors import ConfigError, CorruptCheckpointError
from heimdall.metrics import Histogram
from heimdall.sources._ingest import StreamIngest
from heimdall.window import WindowStore

log = logging.getLogger("heimdall.checkpoint")

Ack = Callable[[Any, list[Any]], None]  # (consumer, messages): acknowledge them
# a message's id -> (its producer batch, how many of the batch's messages follow it), or
# None when it was not batched (``heimdall.sources.pulsar.batch_position``)
EntryOf = Callable[[Any], tuple[Hashable, int] | None]
_COUNTERS = ("messages", "bytes", "rows", "dead_letters", "duplicates", "batches", "pushed",
             "before_boundary")


@dataclass
class CheckpointStats:
    """What checkpointing did; ``pause_s`` is the time each stream's ingest was held."""

    written: int = 0
    failed: int = 0
    bytes: int = 0
    acked: int = 0
    last_seq: int = 0
    last_write_s: float = 0.0
    max_pause_s: float = 0.0
    pause_s: Histogram = field(default_factory=Histogram)
    restored_seq: int | None = None
    restored_created_ns: int = 0
    restore_s: float = 0.0
    skipped_corrupt: list[str] = field(default_factory=list)


def fingerprint(store: WindowStore) -> dict[str, dict[str, Any]]:
    """What a checkpoint's rows depend on, per stream (readable, to say what changed)."""
    out = {}
    for name, spec in store.streams.items():
        out[name] = {
            "fields": list(spec.fields), "dtype": spec.dtype, "window": repr(spec.window),
            "time": spec.time, "time_unit": spec.time_unit,
            "allowed_lateness_s": spec.allowed_lateness_s, "nan": spec.nan,
        }
    return out


def _digest(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


# how long after its acknowledgement a checkpoint's ids are kept in the next ones: the client's
# grouping of acknowledgements (100 ms) and their way to the broker, with a margin
_ACK_SETTLE_S = 1.0


class Checkpointer:
    """Checkpoints ``store`` and ``ingests`` into ``config.dir``; thread-safe."""

    def __init__(self, config: CheckpointConfig, store: WindowStore,
                 ingests: Sequence[StreamIngest], ack: Ack | None = None,
                 entry_of: EntryOf | None = None) -> None:
        self.config = config
        self.dir = Path(config.dir)
        self.store = store
        self.ingests = list(ingests)
        self.ack = ack
        self.stats = CheckpointStats()
        self.fingerprint = fingerprint(store)
        # per stream: (when acknowledged, monotonic s; ids) of the checkpoints whose
        # acknowledgements may not have reached the broker yet, oldest first
        self._acked: dict[str, deque[tuple[float, list[Any]]]] = {
            i.name: deque() for i in self.ingests}
        self.entry_of = entry_of
        self._open: dict[str, OpenBatches] = {}
        self._seq = 0
        # per stream: reusable snapshot buffers and how many rows of them are committed, so
        # the copy under the ingest lock meets no page fault (160 ms instead of 20 for 123 MB)
        self._buffers: dict[str, tuple[dict[str, Any], int]] = {}
        self._lock = threading.Lock()  # one checkpoint at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- restore -----------------------------------------------------------------------------

    def restore(self) -> int | None:
        """Load the newest checkpoint that verifies; returns its number (None if none).

        Checkpoints are written whole or not at all (a temporary file, fsync, rename), so a
        newest one that fails verification is damage, and the broker holds acknowledgements
        for what it covered: by default (``on_corrupt = "refuse"``) that raises
        CorruptCheckpointError naming every file and the way to start anyway;
        ``"use_older"`` skips to the newest that verifies, ``"start_empty"`` starts empty.
        One made under other stream settings raises ConfigError saying what changed, or with
        ``on_mismatch = "discard"`` is set aside (the store starts empty). Call before ingest
        starts.
        """
        t0 = time.perf_counter()
        found = _file.list_checkpoints(self.dir) if self.dir.exists() else []
        if found:
            self._seq = found[0][0]
        damage: list[str] = []
        for seq, path in found:
            try:
                manifest, arrays = _file.read(path)
            except CorruptCheckpointError as exc:
                damage.append(f"{path}: {exc}")
                self.stats.skipped_corrupt.append(path.name)
                if self.config.on_corrupt == "refuse":
                    continue  # every one is read, to name them all
                log.error("checkpoint %s skipped: %s", path.name, exc)
                if self.config.on_corrupt == "start_empty":
                    log.warning("starting empty (on_corrupt = start_empty): the windows of "
                                "every acknowledged message are gone")
                    return None
                continue
            if damage and self.config.on_corrupt == "refuse":
                self._refuse(damage, older=path)
            if manifest.get("fingerprint") != _digest(self.fingerprint):
                change = _describe_change(manifest.get("streams_spec", {}), self.fingerprint)
                if self.config.on_mismatch == "discard":
                    log.warning("checkpoint %s discarded: %s", path.name, change)
                    return None
                raise ConfigError(
                    f"checkpoint {path} was made under other stream settings: {change}. "
                    f"Restore the settings, or set checkpoint.on_mismatch = \"discard\" "
                    f"to start empty")
            self._load(manifest, arrays)
            self.stats.restored_seq = seq
            self.stats.restored_created_ns = int(manifest.get("created_ns", 0))
            self.stats.restore_s = time.perf_counter() - t0
            log.info("restored checkpoint %s in %.3f s", path.name, self.stats.restore_s)
            return seq
        if damage and self.config.on_corrupt == "refuse":
            self._refuse(damage, older=None)
        return None

    def _refuse(self, damage: list[str], older: Path | None) -> None:
        fallback = (f"; the newest that verifies is {older.name}, but the events "
                    f"acknowledged after it would be missing from the windows"
                    if older is not None else "")
        raise CorruptCheckpointError(
            f"the newest checkpoint(s) in {self.dir} fail verification, and the broker holds "
            f"acknowledgements for what they covered{fallback}:\n  " + "\n  ".join(damage)
            + "\nMove them aside to look into them, or start on purpose without them: "
            "heimdall serve --start-empty (or [checkpoint] on_corrupt = \"start_empty\"; "
            "\"use_older\" restores the newest that verifies)")

    def _load(self, manifest: dict[str, Any], arrays: dict[str, Any]) -> None:
        by_name = {i.name: i for i in self.ingests}
        for name, st in manifest["streams"].items():
            prefix = f"{name}/"
            mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            self.store.import_stream(name, st["ring"], mine)
            ingest = by_name.get(name)
            if ingest is not None:
                ingest.applied.add_ids(st["acked_ids"])
                ingest.boundary_ns = st.get("boundary_ns")
                for c in _COUNTERS:
                    setattr(ingest.counters, c, int(st["counters"].get(c, 0)))

    # ---- write -------------------------------------------------------------------------------

    def checkpoint(self) -> Path | None:
        """Write a checkpoint now, then acknowledge what it covers. Returns its path, or None
        if writing failed (logged and counted; what it would have acknowledged waits for the
        next one)."""
        with self._lock:
            streams: dict[str, Any] = {}
            arrays: dict[str, Any] = {}
            swapped: list[tuple[StreamIngest, list[Any]]] = []
            taken_ids: dict[str, list[Any]] = {}
            by_name = {i.name: i for i in self.ingests}
            for name in self.store.streams:
                ingest = by_name.get(name)
                bufs, done = self._buffers.get(name) or (self.store.snapshot_buffers(name), 0)
                done = self.store.prefault(name, bufs, done)
                self._buffers[name] = (bufs, done)
                t0 = time.perf_counter()
                with ingest.lock if ingest is not None else contextlib.nullcontext():
                    ring_state, ring_arrays = self.store.export_stream(name, bufs)
                    pending: list[Any] = []
                    counters: dict[str, int] = {}
                    restored: list[Any] = []
                    if ingest is not None:
                        restored = ingest.applied.exact_ids()
                        pending, ingest.pending = ingest.pending, []
                        ingest.pending_messages = 0
                        counters = {c: getattr(ingest.counters, c) for c in _COUNTERS}
                pause = time.perf_counter() - t0
                self.stats.pause_s.observe(pause)
                self.stats.max_pause_s = max(self.stats.max_pause_s, pause)
                ids = [i for _, _, batch_ids in pending for i in batch_ids]
                held, closed = self._open_batches(name, pending)
                taken_ids[name] = [*closed, *ids]
                streams[name] = {
                    "ring": ring_state, "counters": counters,
                    "acked_ids": list(dict.fromkeys([*restored, *self._unsettled(name),
                                                     *held, *closed, *ids])),
                    "boundary_ns": ingest.boundary_ns if ingest is not None else None,
                }
                arrays.update({f"{name}/{k}": v for k, v in ring_arrays.items()})
                if ingest is not None:
                    swapped.append((ingest, pending))
            manifest = {"fingerprint": _digest(self.fingerprint),
                        "streams_spec": self.fingerprint, "created_ns": time.time_ns(),
                        "streams": streams}
            t0 = time.perf_counter()
            try:
                path, size = _file.write(self.dir, self._seq + 1, manifest, arrays)
            except OSError as exc:
                self.stats.failed += 1
                log.error("checkpoint %d failed: %s; acknowledgements wait for the next one",
                          self._seq + 1, exc)
                for ingest, pending in swapped:  # back in front, in order
                    with ingest.lock:
                        ingest.pending[:0] = pending
                        ingest.pending_messages += sum(len(m) for _, m, _ in pending)
                return None
            self._seq += 1
            self.stats.written += 1
            self.stats.bytes = size
            self.stats.last_seq = self._seq
            self.stats.last_write_s = time.perf_counter() - t0
            for opened in self._open.values():
                opened.commit()
            for ingest, pending in swapped:
                self._acked.setdefault(ingest.name, deque()).append(
                    (time.monotonic(), taken_ids[ingest.name]))
                if self.ack is not None:
                    for consumer, msgs, _ids in pending:
                        self.ack(consumer, msgs)
                        self.stats.acked += len(msgs)
            self._prune()
            return path

    def _open_batches(self, name: str, pending: list[Any]) -> tuple[list[Any], list[Any]]:
        """(ids of producer batches left open by the checkpoints so far, this one included;
        ids of those this one closes), when the source says what batch a message is of."""
        if self.entry_of is None:
            return [], []
        return self._open.setdefault(name, OpenBatches(self.entry_of)).step(pending)

    def _unsettled(self, name: str) -> list[Any]:
        """Ids of the checkpoints acknowledged in the last ``_ACK_SETTLE_S`` seconds, and of
        the newest one whenever acknowledged."""
        acked = self._acked.get(name)
        if not acked:
            return []
        settled = time.monotonic() - _ACK_SETTLE_S
        while len(acked) > 1 and acked[0][0] < settled:
            acked.popleft()
        return [i for _, ids in acked for i in ids]

    def _prune(self) -> None:
        for _seq, path in _file.list_checkpoints(self.dir)[self.config.keep:]:
            path.unlink(missing_ok=True)

    # ---- the thread --------------------------------------------------------------------------

    def start(self) -> Checkpointer:
        """Checkpoint every ``interval_s``, and early when ``max_pending`` messages wait."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="heimdall-checkpoint")
        self._thread.start()
        return self

    def pending(self) -> int:
        """Messages applied and awaiting the checkpoint that covers them."""
        return sum(i.pending_messages for i in self.ingests)

    def on_pending(self, waiting: int) -> None:
        """Ingest reports ``waiting`` messages on a stream: checkpoint early past the limit."""
        if waiting >= self.config.max_pending:
            self._wake.set()

    def wake(self) -> None:
        """Ask for a checkpoint soon (ingest calls this when too much awaits acknowledgement)."""
        self._wake.set()

    def _loop(self) -> None:
        interval = self.config.interval_s
        next_at = time.monotonic() + interval
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_at - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            if time.monotonic() >= next_at or self.pending() >= self.config.max_pending:
                try:
                    self.checkpoint()
                except Exception:
                    self.stats.failed += 1
                    log.exception("checkpoint failed")
                next_at = time.monotonic() + interval

    def stop(self, final: bool = True) -> None:
        """Stop the thread; with ``final``, write a last checkpoint (call once ingest has
        stopped, before the consumers close, so its acknowledgements go out)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if final:
            self.checkpoint()


class OpenBatches:
    """The producer batches of a stream that its checkpoints so far acknowledged in part.

    Pulsar's client acknowledges a producer batch (one broker entry) to the broker only once
    every message of it is acknowledged. A batch whose messages are split over two checkpoints
    therefore stays unacknowledged until the later one; a crash before that brings the whole
    batch back, the part the earlier checkpoint covered too. So the ids of that part stay in
    every checkpoint until one covers the rest; then they are that one's ids, kept as long as
    its own (``_unsettled``). A worker's messages come in order and a batch's together, so a
    worker has at most one batch open, at the end of what it applied, and the next thing it
    applies after that batch's rest closes it.

    A batch whose worker applies nothing for ``IDLE_MAX`` checkpoints is closed all the same:
    its rest is not coming through that worker (it stopped, or the rest went to the dead-letter
    topic, acknowledged at once), so the ids would otherwise ride in every checkpoint forever.
    """

    IDLE_MAX = 64

    def __init__(self, entry_of: EntryOf) -> None:
        self.entry_of = entry_of
        # id(worker): (the batch, its ids so far, checkpoints since the worker last applied)
        self.open: dict[int, tuple[Hashable, list[Any], int]] = {}
        self.next = self.open  # as the checkpoint being written leaves it

    def step(self, pending: list[tuple[Any, list[Any], list[Any]]]
             ) -> tuple[list[Any], list[Any]]:
        """A checkpoint's ``pending`` (worker, messages, ids): (the ids of the batches open
        after it, to hold in it; the ids of the batches it closes). Nothing changes until
        ``commit``: a checkpoint that fails to write leaves its pending for the next one."""
        applied: dict[int, list[list[Any]]] = {}
        for worker, _msgs, ids in pending:
            if ids:
                applied.setdefault(id(worker), []).append(ids)
        after: dict[int, tuple[Hashable, list[Any], int]] = {}
        closed: list[Any] = []
        for worker, (batch, ids, idle) in self.open.items():
            if worker in applied:
                continue
            if idle + 1 >= self.IDLE_MAX:
                closed.extend(ids)
            else:
                after[worker] = (batch, ids, idle + 1)
        for worker, batches in applied.items():
            before = self.open.get(worker)
            tail = self._tail(batches)
            if before is not None and tail is not None and before[0] == tail[0]:
                after[worker] = (tail[0], [*before[1], *tail[1]], 0)  # still not whole
                continue
            if before is not None:  # its rest came, first, in this checkpoint
                closed.extend(before[1])
            if tail is not None:
                after[worker] = (*tail, 0)
        self.next = after
        held = [i for _, ids, _ in after.values() for i in ids]
        return held, closed

    def commit(self) -> None:
        """The checkpoint ``step`` was given is written: what it left open is now open."""
        self.open = self.next

    def _tail(self, batches: list[list[Any]]) -> tuple[Hashable, list[Any]] | None:
        """The batch a worker's messages end inside of, with its ids among them; None when
        the last one ends its batch or was not batched."""
        at = self.entry_of(batches[-1][-1])
        if at is None or at[1] == 0:
            return None
        ids: list[Any] = []
        for batch_ids in reversed(batches):
            for i in reversed(batch_ids):
                here = self.entry_of(i)
                if here is None or here[0] != at[0]:
                    return at[0], ids[::-1]
                ids.append(i)
        return at[0], ids[::-1]


def _describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            parts.append(f"stream {name!r} is gone")
        elif name not in old:
            parts.append(f"stream {name!r} is new")
        else:
            parts.extend(f"stream {name!r} {k}: {old[name].get(k)!r} -> {v!r}"
                         for k, v in new[name].items() if old[name].get(k) != v)
    return "; ".join(parts) or "unknown change"
