"""PulsarSource: worker threads, each owning a consumer on the subscription, fill the windows.

For every stream (topic), ``workers`` threads each own one consumer on the shared
subscription. With ``key_shared`` (the default) Pulsar gives every key to exactly one consumer,
so every key has one writer thread; ``failover`` and ``exclusive`` give a whole topic (or
partition) to one consumer; ``shared`` spreads messages round-robin and does not keep one
writer per key.

A worker's loop: block for the first message (``receive``), take what else is ready (without
waiting when it is caught up; ``batch_receive`` when there is a backlog), read payloads,
apply the batch (``StreamIngest``: drop redeliveries, decode, one ``append_batch``),
publish bad messages to the dead-letter topic and flush it, then acknowledge: cumulatively
(per partition of a partitioned topic) on ``failover``/``exclusive``, one by one otherwise.
A message is acknowledged only after its rows are in the windows, or after it is on the
dead-letter topic.

``stop()`` is graceful: the workers stop receiving, finish the batch in hand, acknowledge it,
and close their consumers (which flushes acknowledgements); then the producers and the client
close.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from heimdall.cluster.node import ClusterNode
from heimdall.config import SourceConfig, StreamConfig
from heimdall.errors import SourceError
from heimdall.sources._ingest import StreamIngest
from heimdall.sources.base import Source

log = logging.getLogger("heimdall.pulsar")

_SAMPLE = 64  # latency samples per batch at most (publish_timestamp costs a call each)
_PEEK = 128  # messages taken one by one before a batch_receive (see _take_ready)
# after a whole producer batch, this many messages are a batch to apply without asking for
# more (an ask that finds nothing costs the client ~70-170 us: see _take_ready)
_WHOLE = 32


@contextlib.contextmanager
def map_pulsar_errors(what: str, url: str) -> Iterator[None]:
    """Translate the client's exceptions into ``SourceError`` naming what failed where."""
    import pulsar

    try:
        yield
    except pulsar.PulsarException as exc:
        raise SourceError(f"{what} at {url} failed: {type(exc).__name__}: {exc}") from exc


_TRANSIENT = ("Timeout", "ConnectError", "ConsumerBusy", "ProducerBusy", "ServiceUnitNotReady",
              "TooManyLookupRequestException", "NotConnected", "LookupError")


def retrying(what: str, url: str, call: Callable[[], Any], deadline_s: float,
             cancel: threading.Event | None = None) -> Any:
    """``call()``, again with backoff (0.5 s doubling to 5 s) while the broker answers with a
    passing error (a timeout, no connection, the consumer of a killed process still held:
    ConsumerBusy ...) for up to ``deadline_s``, saying each time what it waits for. Then,
    or on any other error, SourceError naming what failed where. ``cancel`` set (a signal
    during start-up) ends the wait at once."""
    import pulsar

    transient = tuple(getattr(pulsar, n) for n in _TRANSIENT if hasattr(pulsar, n))
    end = time.monotonic() + deadline_s
    delay = 0.5
    while True:
        try:
            with map_pulsar_errors(what, url):
                return call()
        except SourceError as exc:
            cause = exc.__cause__
            left = end - time.monotonic()
            if not isinstance(cause, transient) or left <= 0:
                if isinstance(cause, transient):
                    raise SourceError(
                        f"{exc}; gave up after {deadline_s:g} s of retries "
                        f"(source.connect_timeout_s)") from cause
                raise
            wait = min(delay, left)
            log.warning("%s at %s: %s; retrying in %.1f s (for %.0f s more; "
                        "source.connect_timeout_s)", what, url, type(cause).__name__, wait,
                        left)
            if cancel is not None and cancel.wait(wait):
                raise SourceError(f"{what} at {url}: stopped while waiting for the "
                                  f"broker") from cause
            if cancel is None:
                time.sleep(wait)
            delay = min(delay * 2, 5.0)


def _read_to_end(reader: Any, embedded: bool, read_timeout_ms: int = 30_000) -> Iterator[Any]:
    """Every message a reader can read now. Real Pulsar says whether more is there
    (``has_message_available``); pulsar-lite cannot on an empty topic, so there the read
    ends at the first 2 s without a message."""
    import pulsar

    if embedded:
        while True:
            try:
                yield reader.read_next(2000)
            except pulsar.Timeout:
                return
    while reader.has_message_available():
        yield reader.read_next(read_timeout_ms)


def read_topic(client: Any, url: str, topic: str, start: Any, embedded: bool,
               batch: int = 10_000) -> Iterator[list[Any]]:
    """Every message of ``topic`` the broker holds now, from ``start`` (a ``MessageId``,
    included), in batches, in topic order: a reader, no subscription touched. Raises
    SourceError."""
    with map_pulsar_errors(f"reading {topic!r}", url):
        reader = client.create_reader(topic, start, receiver_queue_size=batch,
                                      start_message_id_inclusive=True)
    try:
        out: list[Any] = []
        with map_pulsar_errors(f"reading {topic!r}", url):
            for m in _read_to_end(reader, embedded):
                out.append(m)
                if len(out) >= batch:
                    yield out
                    out = []
        if out:
            yield out
    finally:
        reader.close()


def message_keys_and_times(cfg: StreamConfig, msgs: list[Any], *, replay: bool = False
                           ) -> tuple[list[str] | None, list[int] | None]:
    """What a stream takes from the messages themselves, not their payloads: the keys
    (``key_from = "message_key"``) and the event times in ns (``time_from`` other than a
    field), None where the payload gives them. A ``replay`` of history has no arrival time
    to give: an ``"arrival"`` stream takes the broker's publish time there (its receipt)."""
    if not msgs:
        return ([] if cfg.key_from == "message_key" else None), None
    # unbound methods through map (the per-message cost is the client's call): of the
    # client's message class, or of its Python wrapper (what a reader returns)
    message = type(msgs[0])
    keys = (list(map(message.partition_key, msgs)) if cfg.key_from == "message_key"
            else None)
    times: list[int] | None = None
    if cfg.time_from == "event_timestamp":
        times = [t * 1_000_000 for t in map(message.event_timestamp, msgs)]
    elif cfg.time_from == "publish_timestamp" or (cfg.time_from == "arrival" and replay):
        times = [t * 1_000_000 for t in map(message.publish_timestamp, msgs)]
    elif cfg.time_from == "arrival":
        times = [time.time_ns()] * len(msgs)
    return keys, times


def message_id_reader() -> Callable[[Any], bytes]:
    """A message handle -> its id, serialized: deduplication's ``id_of``. A handle is the
    client's message, or already its id (with checkpoints on, see ``_process``). The client's
    methods are looked up once, not per message."""
    from _pulsar import Message, MessageId

    serialize, of = MessageId.serialize, Message.message_id

    def message_id(handle: Any) -> bytes:
        return handle if type(handle) is bytes else serialize(of(handle))

    return message_id


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """The protobuf varint at ``data[i]`` and the index after it (IndexError if cut)."""
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def batch_position(message_id: bytes) -> tuple[tuple[int, int, int], int] | None:
    """The broker entry (ledger, entry, partition) of the message whose serialized id
    (MessageIdData: ledgerId, entryId, partition, batch_index and batch_size are fields 1,
    2, 3, 4 and 6) is given, and how many messages of its producer batch follow it; None
    when it was not batched, or the id cannot be read."""
    fields = [0, 0, -1, -1, -1]  # ledger, entry, partition, batch_index, batch_size
    i, n = 0, len(message_id)
    try:
        while i < n:
            key, i = _varint(message_id, i)  # the field's tag
            if key & 7 not in (0, 2):  # no other wire type in MessageIdData
                return None
            value, i = _varint(message_id, i)  # the value, or a length
            if key & 7 == 2:
                i += value
            elif key >> 3 in (1, 2, 3, 4):
                fields[(key >> 3) - 1] = value
            elif key >> 3 == 6:
                fields[4] = value
    except IndexError:  # truncated
        return None
    ledger, entry, partition, index, size = fields
    if not 0 <= index < size:
        return None
    return (ledger, entry, partition), size - 1 - index


def batch_rest(message_id: bytes) -> int:
    """How many messages of a producer batch follow the message whose serialized id is
    given (``batch_position``); -1 when it was not batched, or the id cannot be read."""
    at = batch_position(message_id)
    return -1 if at is None else at[1]


def entry_rest_reader() -> Callable[[Any], int]:
    """A received message -> how many messages of its producer batch follow it, or -1 when
    it was not batched. The client queues a batch's messages together as it unpacks the
    batch (the broker's entry), so these are already queued, or about to be. The size is
    read from the serialized id (``batch_rest``), the only place the Python client exposes
    it; ~2-5 us."""
    message_id = message_id_reader()

    def entry_rest(msg: Any) -> int:
        return batch_rest(message_id(msg))

    return entry_rest


class _AfterApplyError(Exception):
    """A batch was applied, but what follows (dead letters, acknowledgement) failed."""


@dataclass
class _Worker:
    stream: str
    index: int
    ingest: StreamIngest
    consumer: Any
    partitioned: bool = False  # cumulative acks then go per partition
    thread: threading.Thread | None = None
    crash_after_apply: bool = False  # test hook: die holding an applied, unacked batch
    crash_after_dead_letters: bool = False  # test hook: die once its dead letters are out


class PulsarSource(Source):
    """Consume the streams' topics from Pulsar into the store.

    ``subscription_type`` as configured; ``effective_type`` is what is used (the embedded
    broker stalls on Key_Shared, so there it is ``failover``: one writer per topic).
    """

    def __init__(self, config: SourceConfig, url: str, ingests: Sequence[StreamIngest],
                 embedded: bool = False) -> None:
        self.config = config
        self.url = url
        self.ingests = list(ingests)
        self.embedded = embedded
        self.effective_type = config.subscription_type
        if embedded and config.subscription_type == "key_shared":
            self.effective_type = "failover"
        self.cumulative = self.effective_type in ("failover", "exclusive")
        self._client: Any = None
        self._dlq: dict[str, Any] = {}
        self._workers: list[_Worker] = []
        self._stop = threading.Event()
        self.cancel = threading.Event()  # set: stop waiting for the broker in start()
        # a cluster node: its consumers carry the node's name and address (the broker's
        # report of the subscription is then the cluster's routing table)
        self.cluster: ClusterNode | None = None
        self.errors = 0
        self.on_pending: Callable[[int], None] | None = None  # checkpoints: messages waiting
        # after a restore: dead letters published since then are read back, so a poison
        # message redelivered after a crash is not dead-lettered twice
        self.recall_since_ms: int | None = None
        id_of = message_id_reader()
        for ingest in self.ingests:  # the handles ``_process`` gives are the messages
            ingest.applied.id_of = id_of

    # ---- lifecycle ----------------------------------------------------------------------

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        return retrying(what, self.url, call, self.config.connect_timeout_s, self.cancel)

    def start(self) -> None:
        """Connect, subscribe every worker, start the threads. A broker that is not ready
        (a restart after kill -9 while the broker still holds the dead consumer) is waited
        for, up to ``source.connect_timeout_s``. Raises SourceError."""
        import pulsar

        cfg = self.config
        self._client = pulsar.Client(
            self.url,
            operation_timeout_seconds=15,
            io_threads=max(1, min(4, cfg.workers)),
            logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
        )
        ctype = {
            "key_shared": pulsar.ConsumerType.KeyShared,
            "failover": pulsar.ConsumerType.Failover,
            "exclusive": pulsar.ConsumerType.Exclusive,
            "shared": pulsar.ConsumerType.Shared,
        }[self.effective_type]
        position = (pulsar.InitialPosition.Earliest if cfg.initial_position == "earliest"
                    else pulsar.InitialPosition.Latest)
        policy = pulsar.ConsumerBatchReceivePolicy(cfg.receive_batch, 64 << 20,
                                                   cfg.receive_timeout_ms)
        n_workers = 1 if self.effective_type == "exclusive" else cfg.workers
        client = self._client
        try:
            for ingest in self.ingests:
                topic = ingest.config.topic
                self._dlq[ingest.name] = self._retry(
                    f"creating the dead-letter producer for {topic!r}",
                    partial(client.create_producer, ingest.config.dlq_topic,
                            block_if_queue_full=True, batching_enabled=True,
                            batching_max_publish_delay_ms=1))
                partitioned = self._retry(f"looking up the partitions of {topic!r}",
                                          partial(client.get_topic_partitions, topic)) != [topic]
                for i in range(n_workers):
                    consumer = self._retry(
                        f"subscribing {cfg.subscription!r} to {topic!r}",
                        partial(client.subscribe, topic, cfg.subscription, consumer_type=ctype,
                                receiver_queue_size=cfg.receiver_queue_size,
                                initial_position=position, batch_receive_policy=policy,
                                consumer_name=(self.cluster.consumer_name(ingest.name, i)
                                               if self.cluster else f"heimdall-{ingest.name}-{i}"),
                                properties=(self.cluster.consumer_properties
                                            if self.cluster else {})))
                    self._workers.append(_Worker(ingest.name, i, ingest, consumer, partitioned))
        except BaseException:
            self._close_client()
            raise
        if self.recall_since_ms is not None:
            for ingest in self.ingests:
                self._recall_dead_letters(ingest, self.recall_since_ms)
        for w in self._workers:
            w.thread = threading.Thread(target=self._run, args=(w,), daemon=True,
                                        name=f"heimdall-{w.stream}-{w.index}")
            w.thread.start()
        log.info("subscribed %s (%s, %d worker(s) per topic) at %s", cfg.subscription,
                 self.effective_type, n_workers, self.url)

    def stop(self, timeout_s: float = 30.0,
             before_close: Callable[[], None] | None = None) -> None:
        """Stop receiving, finish and acknowledge the batches in hand, close. Idempotent.

        ``before_close`` runs once the workers have stopped, while the consumers are still
        open (the last checkpoint, and its acknowledgements)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for w in self._workers:
            if w.thread is not None:
                w.thread.join(max(0.0, deadline - time.monotonic()))
        try:
            if before_close is not None:
                before_close()
        finally:
            self._close_client()

    def _close_client(self) -> None:
        for w in self._workers:
            with contextlib.suppress(Exception):
                w.consumer.close()
        for p in self._dlq.values():
            with contextlib.suppress(Exception):
                p.flush()
                p.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None

    @property
    def alive_workers(self) -> int:
        """How many worker threads run."""
        return sum(w.thread is not None and w.thread.is_alive() for w in self._workers)

    def crash_worker_after_next_batch(self, stream: str, index: int = 0,
                                      after: str = "apply") -> None:
        """Test hook: the worker applies its next batch (``after="dead_letters"``: the next
        batch with bad messages, whose dead letters it publishes), then closes its consumer
        without acknowledging and ends, as a crashed consumer would."""
        for w in self._workers:
            if w.stream == stream and w.index == index:
                if after == "dead_letters":
                    w.crash_after_dead_letters = True
                else:
                    w.crash_after_apply = True
                return
        raise SourceError(f"no worker {index} on stream {stream!r}")

    # ---- the worker loop ------------------------------------------------------------------

    def _run(self, w: _Worker) -> None:
        import pulsar

        ingest = w.ingest
        consumer = w.consumer._consumer  # the C++ consumer: no per-message Python wrappers
        entry_rest = entry_rest_reader()
        while not self._stop.is_set():
            try:
                first = consumer.receive(100)
            except pulsar.Timeout:
                continue
            except pulsar.PulsarException as exc:  # closed or broken: the client reconnects
                if self._stop.is_set() or w.crash_after_apply:
                    return
                log.warning("worker %s-%d: receive failed: %s", w.stream, w.index, exc)
                time.sleep(0.1)
                continue
            msgs = self._take_ready(consumer, first, pulsar.Timeout, entry_rest)
            try:
                self._process(w, ingest, consumer, msgs)
            except _AfterApplyError as exc:  # applied; the dead-letter publish or the ack failed
                self.errors += 1
                log.error("worker %s-%d: %s; the batch stays unacknowledged and will be "
                          "redelivered (applied rows are recognised and dropped)",
                          w.stream, w.index, exc.__cause__)
            except Exception:  # a bug, not bad input: keep the flow going, loudly
                self.errors += 1
                log.exception("worker %s-%d: batch of %d failed; dead-lettering it",
                              w.stream, w.index, len(msgs))
                self._dead_letter_all(ingest, consumer, msgs)
            if w.crash_after_apply:
                return
            ingest.tidy()

    @staticmethod
    def _take_ready(consumer: Any, first: Any, timeout: type[Exception],
                    entry_rest: Callable[[Any], int]) -> list[Any]:
        """``first`` and what else is ready. Up to ``_PEEK`` queued messages are taken one by
        one without waiting, so a caught-up worker applies at once; a full peek means a
        backlog, and ``batch_receive`` then takes it in bulk (waiting at most
        ``receive_timeout_ms`` to fill the batch).

        Asking for a message when none is queued costs the client ~70 us warm, ~150 us
        cold (its timeout is a C++ exception that pybind11 translates; a profile puts the
        time in the C++ unwinder), more than applying a batch of 30 messages. So when
        messages come in producer batches, the rest of each batch is taken without doubt
        (``entry_rest``), and once a whole batch makes ``_WHOLE`` messages they are
        applied without asking for more: what follows is taken at once by the next
        ``receive``."""
        msgs = [first]
        rest = entry_rest(first)
        try:
            if rest < 0:  # not batched: ask until the queue is empty
                while len(msgs) < _PEEK:
                    msgs.append(consumer.receive(0))
            else:
                while len(msgs) < _PEEK:
                    if rest > 0:
                        msgs.append(consumer.receive(0))  # queued with the batch
                        rest -= 1
                    elif len(msgs) >= _WHOLE:
                        return msgs
                    else:
                        m = consumer.receive(0)
                        msgs.append(m)
                        rest = max(0, entry_rest(m))
        except timeout:
            return msgs
        msgs.extend(consumer.batch_receive())
        return msgs

    def _process(self, w: _Worker, ingest: StreamIngest, consumer: Any,
                 msgs: list[Any]) -> None:
        from _pulsar import Message, MessageId

        cfg = ingest.config
        # unbound methods through map: the per-message cost is the client's call, little else
        payloads = list(map(Message.data, msgs))
        # the messages are their own handles: an id is read (~1-2 us) only when deduplication
        # must compare one (``dedup``), or a prediction names it. With checkpoints on, each
        # checkpoint records the ids of what it covers: they are read here, once, and are the
        # handles (kept instead of the messages, which are dearer to keep and to free)
        handles = (list(map(MessageId.serialize, map(Message.message_id, msgs)))
                   if ingest.defer_acks else msgs)
        keys, times = message_keys_and_times(cfg, msgs)
        sent = list(map(Message.publish_timestamp, msgs)) if ingest.listeners else None
        result = ingest.apply(payloads, handles, keys, times, sent,
                              defer=(w, msgs) if ingest.defer_acks else None)
        self._observe_latency(ingest, msgs, sent, result.written_ms)
        if w.crash_after_apply:
            consumer.close()  # unacknowledged: Pulsar redelivers to another consumer
            return
        try:
            if result.bad:
                self._send_dead_letters(ingest, msgs, payloads, result.bad)
                ingest.dead_lettered([payloads[i] for i, _ in result.bad],
                                     [handles[i] for i, _ in result.bad])
                if w.crash_after_dead_letters:
                    w.crash_after_apply = True
                    consumer.close()  # the bad messages' acknowledgements never sent
                    return
            if not ingest.defer_acks:
                self._ack(w, consumer, msgs)
                return
            # checkpoints on: a bad message's effect (on the dead-letter topic) is durable
            # now; the others wait for the checkpoint that covers them
            for i, _ in result.bad:
                consumer.acknowledge(msgs[i])
            if self.on_pending is not None:  # ``apply`` put the good ones in ``pending``
                self.on_pending(ingest.pending_messages)
        except Exception as exc:
            raise _AfterApplyError from exc

    def read_history(self, topic: str, batch: int = 10_000) -> Iterator[list[Any]]:
        """Every message of ``topic`` the broker holds now, from the earliest, in batches, in
        topic order (a reader: the subscription is not touched). Raises SourceError."""
        import pulsar

        yield from read_topic(self._client, self.url, topic, pulsar.MessageId.earliest,
                              self.embedded, batch)

    def recall_dead_letters(self, ingest: StreamIngest, since_ms: int = 0) -> None:
        """``_recall_dead_letters``, for a node that takes keys over (the dead letters of
        their previous owner), with ``ingest.lock`` held by the caller."""
        self._recall_dead_letters(ingest, since_ms, locked=True)

    def _recall_dead_letters(self, ingest: StreamIngest, since_ms: int,
                             locked: bool = False) -> None:
        """Remember the original ids of the dead letters published since ``since_ms``.

        The topic is read to its end as the broker sees it (``has_message_available``), not
        until the first pause: after a reader connects (and its first reads can stall for
        longer than any fixed wait), a recall that stopped early let a poison message whose
        acknowledgement died with the process be dead-lettered a second time."""
        import pulsar

        topic = ingest.config.dlq_topic
        with map_pulsar_errors(f"reading the dead-letter topic {topic!r}", self.url):
            reader = self._client.create_reader(topic, pulsar.MessageId.earliest)
        raw: list[bytes] = []
        try:
            with map_pulsar_errors(f"reading the dead-letter topic {topic!r}", self.url):
                for m in _read_to_end(reader, self.embedded):
                    if m.publish_timestamp() < since_ms:
                        continue
                    props = m.properties()
                    if "heimdall-message-id-raw" in props:
                        raw.append(bytes.fromhex(props["heimdall-message-id-raw"]))
                    elif "heimdall-message-id" in props:  # dead-lettered by an older version
                        ingest.dead_letter_ids.add(props["heimdall-message-id"])
        finally:
            reader.close()
        with contextlib.nullcontext() if locked else ingest.lock:
            ingest.applied.add_ids(raw)  # a redelivery of one is a duplicate, and counted so
        if raw or ingest.dead_letter_ids:
            log.info("stream %s: %d dead letters since the checkpoint remembered", ingest.name,
                     len(raw) + len(ingest.dead_letter_ids))

    def ack(self, worker: Any, msgs: list[Any]) -> None:
        """Acknowledge ``msgs`` a worker applied (the checkpointer calls this once they are in
        a checkpoint). A consumer that is gone meanwhile gets them redelivered; dropped as
        duplicates."""
        try:
            self._ack(worker, worker.consumer._consumer, msgs)
        except Exception as exc:  # closed or reconnecting
            log.warning("worker %s-%d: acknowledging %d checkpointed messages failed: %s",
                        worker.stream, worker.index, len(msgs), exc)

    def _ack(self, w: _Worker, consumer: Any, msgs: list[Any]) -> None:
        if self.cumulative and not w.partitioned:
            consumer.acknowledge_cumulative(msgs[-1])
        elif self.cumulative:
            last: dict[int, Any] = {}
            for m in msgs:
                last[m.message_id().partition()] = m
            for m in last.values():
                consumer.acknowledge_cumulative(m)
        else:
            for m in msgs:
                consumer.acknowledge(m)

    def _observe_latency(self, ingest: StreamIngest, msgs: list[Any],
                         sent: list[float] | None, now_ms: float) -> None:
        """Publish-to-window latency of a sample of the batch, to ``now_ms``: when its rows
        were written (``sent``: every message's publish time, when already read for the
        listeners)."""
        from _pulsar import Message

        step = max(1, len(msgs) // _SAMPLE)
        pub = (np.array(sent[::step], np.float64) if sent is not None
               else np.fromiter(map(Message.publish_timestamp, msgs[::step]), np.float64))
        lat = np.maximum(now_ms - pub, 0.0) / 1e3
        ingest.counters.latency_s.observe_many(lat)
        ingest.counters.lag_s = float(lat[-1])

    def _send_dead_letters(self, ingest: StreamIngest, msgs: list[Any], payloads: list[bytes],
                           bad: list[tuple[int, str]]) -> None:
        producer = self._dlq[ingest.name]
        import pulsar

        failed: list[BaseException] = []

        def done(res: Any, _mid: Any) -> None:
            if res != pulsar.Result.Ok:
                failed.append(SourceError(
                    f"dead-letter publish to {ingest.config.dlq_topic!r} failed: {res}"))

        for i, reason in bad:
            m = msgs[i]
            if ingest.dead_letter_ids and str(m.message_id()) in ingest.dead_letter_ids:
                continue  # dead-lettered before a crash; its acknowledgement was lost
            props = dict(m.properties())
            props.update({
                "heimdall-error": reason[:2000],
                "heimdall-stream": ingest.name,
                "heimdall-topic": ingest.config.topic,
                "heimdall-message-id": str(m.message_id()),
                # the id as deduplication knows it: a restart reads it back (``recall``), so
                # a redelivery of this message is dropped as a duplicate
                "heimdall-message-id-raw": m.message_id().serialize().hex(),
            })
            producer.send_async(payloads[i], done, properties=props,
                                partition_key=m.partition_key() or None)
        producer.flush()  # on the dead-letter topic before the original is acknowledged
        if failed:
            raise failed[0]

    def _dead_letter_all(self, ingest: StreamIngest, consumer: Any, msgs: list[Any]) -> None:
        with contextlib.suppress(Exception):
            payloads = [m.data() for m in msgs]
            bad = [(i, "internal error: see the Heimdall log") for i in range(len(msgs))]
            self._send_dead_letters(ingest, msgs, payloads, bad)
            for m in msgs:
                consumer.acknowledge(m)

