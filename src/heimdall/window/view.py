"""Window (one key's rows, a zero-copy view or an owned copy) and WindowBatch (many keys)."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall.errors import FieldNotFoundError, SchemaError, StaleWindowError

if TYPE_CHECKING:
    from heimdall._core import RingCore
    from heimdall.window._ring import Ring


try:  # the C accessor namedtuple fields use; it reads the tuple item, not __getitem__
    from _collections import _tuplegetter  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - not CPython
    def _tuplegetter(index: int, doc: str) -> Any:
        return property(lambda self: tuple.__getitem__(self, index), doc=doc)


class _NotAWindowMethod:
    """Hides a tuple method a Window does not have (``hasattr`` is False)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        raise AttributeError(f"'Window' object has no attribute {self.name!r}")


# A Window is a tuple underneath (built by one call of the core: ``window()`` is the hot path
# of every read), of the items ``Window.LAYOUT`` names: values, the ring's core (None for a
# copy), slot, a, b, CSEQ c0, key, stream, fields, ts_ns (a copy's; None for a view, which
# slices it from the ring when asked). The core checks LAYOUT against its own.
_new_tuple = tuple.__new__


class Window(tuple[Any, ...]):
    """One key's window: ``values`` (n, F) and ``ts_ns`` (n,), oldest row first.

    From ``WindowStore.window`` it is a zero-copy, read-only view into the store. It stays
    intact until the writer overwrites its rows: between 0 and ``slack + 1`` further appends
    to the key (``slack`` = W/4 by default), depending on where the key's ring stands when the
    view is taken; an out-of-order insert, eviction or expiry of the key ends it at once. A
    view that the next append would end (the key's ring is full) can also end before it: a
    large ``append_batch`` compacts full rings ahead of their next append.
    ``valid`` says whether it is still intact; a view never changes what it shows, it goes
    stale (newer rows are not in it) and later invalid. ``copy()`` returns an owned Window
    that is always valid. Iterating a Window yields its rows.
    """

    __slots__ = ()
    LAYOUT = ("values", "ring", "slot", "a", "b", "c0", "key", "stream", "fields", "ts")

    def __new__(cls, stream: str, key: Hashable, fields: tuple[str, ...], values: np.ndarray,
                ts_ns: np.ndarray) -> Window:
        """An owned window of ``values`` (n, F) and ``ts_ns`` (n,) (views come from
        ``WindowStore.window``)."""
        return _new_tuple(cls, (values, None, -1, 0, len(values), 0, key, stream, fields, ts_ns))

    def __getnewargs__(self) -> tuple[Any, ...]:
        c = self.copy()  # pickled as an owned copy
        return c.stream, c.key, c.fields, c.values, c._ts

    values: np.ndarray = _tuplegetter(
        LAYOUT.index("values"), "(n, F) read-only array; a view into the store unless a copy.")
    _ring: RingCore | None = _tuplegetter(
        LAYOUT.index("ring"), "the ring's core of a view; None for a copy")
    _slot: int = _tuplegetter(LAYOUT.index("slot"), "the view's slot")
    _a: int = _tuplegetter(LAYOUT.index("a"), "first row of the view in its slot")
    _b: int = _tuplegetter(LAYOUT.index("b"), "row after the last")
    _c0: int = _tuplegetter(LAYOUT.index("c0"), "the slot's CSEQ when the view was taken")
    key: Hashable = _tuplegetter(LAYOUT.index("key"), "The key.")
    stream: str = _tuplegetter(LAYOUT.index("stream"), "The stream.")
    fields: tuple[str, ...] = _tuplegetter(
        LAYOUT.index("fields"), "The stream's field names, in column order.")
    _ts: np.ndarray | None = _tuplegetter(LAYOUT.index("ts"), "a copy's event times")

    @property
    def ts_ns(self) -> np.ndarray:
        """(n,) int64 event times in nanoseconds, oldest first."""
        r = self._ring
        if r is None:
            return self._ts  # type: ignore[return-value]
        base = self._slot * r.cap
        return r.ts_flat[base + self._a: base + self._b]

    @property
    def valid(self) -> bool:
        """False once the writer has overwritten rows this view shows (always True for a copy)."""
        r = self._ring
        if r is None:
            return True
        return r.intact(self._slot, self._a, self._b, self._c0)  # the core's seqlock.rs

    def __len__(self) -> int:
        return self._b - self._a

    def __getitem__(self, field: str) -> np.ndarray:  # type: ignore[override]
        """(n,) view of one field."""
        fields = self.fields
        try:
            j = fields.index(field)
        except ValueError:
            raise FieldNotFoundError(
                f"stream {self.stream!r} has no field {field!r}; fields are {list(fields)}"
            ) from None
        return self.values[:, j]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.values)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(window)`` is ``values``: the view itself, no copy."""
        v = self.values
        if dtype is not None and np.dtype(dtype) != v.dtype:
            return v.astype(dtype)
        return v.copy() if copy else v

    def __contains__(self, field: object) -> bool:
        return field in self.fields

    # not a sequence of its parts: no tuple count/index, and identity, as any object, not
    # the tuple's element-wise compare
    count = index = _NotAWindowMethod()
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

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
        return Window(self.stream, self.key, self.fields, values, ts)

    def __repr__(self) -> str:
        kind = "view" if self._ring is not None else "copy"
        return f"<Window {self.stream}/{self.key!r} rows={len(self)} {kind}>"


def view(ring: Ring, key: Hashable, slot: int, a: int, b: int, c0: int) -> Window:
    """A view of rows [a, b) of ``slot``, read at CSEQ ``c0`` (``WindowStore.window``
    inlines this)."""
    base = slot * ring.cap
    return _new_tuple(Window, (ring.values_flat[base + a: base + b], ring.core, slot, a, b, c0,
                               key, ring.name, ring.fields, None))


class WindowBatch:
    """Windows of many keys gathered into one owned array, for batched inference.

    ``values`` (B, W, F): rows right-aligned (a key's newest row is at ``[:, -1]``), padding
    before them is 0. ``lengths`` (B,) rows per key, ``ts_ns`` (B, W), ``keys`` as asked,
    ``found`` (B,) False for keys the store does not hold (their length is 0). Each key's rows
    are a consistent snapshot.

    The padding is real zeros in ``values``: ``values.mean(axis=1)`` of a key with 5 rows in
    a 256-row batch averages 251 zeros in. The reductions ``mean``, ``std``, ``min``, ``max``
    and ``last`` read only each key's real rows (the newest ``rows`` of them, if given), NaN
    for a key with none; ``mask`` marks the real rows for anything else.

    >>> import numpy as np
    >>> b = WindowBatch("s", ["a", "b"], ("x",), np.array([[[0.0], [70.0], [74.0]],
    ...                                                    [[0.0], [0.0], [0.0]]]),
    ...                 np.zeros((2, 3), np.int64), np.array([2, 0]), np.array([True, False]))
    >>> b.values.mean(axis=1)[:, 0].tolist()      # the padding counted: wrong
    [48.0, 0.0]
    >>> b.mean()[:, 0].tolist()                   # the real rows only
    [72.0, nan]
    >>> b.mean(rows=1)[:, 0].tolist(), b.max()[:, 0].tolist()
    ([74.0, nan], [74.0, nan])
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

    def _real(self, rows: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``rows`` columns of ``values``, where each key's real rows are, and how
        many each key has there."""
        W = self.values.shape[1]
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int)
                                 or rows < 1):
            raise SchemaError(f"rows must be a whole number >= 1; received {rows!r}")
        n = W if rows is None else min(rows, W)
        lens = np.minimum(self.lengths, n)
        mask = np.arange(n)[None, :] >= (n - lens)[:, None]
        return self.values[:, W - n:, :], mask[:, :, None], lens

    def mean(self, rows: int | None = None) -> np.ndarray:
        """(B, F) float64: each key's mean over its real rows (its newest ``rows``); NaN for
        a key with none. Padding never counts."""
        v, mask, lens = self._real(rows)
        total = np.where(mask, v, 0).sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: np.ndarray = total / lens[:, None]
        return out

    def std(self, rows: int | None = None) -> np.ndarray:
        """(B, F) float64: the population standard deviation (ddof=0, as ``aggregate``) over
        each key's real rows; NaN for a key with none."""
        v, mask, lens = self._real(rows)
        mean = self.mean(rows)
        dev = np.where(mask, v - mean[:, None, :], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: np.ndarray = np.sqrt((dev * dev).sum(axis=1) / lens[:, None])
        return out

    def min(self, rows: int | None = None) -> np.ndarray:
        """(B, F) float64: each key's smallest value over its real rows; NaN for none."""
        return self._extreme(rows, np.inf, np.min)

    def max(self, rows: int | None = None) -> np.ndarray:
        """(B, F) float64: each key's largest value over its real rows; NaN for none."""
        return self._extreme(rows, -np.inf, np.max)

    def _extreme(self, rows: int | None, fill: float, op: Any) -> np.ndarray:
        v, mask, lens = self._real(rows)
        out: np.ndarray = op(np.where(mask, v.astype(np.float64), fill), axis=1)
        out[lens == 0] = np.nan
        return out

    def last(self) -> np.ndarray:
        """(B, F) float64: each key's newest row; NaN for a key with none."""
        out = self.values[:, -1, :].astype(np.float64)
        out[self.lengths == 0] = np.nan
        return out

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
