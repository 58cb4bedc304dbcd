"""The sink interface, and the callback sink for user code.

A runner calls ``emit`` from its own thread, once per scored batch, with that batch's
predictions (a ``PredictionBatch``); a sink must not keep it. ``open`` gets the pipeline's
broker URL before the first ``emit``; ``close`` flushes. An exception from ``emit`` is
logged and counted by the runner, and the flow goes on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the models package imports this module
    from heimdall.models.predictions import Prediction


class Sink(ABC):
    """Where a model's predictions go."""

    def open(self, url: str | None) -> None:  # noqa: B027  (optional hook)
        """Connect (``url`` is the pipeline's broker). Default: nothing to do."""

    @abstractmethod
    def emit(self, predictions: Sequence[Prediction]) -> None:
        """Deliver one batch of predictions. May block (back-pressure)."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Flush and disconnect. Default: nothing to do."""


class CallbackSink(Sink):
    """Calls ``fn(predictions)`` for every scored batch, on the runner's thread.

    >>> got = []
    >>> sink = CallbackSink(got.extend)
    """

    def __init__(self, fn: Callable[[Sequence[Prediction]], object]) -> None:
        self.fn = fn

    def emit(self, predictions: Sequence[Prediction]) -> None:
        self.fn(predictions)
