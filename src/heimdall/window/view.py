"""Window (one key's rows, a zero-copy view or an owned copy) and WindowBatch (many keys)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from heimdall.errors import FieldNotFoundError, StaleWindowError
from heimdall.window import _kernels as k

if TYPE_CHECKING:
    from heimdall.window._ring import Ring


class Window:
    """One key's window: ``values`` (n, F) and ``ts_ns`` (n,), oldest row first.

    From ``WindowStore.window`` it is a zero-copy, read-only view into the store. It stays
    intact until the writer overwrites its rows: between 0 and ``slack + 1`` further appends
    to the key (``slack`` = W/4 by default), depending on where the key's ring stands when the
    view is taken; an out-of-order insert, eviction or expiry of the key ends it at once.
    ``valid`` says whether it is still intact; a view never changes what it shows, it goes
    stale (newer rows are not in it) and later invalid. ``copy()`` returns an owned Window
    that is always valid.
    """

    __slots__ = ("_a", "_b", "_c0", "_fields", "_ring", "_slot", "_ts", "_values", "key", "stream")

    def __init__(
        self,
        stream: str,
        key: Hashable,
        fields: tuple[str, ...],
        ring: Ring | None,
        slot: int,
        a: int,
        b: int,
        c0: int,
        values: np.ndarray | None = None,
        ts_ns: np.ndarray | None = None,
    ) -> None:
        self.stream = stream
        self.key = key
        self._fields = fields
        self._ring = ring
        self._slot = slot
        self._a = a
        self._b = b
        self._c0 = c0
        self._values = values
        self._ts = ts_ns

    @property
    def values(self) -> np.ndarray:
        """(n, F) read-only array; a view into the store unless this Window is a copy."""
        r = self._ring
        if r is None:
            return self._values  # type: ignore[return-value]
        return r.values_ro[self._slot, self._a : self._b]

    @property
    def ts_ns(self) -> np.ndarray:
        """(n,) int64 event times in nanoseconds, oldest first."""
        r = self._ring
        if r is None:
            return self._ts  # type: ignore[return-value]
        return r.ts_ro[self._slot, self._a : self._b]

    @property
    def fields(self) -> tuple[str, ...]:
        """The stream's field names, in column order."""
        return self._fields

    @property
    def valid(self) -> bool:
        """False once the writer has overwritten rows this view shows (always True for a copy)."""
        r = self._ring
        if r is None:
            return True
        wseq = r.meta_mv[self._slot * k.META_COLS + k.WSEQ]
        headroom = (r.cap - self._b) + max(0, self._a - (r.W - 1))
        return wseq - self._c0 <= headroom

    def __len__(self) -> int:
        return self._b - self._a

    def __getitem__(self, field: str) -> np.ndarray:
        """(n,) view of one field."""
        fields = self.fields
        try:
            j = fields.index(field)
        except ValueError:
            raise FieldNotFoundError(
                f"stream {self.stream!r} has no field {field!r}; fields are {list(fields)}"
            ) from None
        return self.values[:, j]

    def copy(self) -> Window:
        """An owned, consistent copy. Raises StaleWindowError if the view was overwritten."""
        if self._ring is None:
            return self
        values = np.array(self.values)
        ts = np.array(self.ts_ns)
        if not self.valid:
            raise StaleWindowError(
                f"the window of key {self.key!r} in stream {self.stream!r} was overwritten "
                f"before it was copied; read it again with store.window()"
            )
        values.flags.writeable = False
        ts.flags.writeable = False
        return Window(self.stream, self.key, self._fields, None, -1, 0, len(values), 0, values, ts)

    def __repr__(self) -> str:
        kind = "view" if self._ring is not None else "copy"
        return f"<Window {self.stream}/{self.key!r} rows={len(self)} {kind}>"


class WindowBatch:
    """Windows of many keys gathered into one owned array, for batched inference.

    ``values`` (B, W, F): rows right-aligned (a key's newest row is at ``[:, -1]``), padding
    before them is 0. ``lengths`` (B,) rows per key, ``ts_ns`` (B, W), ``keys`` as asked,
    ``found`` (B,) False for keys the store does not hold (their length is 0). Each key's rows
    are a consistent snapshot.
    """

    __slots__ = ("fields", "found", "keys", "lengths", "stream", "ts_ns", "values")

    def __init__(
        self,
        stream: str,
        keys: Sequence[Hashable],
        fields: tuple[str, ...],
        values: np.ndarray,
        ts_ns: np.ndarray,
        lengths: np.ndarray,
        found: np.ndarray,
    ) -> None:
        self.stream = stream
        self.keys = list(keys)
        self.fields = fields
        self.values = values
        self.ts_ns = ts_ns
        self.lengths = lengths
        self.found = found

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def mask(self) -> np.ndarray:
        """(B, W) bool: True where a row holds data."""
        W = self.values.shape[1]
        mask: np.ndarray = np.arange(W)[None, :] >= (W - self.lengths)[:, None]
        return mask

    def __getitem__(self, field: str) -> np.ndarray:
        """(B, W) view of one field."""
        try:
            j = self.fields.index(field)
        except ValueError:
            raise FieldNotFoundError(
                f"stream {self.stream!r} has no field {field!r}; fields are {list(self.fields)}"
            ) from None
        return self.values[:, :, j]

    def __repr__(self) -> str:
        return f"<WindowBatch {self.stream} keys={len(self)} shape={self.values.shape}>"
