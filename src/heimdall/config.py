"""Configuration: ``heimdall.toml`` as frozen pydantic-settings models.

Every key may be overridden from the environment with the ``HEIMDALL_`` prefix and ``__``
between levels, e.g. ``HEIMDALL_SOURCE__URL=pulsar://broker:6650`` or
``HEIMDALL_STORE__MAX_KEYS=5000``; the environment wins over the file.

>>> cfg = HeimdallConfig.model_validate({"streams": [{
...     "name": "sensors", "topic": "sensors", "key": "machine_id", "time": "ts",
...     "fields": ["temp", "rpm"], "window": {"count": 64}}]})
>>> cfg.source.url, cfg.streams[0].spec().window
('embedded', CountWindow(n=64))
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from heimdall.errors import ConfigError, HeimdallError
from heimdall.schema import CountWindow, NanPolicy, StreamSpec, TimeUnit, TimeWindow

SubscriptionType = Literal["key_shared", "failover", "exclusive", "shared"]
Format = Literal["json", "msgpack", "arrow"]
KeyFrom = Literal["payload", "message_key"]
TimeFrom = Literal["payload", "event_timestamp", "publish_timestamp", "arrival"]
InitialPosition = Literal["earliest", "latest"]
Dtype = Literal["float32", "float64", "int32", "int64"]
# "embedded", or one or more host:port of a Pulsar cluster (the client's service URL form)
_URL = r"^(embedded|pulsar(\+ssl)?://[^\s/:,]+(:\d{1,5})?(,[^\s/:,]+(:\d{1,5})?)*/?)$"
_ADDRESS = r"^[^\s]*:\d{1,5}$"  # host:port (host may be empty: all interfaces)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceConfig(_Section):
    """Where events come from (``[source]``)."""

    kind: Literal["pulsar"] = "pulsar"
    url: str = Field("embedded", pattern=_URL)
    subscription: str = "heimdall"
    subscription_type: SubscriptionType = "key_shared"
    workers: int = Field(2, ge=1, le=64)
    initial_position: InitialPosition = "earliest"
    receive_batch: int = Field(10_000, ge=1)
    receive_timeout_ms: int = Field(1, ge=1)
    receiver_queue_size: int = Field(25_000, ge=1)
    max_message_bytes: int = Field(1 << 20, ge=1)
    # messages remembered per stream to drop redeliveries; None: twice what can be
    # unacknowledged at once (``HeimdallConfig.dedup_horizon``)
    dedup_window: int | None = Field(None, ge=1000)
    data_dir: str = "heimdall-data"
    # the embedded broker's port on 127.0.0.1 (0: a free one; `heimdall publish -c` finds it)
    embedded_port: int = Field(0, ge=0, le=65535)
    # how long start-up waits for a broker that answers with a passing error (not reachable
    # yet, still holding the consumer of a process killed a moment ago), retrying with backoff
    connect_timeout_s: float = Field(60.0, gt=0)


class StoreConfig(_Section):
    """The window store (``[store]``). ``shared_memory = "NAME"`` places it in named POSIX
    shared memory, for ``hd.attach("NAME")`` in other processes on the host."""

    max_keys: int = Field(100_000, ge=1)
    idle_ttl_s: float | None = Field(None, gt=0)
    evict: bool = True
    shared_memory: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,200}$")


class WindowConfig(_Section):
    """``{ count = N }`` or ``{ seconds = S, max_rows = M }``."""

    count: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0)
    max_rows: int = Field(4096, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> WindowConfig:
        if (self.count is None) == (self.seconds is None):
            raise ValueError("give exactly one of count = N or seconds = S")
        return self

    def window(self) -> CountWindow | TimeWindow:
        """The schema object this section describes."""
        if self.count is not None:
            return CountWindow(self.count)
        assert self.seconds is not None
        return TimeWindow(self.seconds, self.max_rows)


class StreamConfig(_Section):
    """One ``[[streams]]`` entry: a topic, its decoding, and the stream it fills."""

    name: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    format: Format = "json"
    key: str | None = Field(None, min_length=1)  # required when key_from = "payload"
    key_from: KeyFrom = "payload"
    time: str | None = None
    time_from: TimeFrom | None = None
    time_unit: TimeUnit = "ms"
    fields: tuple[str, ...] = Field(min_length=1)
    dtype: Dtype = "float64"
    window: WindowConfig = WindowConfig(count=256)
    allowed_lateness_s: float = Field(0.0, ge=0)
    nan: NanPolicy = "reject"
    dead_letter_topic: str | None = None

    @model_validator(mode="after")
    def _check(self) -> StreamConfig:
        if self.key is None and self.key_from == "payload":
            raise ValueError("key is required: the payload field that holds each event's "
                             "entity key (e.g. key = \"machine_id\"), or key_from = "
                             "\"message_key\" to key by the message's key")
        if self.time_from is None:
            object.__setattr__(self, "time_from", "payload" if self.time else "arrival")
        if self.time_from == "payload" and not self.time:
            raise ValueError("time_from = 'payload' needs time = '<payload field>'")
        try:
            self.spec()
        except HeimdallError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic: ``dead_letter_topic`` or ``<topic>-heimdall-dlq``."""
        return self.dead_letter_topic or f"{self.topic}-heimdall-dlq"

    def spec(self) -> StreamSpec:
        """The ``StreamSpec`` of this stream."""
        return StreamSpec(
            name=self.name,
            key=self.key or "key",  # unused with key_from = "message_key"
            time=self.time if self.time_from == "payload" else None,
            fields=self.fields,
            dtype=self.dtype,
            window=self.window.window(),
            allowed_lateness_s=self.allowed_lateness_s,
            nan=self.nan,
            time_unit=self.time_unit,
        )


class ServerConfig(_Section):
    """What Heimdall serves (``[server]``); ``metrics = ""`` turns the endpoint off.

    ``grpc = "127.0.0.1:50051"`` starts the gRPC server (``host:0`` picks a free port);
    ``flight = "127.0.0.1:8815"`` the Arrow Flight server (bulk reads of windows, from any
    language; the same token and TLS), whose one reply is at most ``flight_max_reply_bytes``.
    ``token``: every call but health checks needs ``authorization: Bearer <token>`` (better
    set from the environment: ``HEIMDALL_SERVER__TOKEN``). ``tls_cert`` and ``tls_key`` (PEM
    files) turn TLS on; ``tls_client_ca`` also asks clients for a certificate it signed.
    """

    grpc: str | None = Field(None, pattern=_ADDRESS)
    flight: str | None = Field(None, pattern=_ADDRESS)
    flight_max_reply_bytes: int = Field(256 << 20, ge=1024)
    metrics: str | None = Field("127.0.0.1:9464", pattern=r"^$|" + _ADDRESS)
    token: SecretStr | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    max_message_bytes: int = Field(16 << 20, ge=1024)
    max_concurrent_rpcs: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("token is empty; give a secret or leave it unset")
        return self


class ClusterConfig(_Section):
    """A node of a cluster (``[cluster]``): many ``heimdall serve`` processes with the same
    configuration share the Key_Shared subscription, and the broker gives each its key-hash
    ranges. ``node``: this node's name, unique in the cluster. ``advertise``: the gRPC
    address other hosts reach it at (default ``server.grpc``). ``admin_url``: the broker's
    admin REST API (Pulsar's web service, e.g. ``http://broker:8080``), where every node and
    client reads who owns which ranges."""

    node: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    advertise: str | None = Field(None, pattern=_ADDRESS)
    admin_url: str = Field(pattern=r"^https?://\S+$")
    refresh_s: float = Field(1.0, gt=0)


class CheckpointConfig(_Section):
    """Checkpoints (``[checkpoint]``): on when the section is given (``enabled = false``
    turns them off). Every ``interval_s``, at shutdown, and early once ``max_pending``
    messages await acknowledgement (Pulsar stops dispatching to a consumer holding
    ``maxUnackedMessagesPerConsumer``, 50,000 by default), the store goes to ``dir``; the
    newest ``keep`` are kept. ``on_mismatch``: what to do at start with a checkpoint made under
    other stream settings ("refuse" to start, or "discard" it and start empty).
    ``on_corrupt``: what to do when the newest checkpoint fails verification: the broker
    already holds acknowledgements for what it covered, so "refuse" to start (the default),
    "use_older" (the newest that verifies; what later ones covered is lost) or
    "start_empty" (``heimdall serve --start-empty``)."""

    enabled: bool = True
    dir: str = "heimdall-state"
    interval_s: float = Field(10.0, gt=0)
    keep: int = Field(3, ge=1)
    max_pending: int = Field(20_000, ge=1)
    on_mismatch: Literal["refuse", "discard"] = "refuse"
    on_corrupt: Literal["refuse", "use_older", "start_empty"] = "refuse"


class ModelConfig(_Section):
    """One ``[[models]]`` entry: a model given by import path, its trigger and sink.

    ``path`` and ``features`` are ``"package.module:attribute"``; the attribute is a
    callable taking a ``WindowBatch``, an estimator, an ONNX session or a torch module (see
    ``heimdall.models.adapters``). ``topic``: publish predictions there (``PulsarSink``).
    """

    name: str = Field(min_length=1)
    stream: str = Field(min_length=1)
    path: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    version: str = "1"
    every: int | None = Field(None, ge=1)
    interval_s: float | None = Field(None, gt=0)
    max_batch: int = Field(512, ge=1)
    min_rows: int = Field(1, ge=1)
    features: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
    method: str | None = None
    topic: str | None = None
    processes: int = Field(1, ge=1, le=64)  # worker processes (needs store.shared_memory)

    @model_validator(mode="after")
    def _one_trigger(self) -> ModelConfig:
        if self.every is not None and self.interval_s is not None:
            raise ValueError("give every = N or interval_s = S, not both")
        return self


class HeimdallConfig(BaseSettings):
    """The whole of ``heimdall.toml``."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="HEIMDALL_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    source: SourceConfig = SourceConfig()
    store: StoreConfig = StoreConfig()
    streams: tuple[StreamConfig, ...] = Field(min_length=1)
    models: tuple[ModelConfig, ...] = ()
    server: ServerConfig = ServerConfig()
    # None: no [checkpoint] section (checkpoints off); a section given, even empty: on
    checkpoint: CheckpointConfig | None = None
    cluster: ClusterConfig | None = None

    @model_validator(mode="after")
    def _unique(self) -> HeimdallConfig:
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names repeat: {names}")
        models = [m.name for m in self.models]
        if len(set(models)) != len(models):
            raise ValueError(f"model names repeat: {models}")
        for m in self.models:
            if m.stream not in names:
                raise ValueError(f"model {m.name!r} reads stream {m.stream!r}, which is not "
                                 f"configured; streams are {names}")
        topics = [s.topic for s in self.streams]
        if len(set(topics)) != len(topics):
            raise ValueError(f"two streams read the same topic: {topics}")
        if self.cluster is not None:
            if self.source.url == "embedded":
                raise ValueError("a cluster needs a real Pulsar broker: set source.url "
                                 "(the embedded one has no admin API and serves one process)")
            if self.source.subscription_type != "key_shared":
                raise ValueError(f"a cluster shares a key_shared subscription; "
                                 f"source.subscription_type is "
                                 f"{self.source.subscription_type!r}")
            if not self.server.grpc:
                raise ValueError("a cluster node serves its keys over gRPC: set server.grpc")
            if self.active_checkpoint is not None:
                raise ValueError("a cluster keeps no checkpoints: its durable state is the "
                                 "broker's retained history, which a node replays for the "
                                 "keys it takes over (docs/cluster.md); remove [checkpoint]")
        src = self.source
        in_flight = src.workers * src.receiver_queue_size
        pending = self._max_pending
        if src.dedup_window is not None and src.dedup_window < in_flight + pending:
            raise ValueError(
                f"source.dedup_window = {src.dedup_window} is below what can be unacknowledged "
                f"at once (workers x receiver_queue_size = {src.workers} x "
                f"{src.receiver_queue_size}" + (f", + checkpoint.max_pending {pending}"
                                                 if pending else "")
                + f" = {in_flight + pending}): a redelivery could come back after its id was "
                f"forgotten and be applied twice; raise dedup_window or lower the others")
        return self

    @property
    def active_checkpoint(self) -> CheckpointConfig | None:
        """``[checkpoint]`` when checkpoints run: the section is given and not turned off."""
        ck = self.checkpoint
        return ck if ck is not None and ck.enabled else None

    @property
    def _max_pending(self) -> int:
        ck = self.active_checkpoint
        return ck.max_pending if ck is not None else 0

    @property
    def dedup_horizon(self) -> int:
        """Messages each stream remembers to drop redeliveries: ``source.dedup_window``, or by
        default twice what can be unacknowledged at once (workers x receiver_queue_size, +
        checkpoint.max_pending): 100,000 with the defaults."""
        src = self.source
        if src.dedup_window is not None:
            return src.dedup_window
        return 2 * (src.workers * src.receiver_queue_size + self._max_pending)

    @property
    def checkpoints_on(self) -> bool:
        """Checkpoints are on when ``[checkpoint]`` is given and not turned off."""
        return self.active_checkpoint is not None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # the environment overrides the file

    def store_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``WindowStore`` from ``[store]``."""
        return {
            "max_keys": self.store.max_keys,
            "idle_ttl_s": self.store.idle_ttl_s,
            "evict": self.store.evict,
            "shared_memory": self.store.shared_memory,
        }


def load_config(path: str | os.PathLike[str]) -> HeimdallConfig:
    """Read and validate a ``heimdall.toml``; raises ``ConfigError`` naming the bad key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return build_config(data, origin=str(p))


def build_config(data: dict[str, Any], origin: str = "config") -> HeimdallConfig:
    """Validate a configuration given as a dict (the parsed TOML). The file's own values are
    checked strictly first (``count = "256"`` is a string, not a count); ``HEIMDALL_*``
    environment overrides, which are strings by nature, are then read as pydantic reads
    them, and a problem in one names the variable."""
    strict = _strict_problems(data, origin)
    if strict is not None:
        raise ConfigError(strict)
    try:
        return HeimdallConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, data, origin)) from None


def _strict_problems(data: dict[str, Any], origin: str) -> str | None:
    """Each section of the file validated alone, in strict mode (no str -> int coercion):
    the problems, or None."""
    errors: list[Any] = []
    for name, value in data.items():
        field = HeimdallConfig.model_fields.get(name)
        if field is None or field.annotation is None:
            continue  # an unknown key: the full validation names it
        try:
            TypeAdapter(field.annotation).validate_json(json.dumps(value, default=str),
                                                        strict=True)
        except ValidationError as exc:
            errors += [{**e, "loc": (name, *e["loc"])} for e in exc.errors(include_url=False)]
        except TypeError:  # pragma: no cover (TOML holds only JSON-able values)
            continue
    return _describe(errors, data, origin) if errors else None


def _explain(exc: ValidationError, data: dict[str, Any], origin: str) -> str:
    return _describe(list(exc.errors(include_url=False)), data, origin)


def _describe(errors: list[Any], data: dict[str, Any], origin: str) -> str:
    locs = [tuple(e["loc"]) for e in errors]
    # a container also reports a failure of one of its items: keep the item's error only
    errors = [
        e for e in errors
        if not any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == tuple(e["loc"]) for o in locs)
    ]
    lines = [f"{origin}: {len(errors)} problem(s)"]
    for err in errors:
        where = _location(err["loc"], data)
        shown = err["type"] != "missing" and not isinstance(err.get("input"), (dict, list))
        received = f" (received {err.get('input')!r})" if shown else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            received = ""
        env = _env_override(err["loc"])
        if env is not None:
            where = f"{where} (from the environment: {env})"
        lines.append(f"  {where}: {msg}{received}")
    return "\n".join(lines)


def _env_override(loc: tuple[int | str, ...]) -> str | None:
    """The ``HEIMDALL_*`` variable that set the value at ``loc``, if one did."""
    parts: list[str] = []
    found = None
    for part in loc:
        if isinstance(part, int):
            break
        parts.append(str(part).upper())
        name = "HEIMDALL_" + "__".join(parts)
        if any(k.upper() == name for k in os.environ):
            found = name
    return found


def _location(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            name = None
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                name = node[part].get("name")
            if name:
                out += f" ({name!r})"
        else:
            out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int)
            and part < len(node) else None
        )
    return out or "(top level)"
