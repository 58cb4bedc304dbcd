"""Heimdall: the latest window of every live stream, in memory, handed to models by reference."""

from heimdall.errors import (
    CapacityError,
    ConfigError,
    FieldNotFoundError,
    HeimdallError,
    KeyNotFoundError,
    SchemaError,
    SourceError,
    StaleWindowError,
    StreamNotFoundError,
)
from heimdall.pipeline import Pipeline
from heimdall.schema import CountWindow, StreamSpec, TimeWindow
from heimdall.window import Window, WindowBatch, WindowStore

__version__ = "0.1.0"

__all__ = [
    "CapacityError",
    "ConfigError",
    "CountWindow",
    "FieldNotFoundError",
    "HeimdallError",
    "KeyNotFoundError",
    "Pipeline",
    "SchemaError",
    "SourceError",
    "StaleWindowError",
    "StreamNotFoundError",
    "StreamSpec",
    "TimeWindow",
    "Window",
    "WindowBatch",
    "WindowStore",
    "__version__",
]
