"""Publishing to a broker from Heimdall's own tools: ``heimdall publish`` and
``Pipeline.publish`` (trying a pipeline, tests, docs). Production producers use their own
Pulsar client; this is the same client, with the settings Heimdall's tools want: batching,
blocking (never dropping) when the queue is full, one producer per topic."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from heimdall.errors import SourceError
from heimdall.sources.pulsar import map_pulsar_errors


class Publisher:
    """Producers on one client to ``url``. ``send`` is asynchronous; ``flush`` waits for the
    broker to confirm everything sent and raises SourceError naming the first failure.
    Thread-safe."""

    def __init__(self, url: str) -> None:
        import pulsar

        self.url = url
        self._client = pulsar.Client(url, operation_timeout_seconds=15,
                                     logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
        self._producers: dict[str, Any] = {}
        self._failed: list[str] = []
        self._lock = threading.Lock()
        self.sent = 0

    def _producer(self, topic: str) -> Any:
        with self._lock:
            producer = self._producers.get(topic)
            if producer is None:
                with map_pulsar_errors(f"creating a producer for {topic!r}", self.url):
                    producer = self._client.create_producer(
                        topic, block_if_queue_full=True, batching_enabled=True,
                        batching_max_publish_delay_ms=5)
                self._producers[topic] = producer
            return producer

    def send(self, topic: str, payload: bytes, key: str | None = None) -> None:
        """Send one message (asynchronously), with ``key`` as its message key."""
        import pulsar

        def done(res: Any, _mid: Any) -> None:
            if res != pulsar.Result.Ok:
                self._failed.append(f"{topic}: {res}")

        self._producer(topic).send_async(payload, done, partition_key=key)
        self.sent += 1

    def flush(self) -> None:
        """Wait until the broker has confirmed everything sent. Raises SourceError."""
        for topic, producer in list(self._producers.items()):
            with map_pulsar_errors(f"publishing to {topic!r}", self.url):
                producer.flush()
        if self._failed:
            raise SourceError(f"{len(self._failed)} message(s) not published at {self.url}: "
                              f"{self._failed[0]}")

    @property
    def failed(self) -> int:
        return len(self._failed)

    def close(self) -> None:
        """Flush what is pending, close. Idempotent."""
        for producer in self._producers.values():
            with contextlib.suppress(Exception):  # closing: failures were reported by flush
                producer.flush()
                producer.close()
        self._producers.clear()
        self._client.close()
