"""Types of the native core (native/, the Rust crate ``heimdall-core``, built as
``heimdall._core``)."""

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

POS: int
FILL: int
WSEQ: int
CSEQ: int
NEWEST: int
TOUCH: int
TICK: int
KEYGEN: int
META_COLS: int
ABSENT: int
SKIP: int
C_LATE: int
C_OOO: int
C_EXPIRED: int
N_COUNTERS: int
S_EVENTS: int
S_EVICTIONS: int
S_EXPIRED: int
S_COUNTERS: int
STATS_COLS: int
RANGE_SIZE: int
AGGREGATES: list[str]

def gather(data: np.ndarray, ts: np.ndarray, meta: np.ndarray, slots: np.ndarray, rows: int,
           span_ns: int, out_values: np.ndarray, out_ts: np.ndarray, out_len: np.ndarray,
           ok: np.ndarray, /) -> None: ...
def aggregate(data: np.ndarray, ts: np.ndarray, meta: np.ndarray, slots: np.ndarray,
              rows: int, span_ns: int, out: np.ndarray, ok: np.ndarray, /) -> None: ...
def key_hash(key: str | int, /) -> int: ...
def murmur3_32(data: bytes, seed: int = 0) -> int: ...

class FpTable:
    def __init__(self, capacity: int) -> None: ...
    def add(self, fingerprints: Iterable[Hashable], handles: Iterable[Any], /) -> list[int]: ...
    def get(self, fingerprint: Hashable, /) -> Any: ...
    def put(self, fingerprint: Hashable, handle: Any, /) -> None: ...
    def reset(self) -> list[Any]: ...
    def __len__(self) -> int: ...

def candidates(new: FpTable, old: FpTable, fingerprints: Sequence[Hashable], /
               ) -> tuple[list[int], list[int]]: ...
def plan_evictions(new_rows: np.ndarray, held: np.ndarray, first: np.ndarray,
                   candidates: np.ndarray, n: int, exhaustive: bool, victims: np.ndarray,
                   who: np.ndarray, /) -> tuple[int, int]: ...
def first_nonfinite(values: np.ndarray, /) -> int: ...
def shared_put(table: np.ndarray, keys: np.ndarray, version: np.ndarray, slots: list[int],
               key_list: list[Any], /) -> None: ...
def shared_remove(table: np.ndarray, keys: np.ndarray, version: np.ndarray, slots: list[int],
                  /) -> None: ...
