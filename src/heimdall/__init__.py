"""Heimdall: the latest window of every live stream, in memory, handed to models by reference."""

from heimdall.errors import (
    CapacityError,
    ConfigError,
    FieldNotFoundError,
    HeimdallError,
    KeyNotFoundError,
    ModelError,
    SchemaError,
    SourceError,
    StaleWindowError,
    StreamNotFoundError,
)
from heimdall.models import Prediction, window_features
from heimdall.pipeline import Pipeline
from heimdall.schema import CountWindow, StreamSpec, TimeWindow
from heimdall.sinks import CallbackSink, PulsarSink, Sink
from heimdall.window import Window, WindowBatch, WindowStore

__version__ = "0.1.0"

__all__ = [
    "CallbackSink",
    "CapacityError",
    "ConfigError",
    "CountWindow",
    "FieldNotFoundError",
    "HeimdallError",
    "KeyNotFoundError",
    "ModelError",
    "Pipeline",
    "Prediction",
    "PulsarSink",
    "SchemaError",
    "Sink",
    "SourceError",
    "StaleWindowError",
    "StreamNotFoundError",
    "StreamSpec",
    "TimeWindow",
    "Window",
    "WindowBatch",
    "WindowStore",
    "__version__",
    "window_features",
]
