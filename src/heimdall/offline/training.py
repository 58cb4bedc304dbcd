"""``training_windows``: for each label, its key's window exactly as the live store held it at
the label's time, computed by the live store's own writes over history.

The window of key ``k`` at time ``t`` is the store's state after it took, in arrival order,
every event of ``k`` that came before the first one later than ``t``: no event after ``t`` is
in it, and a late event is in it (or refused, or placed in time order) exactly as live.

How: the history is read once and its events grouped by key (keeping arrival order). For each
label the number of its key's events before that cut is found by one binary search over the
keys' running newest times. Labels are then taken in (key, cut) order, a chunk at a time: in
round ``r`` of a chunk every key with an ``r``-th label gets its next events through one
``append_batch`` and the windows are read with one ``windows`` call. Every event is written
once in all, keys whose labels are done are dropped, so memory is bounded by the history and
one chunk of windows, not by the number of labels.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from heimdall.decode import make_decoder
from heimdall.errors import ConfigError, SchemaError
from heimdall.offline.history import HistoryLike, HistoryReport, Progress, read_history
from heimdall.schema import StreamSpec
from heimdall.window import WindowStore

CHUNK = 16_384
OUT_COLUMNS = ("label_index", "window", "window_length", "window_ts_ns")


@dataclass
class TrainingChunk:
    """Windows of some labels: ``label_index`` (n,) their rows in ``labels``; ``keys``,
    ``values`` (n, W, F) right-aligned with zero padding before, ``lengths`` (n,), ``ts_ns``
    (n, W) as ``WindowBatch`` has them."""

    label_index: np.ndarray
    keys: list[Any]
    values: np.ndarray
    lengths: np.ndarray
    ts_ns: np.ndarray


class TrainingWindows:
    """Point-in-time windows for a table of labels (see ``training_windows``).

    In memory (computed on first use): ``values`` (N, W, F), ``lengths`` (N,), ``ts_ns``
    (N, W), ``keys`` and ``labels`` (the labels table), in label order; ``to_arrow()``; and
    ``len`` / indexing (``tw[i]`` is a dict of one label's window and label columns), which is
    what a ``torch.utils.data.Dataset`` needs. For more than fits in memory,
    ``chunks()``, ``write_parquet(path)`` and ``write_npz(directory)`` go a chunk at a time
    (grouped by key, each row with its ``label_index``)."""

    def __init__(self, stream: StreamSpec, W: int, labels: pa.Table, plan: _Plan,
                 report: HistoryReport, progress: bool) -> None:
        self.stream = stream.name
        self.fields = tuple(stream.fields)
        self.dtype = np.dtype(stream.dtype)
        self.W = W
        self.labels = labels
        self.report = report
        self._plan = plan
        self._progress = progress
        self._all: TrainingChunk | None = None

    def __len__(self) -> int:
        return int(self.labels.num_rows)

    def __repr__(self) -> str:
        return (f"<TrainingWindows {self.stream!r}: {len(self)} labels x ({self.W}, "
                f"{len(self.fields)}) {self.dtype}>")

    # ---- a chunk at a time -------------------------------------------------------------------

    def chunks(self, *, copy: bool = True) -> Iterator[TrainingChunk]:
        """The windows a chunk at a time, grouped by key (``label_index`` says whose). With
        ``copy=False`` a chunk's arrays are reused by the next one (no page faults): use or
        copy them before asking for the next."""
        for c in self._plan.run(self._progress):
            if copy:
                c = TrainingChunk(c.label_index, c.keys, c.values.copy(), c.lengths.copy(),
                                  c.ts_ns.copy())
            yield c

    def write_parquet(self, path: str | Path) -> Path:
        """Write one row per label to a Parquet file, a row group per chunk: the label's
        columns, ``label_index``, ``window`` (Arrow's fixed-shape tensor (W, F)),
        ``window_length`` and ``window_ts_ns`` (a fixed-size list of W). Rows are grouped by
        key; sort by ``label_index`` for label order. Written to a temporary name, then
        renamed: a failed run leaves no partial file."""
        import pyarrow.parquet as pq

        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        writer: pq.ParquetWriter | None = None
        try:
            for c in self.chunks(copy=False):
                table = self._chunk_table(c)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:
                writer = pq.ParquetWriter(tmp, self._chunk_table(self._empty()).schema)
            writer.close()
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def write_npz(self, directory: str | Path) -> list[Path]:
        """Write a ``part-NNNNN.npz`` per chunk into ``directory`` (made if missing): arrays
        ``label_index``, ``values``, ``lengths``, ``ts_ns`` and each numeric label column.
        Returns the files."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        numeric = [n for n in self.labels.column_names
                   if pa.types.is_integer(self.labels.schema.field(n).type)
                   or pa.types.is_floating(self.labels.schema.field(n).type)
                   or pa.types.is_timestamp(self.labels.schema.field(n).type)]
        files = []
        for i, c in enumerate(self.chunks(copy=False)):
            taken = self.labels.select(numeric).take(pa.array(c.label_index))
            extra = {f"label_{n}": taken.column(n).to_numpy() for n in numeric}
            f = out / f"part-{i:05d}.npz"
            np.savez(f, label_index=c.label_index, values=c.values, lengths=c.lengths,
                     ts_ns=c.ts_ns, **extra)
            files.append(f)
        return files

    # ---- in memory ---------------------------------------------------------------------------

    def _materialize(self) -> TrainingChunk:
        if self._all is None:
            N = len(self)
            values = np.zeros((N, self.W, len(self.fields)), self.dtype)
            ts = np.zeros((N, self.W), np.int64)
            lengths = np.zeros(N, np.int64)
            for c in self.chunks(copy=False):
                values[c.label_index] = c.values
                ts[c.label_index] = c.ts_ns
                lengths[c.label_index] = c.lengths
            keys = self._plan.label_keys
            self._all = TrainingChunk(np.arange(N), keys, values, lengths, ts)
        return self._all

    @property
    def values(self) -> np.ndarray:
        """(N, W, F): each label's window, right-aligned, zero padding before its rows."""
        return self._materialize().values

    @property
    def lengths(self) -> np.ndarray:
        """(N,): rows in each label's window (0: the key had no event by then)."""
        return self._materialize().lengths

    @property
    def ts_ns(self) -> np.ndarray:
        """(N, W): the rows' event times (0 in the padding)."""
        return self._materialize().ts_ns

    @property
    def keys(self) -> list[Any]:
        """Each label's key."""
        return self._plan.label_keys

    @property
    def mask(self) -> np.ndarray:
        """(N, W) True on real rows."""
        return np.arange(self.W)[None, :] >= (self.W - self.lengths)[:, None]

    def to_arrow(self) -> pa.Table:
        """The labels table with ``window``, ``window_length`` and ``window_ts_ns`` added."""
        return self._chunk_table(self._materialize())

    def __getitem__(self, i: int) -> dict[str, Any]:
        a = self._materialize()
        row = {n: self.labels.column(n)[i].as_py() for n in self.labels.column_names}
        return {**row, "window": a.values[i], "window_length": int(a.lengths[i]),
                "window_ts_ns": a.ts_ns[i]}

    # ---- helpers -----------------------------------------------------------------------------

    def _empty(self) -> TrainingChunk:
        F = len(self.fields)
        return TrainingChunk(np.empty(0, np.int64), [], np.empty((0, self.W, F), self.dtype),
                             np.empty(0, np.int64), np.empty((0, self.W), np.int64))

    def _chunk_table(self, c: TrainingChunk) -> pa.Table:
        table = self.labels.take(pa.array(c.label_index, pa.int64()))
        F = len(self.fields)
        tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(
            np.ascontiguousarray(c.values.reshape(len(c.lengths), self.W, F)))
        ts = pa.FixedSizeListArray.from_arrays(pa.array(c.ts_ns.reshape(-1)), self.W)
        return (table.append_column("label_index", pa.array(c.label_index, pa.int64()))
                .append_column("window", tensor)
                .append_column("window_length", pa.array(c.lengths, pa.int64()))
                .append_column("window_ts_ns", ts))


def training_windows(
    history: HistoryLike,
    labels: pa.Table | Mapping[str, Any] | Any,
    stream: StreamSpec,
    *,
    rows: int | None = None,
    key: str | None = None,
    time: str | None = None,
    time_column: str | None = None,
    last_time: str | None = None,
    chunk: int = CHUNK,
    progress: bool | None = None,
) -> TrainingWindows:
    """For every row of ``labels``, its key's window as the live store held it at its time.

    ``labels``: a pyarrow Table, a mapping of columns, or anything ``pyarrow.table`` takes
    (a pandas DataFrame), with a key column (``key``, default the stream's key) and a time
    column (``time``, default the stream's time field, else ``time_column``): an Arrow
    timestamp or a number in the stream's ``time_unit``. Its other columns (the targets) are
    carried through. ``history`` as for ``replay``; ``time_column`` names its time column for a
    stream stamped on arrival. ``rows`` keeps each window's newest rows (W, default the
    window's rows). A label whose key has no event by its time gets an empty window (length 0,
    all padding). ``last_time``: a labels column with the time of the window's last row (a
    prediction's ``last_event_time_ns``): among the key's states whose newest time is the
    label's, the one that ended with that row (a count window given events out of time
    order; docs/offline.md). ``progress``: a progress bar on stderr (default: when it is a
    terminal).

    The history is read and its columns checked now (SchemaError, SourceError naming the file
    and the column); the windows are computed when first read.

    >>> import heimdall as hd, pyarrow as pa
    >>> spec = hd.StreamSpec("s", key="id", time="ts", fields=["x"], window=hd.CountWindow(2))
    >>> events = pa.table({"id": ["a", "a", "a"], "ts": [1, 2, 3], "x": [1.0, 2.0, 3.0]})
    >>> tw = hd.training_windows(events, {"id": ["a", "a"], "ts": [0, 2], "y": [0, 1]}, spec)
    >>> tw.values[:, :, 0].tolist(), tw.lengths.tolist()
    ([[0.0, 0.0], [1.0, 2.0]], [0, 2])
    """
    if not isinstance(stream, StreamSpec):
        raise ConfigError(f"stream must be a StreamSpec; received {type(stream).__name__}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a whole number >= 1; received {chunk!r}")
    W = stream.window.rows if rows is None else rows
    if isinstance(W, bool) or not isinstance(W, int) or not 1 <= W <= stream.window.rows:
        raise ConfigError(f"rows must be in 1..{stream.window.rows}; received {rows!r}")
    table = _labels_table(labels)
    kname = key or stream.key
    tname = time or stream.time or time_column
    if tname is None:
        raise ConfigError("the stream stamps events on arrival: name the labels' time column "
                          "(time=...)")
    clash = [c for c in OUT_COLUMNS if c in table.column_names]
    if clash:
        raise ConfigError(f"labels have column(s) {clash}, which the windows are written as")
    label_ts = _label_columns(table, kname, tname, stream)
    label_last = _label_columns(table, kname, last_time, stream) if last_time else None
    report = HistoryReport()
    plan = _Plan(stream, W, chunk, table.column(kname), label_ts, label_last)
    plan.read(history, report, time_column)
    if progress is None:
        progress = sys.stderr.isatty()
    return TrainingWindows(stream, W, table, plan, report, progress)


def _labels_table(labels: Any) -> pa.Table:
    if isinstance(labels, pa.Table):
        return labels
    try:
        return pa.table(labels)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise SchemaError(f"labels: not a table of columns ({exc})") from None


def _label_columns(table: pa.Table, kname: str, tname: str, stream: StreamSpec
                   ) -> np.ndarray:
    """The labels' times in ns, their key and time columns checked."""
    missing = [c for c in (kname, tname) if c not in table.column_names]
    if missing:
        raise SchemaError(f"labels: column(s) {missing} missing; the labels have "
                          f"{table.column_names}")
    kcol, tcol = table.column(kname), table.column(tname)
    if not (pa.types.is_string(kcol.type) or pa.types.is_large_string(kcol.type)
            or pa.types.is_integer(kcol.type)):
        raise SchemaError(f"labels: key column {kname!r} is {kcol.type}; use string or int")
    for name, col in ((kname, kcol), (tname, tcol)):
        if col.null_count:
            raise SchemaError(f"labels: column {name!r} holds {col.null_count} null(s)")
    if pa.types.is_timestamp(tcol.type):
        ts = np.asarray(tcol.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy())
    elif pa.types.is_integer(tcol.type) or pa.types.is_floating(tcol.type):
        ts, ok = make_decoder(stream, "arrow").payload_times_to_ns(
            tcol.to_numpy(zero_copy_only=False))
        if ok is not None and not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise SchemaError(f"labels: time column {tname!r} row {row}: "
                              f"{tcol[row].as_py()!r} is outside 1970..2262 in "
                              f"{stream.time_unit}")
    else:
        raise SchemaError(f"labels: time column {tname!r} is {tcol.type}; use a timestamp "
                          f"or a number in {stream.time_unit}")
    out: np.ndarray = ts.astype(np.int64, copy=False)
    return out


class _Plan:
    """The history grouped by key, each label's cut, and the rounds that compute them."""

    def __init__(self, stream: StreamSpec, W: int, chunk: int, label_key_column: Any,
                 label_ts: np.ndarray, label_last: np.ndarray | None = None) -> None:
        self.stream = stream
        self.W = W
        self.chunk = chunk
        self.label_key_column = label_key_column
        self.label_keys: list[Any] = label_key_column.to_pylist()
        self.label_ts = label_ts
        self.label_last = label_last
        self._out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def read(self, history: HistoryLike, report: HistoryReport,
             time_column: str | None) -> None:
        values: list[np.ndarray] = []
        ts: list[np.ndarray] = []
        codes_of: list[np.ndarray] = []
        index: dict[Any, int] = {}  # key -> code, in order of first appearance
        seen: tuple[Any, np.ndarray] | None = None  # a batch's distinct keys -> their codes
        for rows in read_history(history, self.stream, report, time_column=time_column):
            if rows.codes is not None and rows.distinct is not None:
                # dictionary-encoded: the batch's distinct keys coded, not every row's key
                if seen is None or seen[0] is not rows.distinct:
                    seen = (rows.distinct, np.fromiter(
                        (index.setdefault(k, len(index)) for k in rows.distinct[:-1].tolist()),
                        np.int64, len(rows.distinct) - 1))
                codes_of.append(seen[1][rows.codes])
            else:
                codes_of.append(np.fromiter((index.setdefault(k, len(index)) for k in rows.keys),
                                            np.int64, len(rows.keys)))
            values.append(rows.values)
            ts.append(rows.ts_ns)
        F = len(self.stream.fields)
        self.values = np.concatenate(values) if values else np.empty((0, F), self.stream.dtype)
        self.ts = np.concatenate(ts) if ts else np.empty(0, np.int64)
        codes = np.concatenate(codes_of) if codes_of else np.empty(0, np.int64)
        K = len(index)
        # the events grouped by key, each group in arrival order (a radix sort on small codes)
        small = np.uint16 if K <= 1 << 16 else np.uint32 if K <= 1 << 32 else np.int64
        self.order = np.argsort(codes.astype(small), kind="stable")
        counts = np.bincount(codes, minlength=K)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        # each label's cut: its key's events before the first one later than its time, the
        # count of the key's events whose running newest time is <= the label's time
        lcode = _codes_of_labels(self.label_key_column, index)
        self.lcode = lcode
        self.cut = np.zeros(len(lcode), np.int64)
        known = lcode >= 0
        if K and known.any():
            # (key, rank of the running newest time) as one sorted int64: ranks keep it small
            u, rank = _ranks_of_running_newest(codes, self.ts, self.order)
            R = len(u) + 1
            composite = codes[self.order] * R + rank + 1
            lt = self.label_ts[known]
            by_t = np.argsort(lt)  # searches in order walk the arrays forward, not at random
            at = np.empty(len(lt), np.int64)
            at[by_t] = np.searchsorted(u, lt[by_t], side="right")
            q = lcode[known] * R + at
            self.cut[known] = _sorted_search(composite, q) - self.starts[lcode[known]]
            if self.label_last is not None:
                # the newest time ties: the prefix ending at the key's last event of the
                # label's last-row time, among those whose running newest time is the label's
                at_lo = np.searchsorted(u, lt, side="left")
                lo = _sorted_search(composite, lcode[known] * R + at_lo) - self.starts[
                    lcode[known]]
                self.cut[known] = _last_event_at(codes[self.order], self.ts[self.order],
                                                 self.starts, lcode[known],
                                                 self.label_last[known], lo,
                                                 self.cut[known])
        self.K = K

    def run(self, progress: bool) -> Iterator[TrainingChunk]:
        """The windows a chunk at a time, in (key, cut) order; the labels of unknown keys
        first, as empty windows."""
        stream, W = self.stream, self.W
        F = len(stream.fields)
        dtype = np.dtype(stream.dtype)
        unknown = np.flatnonzero(self.lcode < 0)
        bar = Progress("training windows", len(self.lcode), progress)
        try:
            for a in range(0, len(unknown), self.chunk):
                idx = unknown[a:a + self.chunk]
                bar.advance(len(idx))
                yield TrainingChunk(idx, [self.label_keys[i] for i in idx.tolist()],
                                    np.zeros((len(idx), W, F), dtype),
                                    np.zeros(len(idx), np.int64),
                                    np.zeros((len(idx), W), np.int64))
            known = np.flatnonzero(self.lcode >= 0)
            if not len(known):
                return
            # (key, cut, label) order
            known = known[np.lexsort((known, self.cut[known], self.lcode[known]))]
            store = WindowStore([stream], max_keys=max(1, min(self.K, self.chunk + 1)),
                                evict=False)
            done = np.zeros(self.K, np.int64)  # each key's events written so far
            for a in range(0, len(known), self.chunk):
                idx = known[a:a + self.chunk]
                yield self._chunk(store, idx, done)
                bar.advance(len(idx))
                # keys whose labels are all done leave the store (the last may go on)
                codes = np.unique(self.lcode[idx])
                if a + self.chunk < len(known):
                    codes = codes[codes != self.lcode[known[a + self.chunk]]]
                store.discard(stream.name, codes.tolist())
        finally:
            bar.close()

    def _buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One chunk's output arrays, made once: a fresh 100 MB array a chunk would cost
        more in page faults than the windows' copy itself."""
        if self._out is None:
            W, F = self.W, len(self.stream.fields)
            self._out = (np.empty((self.chunk, W, F), np.dtype(self.stream.dtype)),
                         np.empty((self.chunk, W), np.int64), np.empty(self.chunk, np.int64))
        return self._out

    def _chunk(self, store: WindowStore, idx: np.ndarray, done: np.ndarray) -> TrainingChunk:
        """The windows of ``idx`` (labels in (key, cut) order), in round order: round r's
        windows are one contiguous run of the output, copied whole. The arrays are reused
        by the next chunk."""
        name, W = self.stream.name, self.W
        n = len(idx)
        lc = self.lcode[idx]
        first = np.concatenate([[True], lc[1:] != lc[:-1]])
        group_start = np.flatnonzero(first)
        rank = np.arange(n) - group_start[np.cumsum(first) - 1]
        idx = idx[np.argsort(rank, kind="stable")]  # by round, keys ascending within each
        lc, cut = self.lcode[idx], self.cut[idx]
        bounds = np.searchsorted(np.sort(rank), np.arange(int(rank.max()) + 2 if n else 1))
        values, ts, lengths = (buf[:n] for buf in self._buffers())
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            codes = lc[a:b]
            take = cut[a:b] - done[codes]  # >= 0: cuts ascend within a key
            total = int(take.sum())
            if total:
                # each label's next events: ranges of the key-grouped order, concatenated
                begin = self.starts[codes] + done[codes]
                pos = np.repeat(begin - np.cumsum(take) + take, take) + np.arange(total)
                ev = self.order[pos]
                store.append_batch(name, np.repeat(codes, take).tolist(), self.values[ev],
                                   self.ts[ev])
                done[codes] = cut[a:b]
            batch = store.windows(name, codes.tolist(), rows=W)
            values[a:b] = batch.values
            ts[a:b] = batch.ts_ns
            lengths[a:b] = batch.lengths
        return TrainingChunk(idx, [self.label_keys[i] for i in idx.tolist()], values, lengths,
                             ts)


def _sorted_search(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.searchsorted(a, q, side="right")``, the queries taken in sorted order (a search
    in order walks ``a`` forward, not at random: several times faster on large arrays)."""
    by_q = np.argsort(q)
    out = np.empty(len(q), np.int64)
    out[by_q] = np.searchsorted(a, q[by_q], side="right")
    return out


def _last_event_at(codes_g: np.ndarray, ts_g: np.ndarray, starts: np.ndarray,
                   lcode: np.ndarray, last: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray) -> np.ndarray:
    """For each label: 1 + the index (within its key's events, in arrival order) of the
    key's last event of time ``last`` in ``[lo, hi)``; ``hi`` where there is none.

    ``codes_g``/``ts_g``: the events grouped by key (``starts``: where each key's begin)."""
    N = len(ts_g)
    pos = np.arange(N, dtype=np.int64)
    by_pair = np.lexsort((pos, ts_g, codes_g))  # (key, time, arrival)
    c2, t2 = codes_g[by_pair], ts_g[by_pair]
    new_pair = np.concatenate([[True], (c2[1:] != c2[:-1]) | (t2[1:] != t2[:-1])])
    pair_id = np.cumsum(new_pair) - 1
    u2 = _sorted_distinct(ts_g)
    R2 = len(u2) + 1
    pair_key = c2[new_pair] * R2 + np.searchsorted(u2, t2[new_pair]) + 1  # ascending
    rank = np.searchsorted(u2, last)
    in_u = (rank < len(u2)) & (u2[np.minimum(rank, len(u2) - 1)] == last)
    want = lcode * R2 + rank + 1
    i = np.minimum(np.searchsorted(pair_key, want), len(pair_key) - 1)
    has = in_u & (pair_key[i] == want)
    # the last event of that (key, time) at or before the key's event hi - 1
    composite = pair_id * (N + 1) + by_pair  # ascending: pairs in order, arrival within
    target = i * (N + 1) + starts[lcode] + hi - 1
    j = np.searchsorted(composite, target, side="right") - 1
    j = np.maximum(j, 0)
    ok = has & (hi > 0) & (pair_id[j] == i)
    local = by_pair[j] - starts[lcode]
    ok &= local >= lo
    out: np.ndarray = np.where(ok, local + 1, hi)
    return out


def _codes_of_labels(column: Any, index: dict[Any, int]) -> np.ndarray:
    """Each label key's code in ``index`` (-1: a key the history never holds), looked up in
    Arrow (the codes are the order of ``index``)."""
    import pyarrow.compute as pc

    if not index:
        return np.full(len(column), -1, np.int64)
    try:
        found = pc.index_in(column, value_set=pa.array(list(index)))
    except (pa.ArrowException, TypeError):  # the labels' key type differs from history's
        return np.fromiter((index.get(k, -1) for k in column.to_pylist()), np.int64,
                           len(column))
    out: np.ndarray = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return out


def _ranks_of_running_newest(codes: np.ndarray, ts: np.ndarray, order: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The distinct running newest times ``u`` (sorted) and, for each event in key-grouped
    ``order``, the rank in ``u`` of its key's newest time so far."""
    if len(ts) and (ts[1:] >= ts[:-1]).all():
        # in time order as they arrived (the common case): the running newest of every key
        # is its own time, and ranks come from one pass, no sort
        step = np.concatenate([[True], ts[1:] != ts[:-1]])
        return ts[step], (np.cumsum(step) - 1)[order]
    newest = _running_max_by_group(codes[order], ts[order])
    u = _sorted_distinct(newest)
    return u, np.searchsorted(u, newest)


def _sorted_distinct(x: np.ndarray) -> np.ndarray:
    """``np.unique`` by a sort (numpy's hash-based unique is several times slower here)."""
    s = np.sort(x)
    out: np.ndarray = s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s
    return out


def _running_max_by_group(codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The running maximum of ``ts`` within each run of equal ``codes`` (sorted by code)."""
    if len(ts) < 2:
        return ts.copy()
    same = codes[1:] == codes[:-1]
    if (ts[1:] >= ts[:-1])[same].all():  # in order within every key
        return ts.copy()
    # ranks keep the offset per group small: rank + group * (ranks) never overflows
    u = _sorted_distinct(ts)
    rank = np.searchsorted(u, ts)
    group = np.concatenate([[0], np.cumsum(~same)])
    shifted = rank.astype(np.int64) + group * len(u)
    newest: np.ndarray = u[np.maximum.accumulate(shifted) - group * len(u)]
    return newest
