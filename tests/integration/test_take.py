"""How a Pulsar worker takes what is ready (``PulsarSource._take_ready``), against a real
Apache Pulsar: whole producer batches without asking the client for more, and asking until
the queue is empty when messages are not batched."""

from __future__ import annotations

import time
from typing import Any

import pulsar

from heimdall.sources.pulsar import _WHOLE, PulsarSource, entry_rest_reader

from .conftest import client, new_topic


def _queued(url: str, batches: list[int], unbatched: int = 0) -> tuple[Any, Any]:
    """A client and the C++ consumer of a new topic holding producer batches of the sizes
    given, then ``unbatched`` single messages; waits until the consumer has them queued."""
    topic = new_topic()
    c = client(url)
    consumer = c.subscribe(topic, "take", consumer_type=pulsar.ConsumerType.Exclusive)
    i = 0
    for size in batches:
        p = c.create_producer(topic, batching_enabled=True, batching_max_messages=size,
                              batching_max_publish_delay_ms=60_000)
        for _ in range(size):
            p.send_async(b"%d" % i, None)
            i += 1
        p.flush()
        p.close()
    if unbatched:
        p = c.create_producer(topic, batching_enabled=False)
        for _ in range(unbatched):
            p.send(b"%d" % i)
            i += 1
        p.close()
    time.sleep(1.0)  # the broker dispatches to the consumer's queue
    return c, consumer._consumer


def test_entry_rest_reads_a_producer_batch_from_the_message_id(real_pulsar: Any) -> None:
    c, raw = _queued(real_pulsar.url, [5], unbatched=2)
    rest = entry_rest_reader()
    try:
        msgs = [raw.receive(5000) for _ in range(7)]
        assert [m.data() for m in msgs] == [b"%d" % i for i in range(7)]
        assert [rest(m) for m in msgs] == [4, 3, 2, 1, 0, -1, -1]
    finally:
        c.close()


def test_take_ready_applies_whole_batches_and_drains_unbatched(real_pulsar: Any) -> None:
    rest = entry_rest_reader()
    # a batch of _WHOLE + 8 is taken whole, and the next batch waits for the next take
    c, raw = _queued(real_pulsar.url, [_WHOLE + 8, 10])
    try:
        first = PulsarSource._take_ready(raw, raw.receive(5000), pulsar.Timeout, rest)
        assert len(first) == _WHOLE + 8
        second = PulsarSource._take_ready(raw, raw.receive(5000), pulsar.Timeout, rest)
        assert len(second) == 10  # the queue then held 10: asked once more, found nothing
        taken = [m.data() for m in first + second]
        assert taken == [b"%d" % i for i in range(_WHOLE + 18)]
    finally:
        c.close()
    # small batches are gathered until they make _WHOLE
    c, raw = _queued(real_pulsar.url, [10, 10, 10, 10, 10])
    try:
        msgs = PulsarSource._take_ready(raw, raw.receive(5000), pulsar.Timeout, rest)
        assert len(msgs) == 40
    finally:
        c.close()
    # messages not batched: asked for until none is left
    c, raw = _queued(real_pulsar.url, [], unbatched=50)
    try:
        msgs = PulsarSource._take_ready(raw, raw.receive(5000), pulsar.Timeout, rest)
        assert [m.data() for m in msgs] == [b"%d" % i for i in range(50)]
    finally:
        c.close()
