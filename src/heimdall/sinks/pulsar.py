"""PulsarSink: predictions as JSON on a Pulsar topic, keyed by the entity key."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from heimdall.errors import SourceError
from heimdall.models.predictions import Prediction, to_json
from heimdall.sinks.base import Sink


class PulsarSink(Sink):
    """Publishes each prediction as one JSON message (``Prediction``'s fields) on ``topic``,
    with the key as the message key, so a Key_Shared consumer sees one key in order.

    ``url``: a broker other than the pipeline's. The producer blocks when its queue is full
    rather than drop; failed sends are counted in ``failed``.
    """

    def __init__(self, topic: str, url: str | None = None) -> None:
        self.topic = topic
        self.url = url
        self.sent = 0
        self.failed = 0
        self._client: Any = None
        self._producer: Any = None
        self._lock = threading.Lock()

    def open(self, url: str | None) -> None:
        import pulsar

        from heimdall.sources.pulsar import map_pulsar_errors

        target = self.url or url
        if target is None:
            raise SourceError(f"PulsarSink({self.topic!r}) has no broker URL")
        with map_pulsar_errors(f"creating the predictions producer for {self.topic!r}", target):
            self._client = pulsar.Client(
                target, operation_timeout_seconds=15,
                logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
            )
            self._producer = self._client.create_producer(
                self.topic, block_if_queue_full=True, batching_enabled=True,
                batching_max_publish_delay_ms=1,
            )

    def _done(self, res: Any, _mid: Any) -> None:
        import pulsar

        if res != pulsar.Result.Ok:
            with self._lock:
                self.failed += 1

    def emit(self, predictions: Sequence[Prediction]) -> None:
        if self._producer is None:
            raise SourceError(f"PulsarSink({self.topic!r}) is not open")
        send = self._producer.send_async
        for p in predictions:
            send(to_json(p), self._done, partition_key=str(p.key))
        self.sent += len(predictions)

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.flush()
                self._producer.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._producer = self._client = None
