"""Reading a cluster: ``hd.connect(["n1:50051", "n2:50051"])`` returns a ``ClusterStore``
with the read methods of ``WindowStore``. A single-key read goes straight to the key's node
(the broker's key hash, the ranges the broker gave each node); a multi-key read fans out to the
nodes in parallel and comes back as one batch in request order. A node that no longer owns a
key says so and names the owner; the client then reads the routing table again and retries
once. So does a node that cannot be reached (its ranges move to the others).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from heimdall.cluster._hash import RANGE_SIZE, key_hash
from heimdall.cluster.ranges import Range, RoutingTable, unflatten
from heimdall.errors import ConfigError, KeyNotFoundError, NotOwnerError, RemoteError, shown
from heimdall.models.predictions import Prediction
from heimdall.remote.client import RemoteStore
from heimdall.window.reader import DEFAULT_AGGREGATES
from heimdall.window.view import Window, WindowBatch

T = TypeVar("T")
_RETRYABLE = (NotOwnerError, RemoteError)


class ClusterStore:
    """The read methods of ``WindowStore`` over every node of a cluster. Thread-safe.

    ``seeds``: one or more nodes' addresses; the others are learned from them (each node
    reports every node the broker knows). ``token``, ``tls``, ``timeout_s``: as ``connect``.
    Raises RemoteError if no seed answers as a Heimdall node.
    """

    def __init__(self, seeds: Sequence[str], *, token: str | None = None, tls: Any = None,
                 timeout_s: float = 10.0) -> None:
        if isinstance(seeds, str) or not seeds:
            raise ConfigError(f"a cluster needs one or more node addresses; received "
                              f"{shown(seeds)}")
        self._kw: dict[str, Any] = {"token": token, "tls": tls, "timeout_s": timeout_s}
        self._seeds = list(seeds)
        self._remotes: dict[str, RemoteStore] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="heimdall-cluster")
        self.table = RoutingTable({})
        self.nodes: dict[str, str] = {}  # address -> node name
        self.ranges: dict[str, dict[str, list[Range]]] = {}  # node name -> stream -> ranges
        self._failed: set[str] = set()  # addresses that could not be reached lately
        self.refresh()

    # ---- routing --------------------------------------------------------------------------

    def _remote(self, address: str) -> RemoteStore:
        with self._lock:
            r = self._remotes.get(address)
        if r is None:
            r = RemoteStore(address, **self._kw)
            with self._lock:
                r = self._remotes.setdefault(address, r)
        return r

    def refresh(self) -> None:
        """Read the routing table again, from the first node (known or seed) that answers."""
        failures = []
        candidates = list(dict.fromkeys([*self.nodes, *self._seeds]))
        # a node that failed lately is asked last: connecting to a dead one waits timeout_s
        candidates.sort(key=lambda a: a in self._failed)
        for address in candidates:
            try:
                info = self._remote(address).cluster_info()
            except RemoteError as exc:
                failures.append(f"{address}: {exc}")
                self._failed.add(address)
                self._drop(address)
                continue
            self._failed.discard(address)
            if info.range_size != RANGE_SIZE:
                raise RemoteError(f"{address} hashes keys into {info.range_size} ranges; this "
                                  f"client into {RANGE_SIZE}: versions differ")
            streams: dict[str, list[tuple[str, Any]]] = {}
            per_node: dict[str, dict[str, list[Range]]] = {}
            for node in info.nodes:
                for stream, ranges in node.ranges.items():
                    rs = unflatten(list(ranges.bounds))
                    streams.setdefault(stream, []).append((node.address, rs))
                    per_node.setdefault(node.name, {})[stream] = rs
            self.table = RoutingTable(streams)
            self.nodes = {n.address: n.name for n in info.nodes}
            self.ranges = per_node
            for gone in set(self._remotes) - set(self.nodes):
                self._drop(gone)  # a node that left: its connection is not kept
            return
        raise RemoteError("no Heimdall node answered: " + "; ".join(failures))

    def _drop(self, address: str) -> None:
        with self._lock:
            r = self._remotes.pop(address, None)
        if r is not None:
            r.close()

    def owner(self, stream: str, key: str | int) -> str:
        """The address of the node that owns ``key`` of ``stream`` (the table read last)."""
        address = self.table.owner(stream, key)
        if address is None:
            if stream not in self.table.streams:
                from heimdall.errors import StreamNotFoundError

                raise StreamNotFoundError(f"no stream {shown(stream)}; streams are "
                                          f"{self.table.streams}")
            raise RemoteError(f"stream {stream!r}, key {shown(key)} (hash "
                              f"{key_hash(key)}): no node owns it right now", "UNAVAILABLE")
        return address

    def _routed(self, stream: str, key: str | int, call: Callable[[RemoteStore], T]) -> T:
        """``call`` on the key's node; on a refusal (not the owner) or a node gone, the table
        is read again and the call tried once more."""
        try:
            return call(self._remote(self.owner(stream, key)))
        except _RETRYABLE as exc:
            if isinstance(exc, RemoteError) and not isinstance(exc, NotOwnerError) \
                    and exc.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            self.refresh()
            return call(self._remote(self.owner(stream, key)))

    def _by_owner(self, stream: str, keys: Sequence[Any]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self.owner(stream, key), []).append(i)
        return groups

    def _fan_out(self, stream: str, keys: Sequence[Any],
                 call: Callable[[RemoteStore, list[Any]], T]) -> list[tuple[list[int], T]]:
        """``call(node, its keys)`` on every owner at once; (indices, result) per node."""
        for attempt in (0, 1):
            groups = self._by_owner(stream, keys)
            try:  # connecting to a node that died is a refusal like any other: re-read
                futures = [(idx, self._pool.submit(call, self._remote(a),
                                                   [keys[i] for i in idx]))
                           for a, idx in groups.items()]
                return [(idx, f.result()) for idx, f in futures]
            except _RETRYABLE as exc:
                if attempt or (not isinstance(exc, NotOwnerError)
                               and exc.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")):
                    raise
                self.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- the reader's methods -------------------------------------------------------------

    def window(self, stream: str, key: str | int) -> Window:
        """One key's window, from its node (an owned, consistent copy)."""
        return self._routed(stream, key, lambda r: r.window(stream, key))

    def windows(self, stream: str, keys: Sequence[str | int], *, rows: int | None = None,
                seconds: float | None = None) -> WindowBatch:
        """Many keys' windows, read from their nodes in parallel, as one batch in ``keys``'
        order."""
        keys = list(keys)
        parts = self._fan_out(stream, keys, lambda r, ks: r.windows(stream, ks, rows=rows,
                                                                     seconds=seconds))
        if not parts:
            return self._remote(next(iter(self.nodes))).windows(stream, [], rows=rows,
                                                                seconds=seconds)
        first = parts[0][1]
        B = len(keys)
        values = np.zeros((B, *first.values.shape[1:]), dtype=first.values.dtype)
        ts = np.zeros((B, first.ts_ns.shape[1]), dtype=np.int64)
        lengths = np.zeros(B, dtype=first.lengths.dtype)
        found = np.zeros(B, dtype=bool)
        for idx, batch in parts:
            values[idx] = batch.values
            ts[idx] = batch.ts_ns
            lengths[idx] = batch.lengths
            found[idx] = batch.found
        return WindowBatch(stream, keys, first.fields, values, ts, lengths, found)

    def aggregate(self, stream: str, keys: str | int | Sequence[str | int],
                  aggs: Iterable[str] = DEFAULT_AGGREGATES, *,
                  rows: int | None = None, seconds: float | None = None
                  ) -> dict[str, np.ndarray]:
        """As ``WindowStore.aggregate``: one key's (F,) arrays, or (B, F) for a list."""
        aggs = list(aggs)
        if isinstance(keys, (str, int)):
            key = keys
            return self._routed(stream, key, lambda r: r.aggregate(stream, key, aggs,
                                                                   rows=rows, seconds=seconds))
        keys = list(keys)
        parts = self._fan_out(stream, keys, lambda r, ks: r.aggregate(stream, ks, aggs,
                                                                       rows=rows,
                                                                       seconds=seconds))
        out: dict[str, np.ndarray] = {}
        for idx, got in parts:
            for name, arr in got.items():
                if name not in out:
                    out[name] = np.empty((len(keys), *arr.shape[1:]), dtype=arr.dtype)
                out[name][idx] = arr
        return out

    def keys(self, stream: str) -> list[Any]:
        """Every key of ``stream`` on every node (each node lists the keys it owns)."""
        out: list[Any] = []
        for address in list(self.nodes):
            out.extend(self._remote(address).keys(stream))
        return out

    def __contains__(self, item: tuple[str, Any]) -> bool:
        stream, key = item
        try:
            return self._routed(stream, key, lambda r: (stream, key) in r)
        except KeyNotFoundError:
            return False

    def stats(self) -> dict[str, Any]:
        """The store stats of every node, summed per stream (``nodes``: each node's own)."""
        per_node = {self.nodes[a]: self._remote(a).stats() for a in list(self.nodes)}
        streams: dict[str, dict[str, Any]] = {}
        for st in per_node.values():
            for name, s in st.get("streams", {}).items():
                agg = streams.setdefault(name, dict.fromkeys(
                    ("keys", "max_keys", "events", "evictions", "memory_bytes",
                     "memory_used_bytes"), 0))
                for k in agg:
                    agg[k] += int(s.get(k, 0))
        return {"streams": streams, "nodes": per_node,
                "memory_bytes": sum(int(s.get("memory_bytes", 0)) for s in per_node.values()),
                "memory_used_bytes": sum(int(s.get("memory_used_bytes", 0))
                                         for s in per_node.values())}

    def server_stats(self) -> dict[str, Any]:
        """Each node's ``server_stats()``, by node name."""
        return {self.nodes[a]: self._remote(a).server_stats() for a in list(self.nodes)}

    def prediction(self, model: str, key: str | int) -> Prediction:
        """A model's newest prediction for ``key``, from the node that owns the key."""
        tried: set[str] = set()
        for stream in self.table.streams:
            address = self.table.owner(stream, key)
            if address is None or address in tried:
                continue
            tried.add(address)
            try:
                return self._remote(address).prediction(model, key)
            except KeyNotFoundError:
                continue
        raise KeyNotFoundError(f"no prediction of model {shown(model)} for key {shown(key)} "
                               f"on its node(s) {sorted(tried)}")

    def close(self) -> None:
        """Close every connection. Idempotent."""
        for address in list(self._remotes):
            self._drop(address)
        self._pool.shutdown(wait=False)

    def __enter__(self) -> ClusterStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ClusterStore nodes={sorted(self.nodes.values())}>"
