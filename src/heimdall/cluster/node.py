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

from heimdall.cluster._admin import ADDRESS, NODE, subscription_consumers
from heimdall.cluster._hash import RANGE_SIZE, key_hash
from heimdall.cluster.ranges import Range, RoutingTable, covers, merge
from heimdall.config import ClusterConfig, StreamConfig


@dataclass(frozen=True)
class NodeView:
    """One node as the broker reports it: its name, address and ranges per stream."""

    name: str
    address: str
    ranges: dict[str, list[Range]]


@dataclass(frozen=True)
class ClusterView:
    """Every node of the cluster at one moment, and the routing table built from them."""

    nodes: list[NodeView]
    table: RoutingTable
    read_at: float


def config_fingerprint(streams: Sequence[StreamConfig]) -> str:
    """What every node of a cluster must share: streams, topics, keys, fields, dtypes, windows
    (a node with another window size would hold other windows for the keys it takes over)."""
    data = [s.model_dump(mode="json") for s in streams]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class ClusterNode:
    """This node: ``view()`` reads the cluster from the broker (cached for ``max_age_s``)."""

    def __init__(self, config: ClusterConfig, subscription: str,
                 streams: Sequence[StreamConfig], address: str) -> None:
        self.config = config
        self.name = config.node
        self.address = address
        self.subscription = subscription
        self.topics = {s.name: s.topic for s in streams}
        self.fingerprint = config_fingerprint(streams)
        self._view: ClusterView | None = None
        self._lock = threading.Lock()

    @property
    def consumer_properties(self) -> dict[str, str]:
        """The consumer metadata that names this node to the broker, and so to everyone."""
        return {NODE: self.name, ADDRESS: self.address, "heimdall-config": self.fingerprint}

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
            for stream, topic in self.topics.items():
                for c in subscription_consumers(self.config.admin_url, topic,
                                                self.subscription):
                    name, address = c.metadata.get(NODE), c.metadata.get(ADDRESS)
                    if not name or not address:
                        continue  # not a Heimdall node (a tool, a test consumer)
                    _addr, per_stream = nodes.setdefault(name, (address, {}))
                    per_stream.setdefault(stream, []).extend(c.ranges)
            views = [NodeView(name, address, {s: merge(rs) for s, rs in per.items()})
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
