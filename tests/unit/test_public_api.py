import heimdall as hd


def test_public_api_is_pinned() -> None:
    assert hd.__all__ == sorted(hd.__all__)
    assert set(hd.__all__) == {
        "AttachedStore",
        "AuthError",
        "CallbackSink",
        "CapacityError",
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
        "ClientTLS",
        "ClusterStore",
        "NotOwnerError",
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
    }


def test_errors_match_builtins() -> None:
    assert issubclass(hd.SchemaError, ValueError)
    assert issubclass(hd.KeyNotFoundError, KeyError)
    assert issubclass(hd.StreamNotFoundError, KeyError)
    assert issubclass(hd.FieldNotFoundError, KeyError)
    for name in hd.__all__:
        obj = getattr(hd, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, hd.HeimdallError)
    assert str(hd.KeyNotFoundError("no key 'a'")) == "no key 'a'"
