"""What the broker says about a subscription's consumers, from Pulsar's admin REST API: each
consumer's name, metadata (a Heimdall node puts its name and gRPC address there) and the
key-hash ranges the broker gives it. This is the cluster's one source of truth for who owns
which keys: nodes never agree among themselves."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from heimdall.cluster.ranges import Range, parse_ranges
from heimdall.errors import SourceError

NODE = "heimdall-node"  # consumer metadata: the node's name
ADDRESS = "heimdall-grpc"  # consumer metadata: where the node's gRPC server is reached
SETTINGS = "heimdall-streams"  # consumer metadata: the stream settings every node must share
FLIGHT = "heimdall-flight"  # consumer metadata: the node's Arrow Flight location, if it serves


@dataclass(frozen=True)
class ConsumerInfo:
    """One consumer of a subscription, as the broker reports it."""

    name: str
    metadata: dict[str, str] = field(default_factory=dict)
    ranges: list[Range] = field(default_factory=list)


def stats_url(admin_url: str, topic: str) -> str:
    """The admin REST path of a (non-partitioned) topic's stats.

    >>> stats_url("http://b:8080", "persistent://public/default/sensors")
    'http://b:8080/admin/v2/persistent/public/default/sensors/stats'
    """
    domain, sep, rest = topic.partition("://")
    if not sep:
        domain, rest = "persistent", f"public/default/{topic}"
    parts = rest.split("/")
    if len(parts) != 3:
        raise SourceError(f"topic {topic!r}: expected tenant/namespace/name")
    path = "/".join(urllib.parse.quote(p, safe="") for p in parts)
    return f"{admin_url.rstrip('/')}/admin/v2/{domain}/{path}/stats"


def subscription_consumers(admin_url: str, topic: str, subscription: str,
                           timeout_s: float = 5.0) -> list[ConsumerInfo]:
    """The consumers of ``subscription`` on ``topic`` now. Raises SourceError naming the URL
    when the admin API cannot be read."""
    url = stats_url(admin_url, topic)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            stats = json.load(reply)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # no such topic yet: nobody consumes it
            return []
        raise SourceError(f"the broker's admin API at {url} answered {exc.code} "
                          f"{exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read the broker's admin API at {url}: {exc}") from exc
    sub = (stats.get("subscriptions") or {}).get(subscription) or {}
    return [ConsumerInfo(str(c.get("consumerName", "")),
                         {str(k): str(v) for k, v in (c.get("metadata") or {}).items()},
                         _ranges(c))
            for c in sub.get("consumers") or []]


def _ranges(consumer: dict[str, object]) -> list[Range]:
    """Pulsar 4 reports ``keyHashRangeArrays`` ([[start, end], ...]); older brokers
    ``keyHashRanges`` (["[start, end]", ...])."""
    arrays = consumer.get("keyHashRangeArrays")
    if isinstance(arrays, list):
        return sorted((int(a), int(b)) for a, b in arrays)
    strings = consumer.get("keyHashRanges")
    return parse_ranges(strings) if isinstance(strings, list) else []
