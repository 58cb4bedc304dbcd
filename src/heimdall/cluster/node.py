"""This process as a node of a cluster: its name and address, and the routing table read from
the broker (who owns which key-hash ranges of each stream), refreshed as it changes.

Nodes subscribe with the same configuration to one Key_Shared subscription; each consumer
carries its node's name and gRPC address as consumer metadata, so the broker's own report of
the subscription (its admin API) says which node owns which ranges. A node never asks another.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from heimdall.cluster._admin import ADDRESS, FLIGHT, NODE, SETTINGS, subscription_consumers
from heimdall.cluster._hash import RANGE_SIZE, key_hash
from heimdall.cluster.ranges import Range, RoutingTable, covers, merge
from heimdall.config import ClusterConfig, StreamConfig
from heimdall.errors import ConfigError


@dataclass(frozen=True)
class NodeView:
    """One node as the broker reports it: its name, address and ranges per stream, and its
    Arrow Flight location if it serves Flight."""

    name: str
    address: str
    ranges: dict[str, list[Range]]
    flight: str | None = None


@dataclass(frozen=True)
class ClusterView:
    """Every node of the cluster at one moment, and the routing table built from them."""

    nodes: list[NodeView]
    table: RoutingTable
    read_at: float


def shared_settings(streams: Sequence[StreamConfig]) -> dict[str, Any]:
    """What every node of a cluster must share, per stream: topic, key, time, fields, dtype,
    window (a node with another window size would hold other windows for the keys it takes
    over)."""
    return {s.name: {"topic": s.topic, "key": s.key, "key_from": s.key_from, "time": s.time,
                     "time_from": s.time_from, "time_unit": s.time_unit,
                     "fields": list(s.fields), "dtype": s.dtype,
                     "window": repr(s.window.window()),
                     "allowed_lateness_s": s.allowed_lateness_s, "nan": s.nan}
            for s in streams}


def config_fingerprint(streams: Sequence[StreamConfig]) -> str:
    """A short digest of ``shared_settings``."""
    data = json.dumps(shared_settings(streams), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def describe_difference(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    """The first settings that differ, said plainly.

    >>> describe_difference({"s": {"window": "CountWindow(n=8)"}},
    ...                     {"s": {"window": "CountWindow(n=16)"}})
    "stream 's' window: 'CountWindow(n=16)' there, 'CountWindow(n=8)' here"
    """
    if set(mine) != set(theirs):
        return f"streams {sorted(theirs)} there, {sorted(mine)} here"
    for name in sorted(mine):
        for key in sorted(set(mine[name]) | set(theirs[name])):
            a, b = mine[name].get(key), theirs[name].get(key)
            if a != b:
                return f"stream {name!r} {key}: {b!r} there, {a!r} here"
    return "no difference"


class ClusterNode:
    """This node: ``view()`` reads the cluster from the broker (cached for ``max_age_s``)."""

    def __init__(self, config: ClusterConfig, subscription: str,
                 streams: Sequence[StreamConfig], address: str,
                 flight: str | None = None) -> None:
        self.config = config
        self.name = config.node
        self.address = address
        self.flight = flight
        self.subscription = subscription
        self.topics = {s.name: s.topic for s in streams}
        self.fingerprint = config_fingerprint(streams)
        self.settings = shared_settings(streams)
        self._view: ClusterView | None = None
        self._lock = threading.Lock()

    @property
    def consumer_properties(self) -> dict[str, str]:
        """The consumer metadata that names this node to the broker, and so to everyone."""
        props = {NODE: self.name, ADDRESS: self.address, SETTINGS: json.dumps(self.settings)}
        if self.flight:
            props[FLIGHT] = self.flight
        return props

    def check_peers(self) -> None:
        """ConfigError naming the difference when a node already in the cluster keeps its
        streams under other settings (checked before this node subscribes)."""
        for stream, topic in self.topics.items():
            for c in subscription_consumers(self.config.admin_url, topic, self.subscription):
                other = c.metadata.get(SETTINGS)
                name = c.metadata.get(NODE)
                if not other or not name or name == self.name:
                    continue
                theirs = json.loads(other)
                if theirs != self.settings:
                    raise ConfigError(
                        f"node {name!r} of the cluster (subscription {self.subscription!r} "
                        f"on {topic!r}) keeps its streams under other settings: "
                        f"{describe_difference(self.settings, theirs)}; every node must share "
                        f"the [[streams]] settings (stream {stream!r} was checked)")

    def consumer_name(self, stream: str, index: int) -> str:
        return f"heimdall-{self.name}-{stream}-{index}"

    def view(self, max_age_s: float = 0.5) -> ClusterView:
        """The cluster as the broker reports it now (at most ``max_age_s`` old). Raises
        SourceError when the broker's admin API cannot be read."""
        with self._lock:
            v = self._view
            if v is not None and time.monotonic() - v.read_at <= max_age_s:
                return v
            nodes: dict[str, tuple[str, dict[str, list[Range]]]] = {}
            flights: dict[str, str] = {}
            for stream, topic in self.topics.items():
                for c in subscription_consumers(self.config.admin_url, topic,
                                                self.subscription):
                    name, address = c.metadata.get(NODE), c.metadata.get(ADDRESS)
                    if not name or not address:
                        continue  # not a Heimdall node (a tool, a test consumer)
                    _addr, per_stream = nodes.setdefault(name, (address, {}))
                    per_stream.setdefault(stream, []).extend(c.ranges)
                    if c.metadata.get(FLIGHT):
                        flights[name] = c.metadata[FLIGHT]
            views = [NodeView(name, address, {s: merge(rs) for s, rs in per.items()},
                              flights.get(name))
                     for name, (address, per) in sorted(nodes.items())]
            table = RoutingTable({
                stream: [(n.address, n.ranges.get(stream, [])) for n in views]
                for stream in self.topics})
            self._view = ClusterView(views, table, time.monotonic())
            return self._view

    def owned(self, stream: str) -> list[Range]:
        """The ranges of ``stream`` this node owns now."""
        for n in self.view().nodes:
            if n.name == self.name:
                return n.ranges.get(stream, [])
        return []

    def owner(self, stream: str, key: str | int) -> str | None:
        """The address of the node that owns ``key`` now (None: no node does)."""
        return self.view().table.owner(stream, key)

    def owns_hash(self, stream: str, h: int) -> bool:
        return covers(self.owned(stream), h)


def whole_range() -> list[Range]:
    """Every hash: what a single node (no cluster) owns."""
    return [(0, RANGE_SIZE - 1)]


__all__ = ["ClusterNode", "ClusterView", "NodeView", "config_fingerprint", "key_hash",
           "whole_range"]
