"""The window store: per-key ring buffers, zero-copy views, batched reads and aggregates."""

from heimdall.window.store import AGGREGATES, WindowStore
from heimdall.window.view import Window, WindowBatch

__all__ = ["AGGREGATES", "Window", "WindowBatch", "WindowStore"]
