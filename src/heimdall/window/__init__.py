"""The window store: per-key ring buffers, zero-copy views, batched reads and aggregates."""

from heimdall.window.reader import DEFAULT_AGGREGATES, WindowReader
from heimdall.window.reads import AGGREGATES
from heimdall.window.store import WindowStore
from heimdall.window.view import Window, WindowBatch

__all__ = ["AGGREGATES", "DEFAULT_AGGREGATES", "Window", "WindowBatch", "WindowReader",
           "WindowStore"]
