"""The source interface: something that fills a store from a broker, on its own threads."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Source(ABC):
    """A running connection to a broker. ``start`` returns once consuming has begun; the work
    happens on the source's threads. ``stop`` is graceful and idempotent: finish the batch in
    hand, acknowledge what was applied, close."""

    @abstractmethod
    def start(self) -> None:
        """Connect and begin consuming. Raises ``SourceError`` when the broker refuses."""

    @abstractmethod
    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop consuming and close; waits at most ``timeout_s`` for the workers."""
