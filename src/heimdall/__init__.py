"""Heimdall: the latest window of every live stream, in memory, handed to models by reference."""

from typing import TYPE_CHECKING, Any

from heimdall.errors import (
    AuthError,
    CapacityError,
    ConfigError,
    CorruptCheckpointError,
    FieldNotFoundError,
    HeimdallError,
    KeyNotFoundError,
    ModelError,
    NotOwnerError,
    RemoteError,
    SchemaError,
    SharedMemoryError,
    SourceError,
    StaleWindowError,
    StreamNotFoundError,
)
from heimdall.schema import CountWindow, StreamSpec, TimeWindow
from heimdall.window import Window, WindowBatch, WindowReader, WindowStore

if TYPE_CHECKING:
    from heimdall.cluster.client import ClusterStore
    from heimdall.models import Prediction, window_features
    from heimdall.offline import (
        HistoryReport,
        TopicHistory,
        TrainingWindows,
        replay,
        training_windows,
    )
    from heimdall.pipeline import Pipeline
    from heimdall.remote import ClientTLS, GrpcServer, RemoteStore, ServerTLS, connect
    from heimdall.remote.flight import FlightServer, FlightStore
    from heimdall.sinks import CallbackSink, PulsarSink, Sink
    from heimdall.window.attach import AttachedStore, attach

# imported on first use: the window store alone (``import heimdall``, a WindowStore) does
# not pay for gRPC, the Pulsar client or the configuration's models
_LAZY = {
    "ClusterStore": "heimdall.cluster.client",
    "Prediction": "heimdall.models", "window_features": "heimdall.models",
    "Pipeline": "heimdall.pipeline",
    "HistoryReport": "heimdall.offline", "TopicHistory": "heimdall.offline",
    "TrainingWindows": "heimdall.offline", "replay": "heimdall.offline",
    "training_windows": "heimdall.offline",
    "ClientTLS": "heimdall.remote", "GrpcServer": "heimdall.remote",
    "RemoteStore": "heimdall.remote", "ServerTLS": "heimdall.remote",
    "connect": "heimdall.remote",
    "FlightServer": "heimdall.remote.flight", "FlightStore": "heimdall.remote.flight",
    "CallbackSink": "heimdall.sinks", "PulsarSink": "heimdall.sinks", "Sink": "heimdall.sinks",
    "AttachedStore": "heimdall.window.attach", "attach": "heimdall.window.attach",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'heimdall' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "AttachedStore",
    "AuthError",
    "CallbackSink",
    "CapacityError",
    "ClientTLS",
    "ClusterStore",
    "ConfigError",
    "CorruptCheckpointError",
    "CountWindow",
    "FieldNotFoundError",
    "FlightServer",
    "FlightStore",
    "GrpcServer",
    "HeimdallError",
    "HistoryReport",
    "KeyNotFoundError",
    "ModelError",
    "NotOwnerError",
    "Pipeline",
    "Prediction",
    "PulsarSink",
    "RemoteError",
    "RemoteStore",
    "SchemaError",
    "ServerTLS",
    "SharedMemoryError",
    "Sink",
    "SourceError",
    "StaleWindowError",
    "StreamNotFoundError",
    "StreamSpec",
    "TimeWindow",
    "TopicHistory",
    "TrainingWindows",
    "Window",
    "WindowBatch",
    "WindowReader",
    "WindowStore",
    "__version__",
    "attach",
    "connect",
    "replay",
    "training_windows",
    "window_features",
]
