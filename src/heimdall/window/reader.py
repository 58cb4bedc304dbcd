"""The reader contract: the read methods every window reader answers, with their types and
defaults written once. ``WindowStore`` (in-process), ``AttachedStore`` (shared memory, from
another process), ``RemoteStore`` (gRPC) and ``ClusterStore`` (a cluster's nodes) satisfy it;
``tests/contract/test_readers.py`` holds each to it, signature and answers. Code that only
reads windows can take any of them:

>>> import heimdall as hd
>>> def latest(reader: hd.WindowReader, key: str) -> float:
...     return float(reader.window("s", key).values[-1, 0])
>>> store = hd.WindowStore([hd.StreamSpec("s", fields=["x"])], max_keys=4)
>>> store.append("s", "a", [1.5])
>>> isinstance(store, hd.WindowReader), latest(store, "a")
(True, 1.5)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from heimdall.window.view import Window, WindowBatch

# what ``aggregate`` computes when not told (every aggregate but ``sum``)
DEFAULT_AGGREGATES: tuple[str, ...] = ("count", "mean", "std", "min", "max", "last")


@runtime_checkable
class WindowReader(Protocol):
    """Reads of windows, wherever they are held."""

    def window(self, stream: str, key: str | int) -> Window:
        """The key's window (KeyNotFoundError if the key is not held)."""
        ...

    def windows(self, stream: str, keys: Sequence[str | int], *, rows: int | None = None,
                seconds: float | None = None) -> WindowBatch:
        """Consistent copies of many keys' windows, right-aligned in one (B, W, F) array."""
        ...

    def aggregate(self, stream: str, keys: str | int | Sequence[str | int],
                  aggs: Iterable[str] = DEFAULT_AGGREGATES, *, rows: int | None = None,
                  seconds: float | None = None) -> dict[str, np.ndarray]:
        """Per-field aggregates over each key's window: ``{agg: (F,)}`` for one key,
        ``{agg: (B, F)}`` for a list."""
        ...

    def keys(self, stream: str) -> list[Any]:
        """The keys the stream holds."""
        ...

    def __contains__(self, item: tuple[str, Any]) -> bool:
        """``(stream, key) in reader``."""
        ...

    def stats(self) -> dict[str, Any]:
        """Per-stream counts (keys, events, evictions, ...)."""
        ...
