"""Every exception Heimdall raises.

::

    HeimdallError
    ├── ConfigError(ValueError)          a configuration or spec is invalid
    ├── SchemaError(ValueError)          input does not fit a stream's schema
    │   └── FieldNotFoundError(KeyError) a field name the stream does not have
    ├── StreamNotFoundError(KeyError)    a stream name the store does not hold
    ├── KeyNotFoundError(KeyError)       an entity key the store does not hold
    ├── CapacityError                    the store is full and eviction is off
    ├── StaleWindowError                 a view was overwritten before it could be copied
    ├── CorruptCheckpointError           a checkpoint file failed verification
    ├── SharedMemoryError                a shared-memory store is gone, or its writer died
    ├── SourceError                      a broker cannot be reached or started
    ├── ModelError                       a model returned output of the wrong shape or dtype
    ├── RemoteError(ConnectionError)     a remote Heimdall cannot be reached or failed a call
    │   └── NotOwnerError                a cluster node was asked for a key another node owns
    └── AuthError(PermissionError)       a remote Heimdall refused the call's credentials
"""

from __future__ import annotations

SHOWN_CHARS = 120


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a message echoes a
    bounded prefix of what it received (a 100 KB key must not make a 100 KB message).

    >>> shown("k" * 500)[-24:]
    'kkkk... (502 characters)'
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class HeimdallError(Exception):
    """Root of every Heimdall exception."""


class _PlainKeyError(KeyError):
    """A KeyError whose str() is the message, not its repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(HeimdallError, ValueError):
    """A configuration or stream spec is invalid."""


class SchemaError(HeimdallError, ValueError):
    """Input does not fit the stream's schema (shape, dtype, fields, key or time)."""


class FieldNotFoundError(SchemaError, _PlainKeyError):
    """A field name the stream does not have."""

    def __str__(self) -> str:
        return _PlainKeyError.__str__(self)


class StreamNotFoundError(HeimdallError, _PlainKeyError):
    """A stream name the store does not hold."""


class KeyNotFoundError(HeimdallError, _PlainKeyError):
    """An entity key the store does not hold (never seen, evicted or expired)."""


class CapacityError(HeimdallError):
    """A new key arrived while the store holds max_keys keys and eviction is off."""


class StaleWindowError(HeimdallError):
    """A zero-copy view was overwritten by the writer before it could be copied."""


class CorruptCheckpointError(HeimdallError):
    """A checkpoint file failed verification (truncated, altered, or not a checkpoint)."""


class SharedMemoryError(HeimdallError):
    """A shared-memory store does not exist, is not Heimdall's, or its writer has gone."""


class SourceError(HeimdallError):
    """A broker cannot be reached, started or subscribed to."""


class ModelError(HeimdallError):
    """A model returned output of the wrong shape or dtype, or cannot be loaded."""


class RemoteError(HeimdallError, ConnectionError):
    """A remote Heimdall cannot be reached, timed out, or failed a call (the gRPC status
    code is in ``code``)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class NotOwnerError(RemoteError):
    """A cluster node was asked for a key whose hash range the broker gives another node
    (``owner``: that node's address, when known)."""

    def __init__(self, message: str, owner: str | None = None) -> None:
        super().__init__(message, "FAILED_PRECONDITION")
        self.owner = owner


class AuthError(HeimdallError, PermissionError):
    """A remote Heimdall refused the call: no token, a wrong token or a bad certificate."""
