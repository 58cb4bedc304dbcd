"""Key-hash ranges and the routing table built from them: which node owns a key.

A Key_Shared subscription gives each consumer inclusive ranges of the key-hash space
``[0, RANGE_SIZE)``; a node owns the union of its consumers' ranges. The table maps a hash to
its node with one binary search.

>>> t = RoutingTable({"s": [("a:1", [(0, 32767)]), ("b:1", [(32768, 65535)])]})
>>> t.owner_of_hash("s", 100), t.owner_of_hash("s", 40000), t.owner_of_hash("s", 70000)
('a:1', 'b:1', None)
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence

from heimdall.cluster._hash import RANGE_SIZE, key_hash
from heimdall.errors import ConfigError

Range = tuple[int, int]  # inclusive
_PULSAR_RANGE = re.compile(r"^\s*\[?\s*(\d+)\s*,\s*(\d+)\s*\]?\s*$")


def parse_ranges(items: Iterable[str]) -> list[Range]:
    """Pulsar's ``keyHashRanges`` strings (``"[0, 16383]"``) as (start, end) pairs.

    >>> parse_ranges(["[0, 9]", "[20, 29]"])
    [(0, 9), (20, 29)]
    """
    out = []
    for item in items:
        m = _PULSAR_RANGE.match(item)
        if m is None:
            raise ConfigError(f"not a key-hash range: {item!r}")
        out.append((int(m.group(1)), int(m.group(2))))
    return sorted(out)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, adjacent and overlapping ranges joined.

    >>> merge([(10, 19), (0, 9), (30, 39)])
    [(0, 19), (30, 39)]
    """
    out: list[Range] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def covers(ranges: Sequence[Range], h: int) -> bool:
    """Whether ``h`` falls in one of ``ranges`` (sorted)."""
    i = bisect.bisect_right(ranges, (h, RANGE_SIZE)) - 1
    return i >= 0 and ranges[i][0] <= h <= ranges[i][1]


def flatten(ranges: Sequence[Range]) -> list[int]:
    return [x for r in ranges for x in r]


def unflatten(bounds: Sequence[int]) -> list[Range]:
    if len(bounds) % 2:
        raise ConfigError(f"hash range bounds come in pairs; received {len(bounds)}")
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(0, len(bounds), 2)]


class RoutingTable:
    """Per stream, which node (by address) owns each key-hash range."""

    def __init__(self, streams: Mapping[str, Sequence[tuple[str, Sequence[Range]]]]) -> None:
        self._starts: dict[str, list[int]] = {}
        self._entries: dict[str, list[tuple[int, str]]] = {}
        self.nodes: set[str] = set()
        for stream, owners in streams.items():
            entries = sorted((a, b, address) for address, rs in owners for a, b in rs)
            self._starts[stream] = [a for a, _b, _n in entries]
            self._entries[stream] = [(b, n) for _a, b, n in entries]
            self.nodes.update(address for address, _rs in owners)

    def owner_of_hash(self, stream: str, h: int) -> str | None:
        starts = self._starts.get(stream)
        if not starts:
            return None
        i = bisect.bisect_right(starts, h) - 1
        if i < 0:
            return None
        end, address = self._entries[stream][i]
        return address if h <= end else None

    def owner(self, stream: str, key: str | int) -> str | None:
        """The address of the node that owns ``key`` of ``stream``; None if no node does."""
        return self.owner_of_hash(stream, key_hash(key))

    @property
    def streams(self) -> list[str]:
        return list(self._starts)
