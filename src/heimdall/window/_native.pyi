"""Types of the window store's C paths (_native.c)."""

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, overload

import numpy as np

from heimdall.window._ring import Ring
from heimdall.window.view import Window

class RingCore:
    index: dict[Hashable, int]
    slot_keys: list[Any]
    lock: threading.Lock
    values_flat: np.ndarray
    fields: tuple[str, ...]
    name: str
    cap: int
    W: int
    F: int
    row_bytes: int
    span_ns: int
    lateness_ns: int
    ttl_ns: int
    next_sweep_ns: int
    tick: int
    events: int
    reread: int
    key_table_bytes: int
    full_cap: int
    time_ordered: bool
    reject_nan: bool
    def bind(self, data: np.ndarray, ts: np.ndarray, meta: np.ndarray,
             stats: np.ndarray | None, counters: np.ndarray, /) -> None: ...
    def write_row(self, slot: int, row: bytes | bytearray | memoryview, ts_ns: int,
                  now_ns: int, /) -> bool: ...
    @overload
    def lookup(self, keys: list[Any], absent: None = None, /) -> np.ndarray | None: ...
    @overload
    def lookup(self, keys: list[Any], absent: int, /) -> np.ndarray: ...
    def scatter(self, slots: np.ndarray, values: np.ndarray, ts_ns: np.ndarray,
                now_ns: int, /) -> None: ...
    def append_rows(self, keys: list[Any], values: np.ndarray, ts_ns: np.ndarray,
                    now_ns: int, /) -> bool | None: ...
    def compact_full(self) -> int: ...
    def gather(self, slots: np.ndarray, keys: list[Any], rows: int, span_ns: int, /
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None: ...
    def index_put(self, key: Hashable, slot: int, /) -> None: ...
    def index_remove(self, key: Hashable, /) -> None: ...
    def own_slots_index(self, slots: list[int], keys: list[Hashable], /) -> None: ...
    def free_slots(self, slots: list[int], /) -> None: ...
    def index_rebuild(self) -> None: ...
    def index_check(self) -> bool: ...

class StoreCore:
    _rings: dict[str, Ring]
    _clock_ns: Callable[[], int]
    def append(
        self,
        stream: str,
        key: str | int,
        values: Mapping[str, Any] | Sequence[Any] | np.ndarray,
        ts_ns: int | None = None,
    ) -> None: ...
    def window(self, stream: str, key: str | int) -> Window: ...

def setup(window_type: type, /) -> None: ...
def set_split(min_rows: int, /) -> int: ...
