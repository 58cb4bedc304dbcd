"""Heimdall: the latest window of every live stream, in memory, handed to models by reference."""

from heimdall.cluster.client import ClusterStore
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
from heimdall.models import Prediction, window_features
from heimdall.pipeline import Pipeline
from heimdall.remote import ClientTLS, GrpcServer, RemoteStore, ServerTLS, connect
from heimdall.schema import CountWindow, StreamSpec, TimeWindow
from heimdall.sinks import CallbackSink, PulsarSink, Sink
from heimdall.window import Window, WindowBatch, WindowStore
from heimdall.window.attach import AttachedStore, attach

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
    "GrpcServer",
    "HeimdallError",
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
    "Window",
    "WindowBatch",
    "WindowStore",
    "__version__",
    "attach",
    "connect",
    "window_features",
]
