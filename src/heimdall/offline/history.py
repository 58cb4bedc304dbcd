"""History: a stream's past events, from Arrow tables, files or a Pulsar topic, turned into
rows by the live decoders' code, in the order the live store would have taken them.

A history is one of:

- a ``pyarrow.Table`` or ``pyarrow.RecordBatchReader``;
- a path, or a list of paths, of Parquet (``.parquet``, ``.pq``), Arrow IPC (``.arrow``,
  ``.feather``, ``.ipc``) or CSV (``.csv``) files, or of directories of them (their files
  in name order); read a batch at a time, so memory is bounded by a batch;
- a ``TopicHistory``: a Pulsar topic read from its earliest message (or a given one), each
  message decoded as live ingest decodes it.

Tables and files have a column for the key (the stream's ``key``), one for the event time
(the stream's ``time``, or ``time_column``: an Arrow timestamp, or a number in the stream's
``time_unit``) and one per field. Row order is arrival order: an event behind its key's
newest is late exactly as it would be live. Every column is checked before any row is taken:
a missing or mistyped column, a file that cannot be read, raise an error naming the file and
the column. A row that cannot be taken (a null, NaN under ``nan = "reject"``, a time out of
range, an integer the dtype cannot hold) is left out and counted with its reason, as live
ingest dead-letters it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pyarrow as pa

from heimdall.decode import make_decoder
from heimdall.decode.arrow import Rows, table_rows
from heimdall.errors import ConfigError, SchemaError, SourceError
from heimdall.schema import StreamSpec

if TYPE_CHECKING:
    from heimdall.config import StreamConfig

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "ipc", ".feather": "ipc",
            ".ipc": "ipc", ".csv": "csv"}
BATCH_ROWS = 262_144  # rows a batch: ~15 MB of a 4-field float64 stream, fewer hand-offs
_EXAMPLES = 10


@dataclass
class HistoryReport:
    """What a read of history took and left out: ``rows`` read, ``taken`` handed to the
    store, ``bad`` (reason -> rows), ``examples``: the first rows left out, with where they
    were (file and row, or message id)."""

    rows: int = 0
    taken: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def left_out(self) -> int:
        """Rows (or messages) left out."""
        return sum(self.bad.values())

    def note_bad(self, where: str, bad: Sequence[tuple[int | str, str]]) -> None:
        for row, reason in bad:
            self.bad[_kind(reason)] += 1
            if len(self.examples) < _EXAMPLES:
                self.examples.append(f"{where} row {row}: {reason}")

    def __str__(self) -> str:
        out = f"{self.rows} rows read, {self.taken} taken, {self.left_out} left out"
        if self.bad:
            out += ": " + ", ".join(f"{n} {r}" for r, n in self.bad.most_common())
        return out


class Progress:
    """A rich progress bar on stderr while long offline work runs, or nothing (``on``
    False). ``total`` None: a count of what is done, no end known."""

    def __init__(self, what: str, total: int | None, on: bool) -> None:
        self._p: Any = None
        if on and total != 0:
            from rich.console import Console
            from rich.progress import Progress as Bar

            self._p = Bar(console=Console(stderr=True), transient=True)
            self._task = self._p.add_task(what, total=total)
            self._p.start()

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def _kind(reason: str) -> str:
    """What the counts group by: a column's reason whole (it names no row), else the reason up
    to its first colon, as live ingest counts its dead letters (``StreamCounters``)."""
    if reason.startswith(("field", "time column", "null", "empty key", "non-finite")):
        return reason
    return reason.split(":", 1)[0][:60]


@dataclass
class TopicHistory:
    """A stream's Pulsar topic as history: every message the broker retains, from the earliest
    (or from ``start_message_id``, a serialized ``MessageId``, that message included),
    decoded by the live decoder of the stream's format; with ``since_ms`` the messages
    published before it are left out. A stream stamped on arrival takes each message's
    publish time (its arrival at the broker).

    ``embedded``: the broker is pulsar-lite (which cannot say whether a topic has more
    messages: the read ends at the first 2 s without one). ``Pipeline.history(stream)`` makes
    one for a running pipeline's broker."""

    url: str
    stream: StreamConfig
    since_ms: int | None = None
    start_message_id: bytes | None = None
    embedded: bool = False
    batch: int = 10_000

    def read(self, report: HistoryReport) -> Iterator[Rows]:
        import pulsar

        from heimdall.sources.pulsar import map_pulsar_errors, read_topic

        cfg = self.stream
        decoder = make_decoder(cfg.spec(), cfg.format, cfg.key_from, cfg.time_from or "arrival")
        with map_pulsar_errors(f"reading {cfg.topic!r}", self.url):
            client = pulsar.Client(self.url,
                                   logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
        try:
            start = (pulsar.MessageId.deserialize(self.start_message_id)
                     if self.start_message_id is not None else pulsar.MessageId.earliest)
            for msgs in read_topic(client, self.url, cfg.topic, start, self.embedded,
                                   self.batch):
                if self.since_ms is not None:
                    msgs = [m for m in msgs if m.publish_timestamp() >= self.since_ms]
                if msgs:
                    yield self._decode(decoder, msgs, report)
        finally:
            client.close()

    def _decode(self, decoder: Any, msgs: list[Any], report: HistoryReport) -> Rows:
        from heimdall.sources.pulsar import message_keys_and_times

        keys, times = message_keys_and_times(self.stream, msgs, replay=True)
        d = decoder.decode([m.data() for m in msgs], keys, times)
        report.rows += len(d) + len(d.bad)
        report.taken += len(d)
        report.note_bad(self.stream.topic, [(str(msgs[i].message_id()), reason)
                                            for i, reason in d.bad])
        return Rows(d.keys, d.values, d.ts_ns, [])


HistoryLike = Union[pa.Table, pa.RecordBatchReader, str, "os.PathLike[str]",
                    Sequence[Union[str, "os.PathLike[str]"]], TopicHistory]


def read_history(history: HistoryLike, spec: StreamSpec, report: HistoryReport, *,
                 time_column: str | None = None, batch_rows: int = BATCH_ROWS
                 ) -> Iterator[Rows]:
    """The good rows of ``history`` for ``spec``, a batch at a time, in order; what is left out
    goes to ``report``. Every table's and file's columns are checked before the first row is
    given (SchemaError, SourceError)."""
    if isinstance(history, TopicHistory):
        if history.stream.name != spec.name:
            raise ConfigError(f"the topic history is of stream {history.stream.name!r}, "
                              f"not {spec.name!r}")
        yield from history.read(report)
        return
    decoder = make_decoder(spec, "arrow")
    parts = _parts(history, spec.key)
    for where, schema, _ in parts:
        _check_columns(decoder, schema, where, time_column)

    def converted() -> Iterator[Rows]:
        for where, _, batches in parts:
            offset = 0
            for batch in batches():
                try:
                    rows = table_rows(decoder, batch, time_column=time_column)
                except (ValueError, TypeError, pa.ArrowException) as exc:
                    raise SchemaError(f"{where}: {exc}") from None
                report.rows += batch.num_rows
                report.taken += len(rows.keys)
                report.note_bad(where, [(offset + r, why) for r, why in rows.bad])
                offset += batch.num_rows
                if len(rows.keys):
                    yield rows

    # read and converted on a thread ahead: Arrow decodes without the GIL, and the store
    # writes a batch this large without it, so the three overlap
    yield from _read_ahead(converted())


Part = tuple[str, pa.Schema, Any]  # (where, schema, () -> iterator of record batches)


def _read_ahead(items: Iterator[Rows], depth: int = 2) -> Iterator[Rows]:
    """``items``, made on a thread ``depth`` ahead (its exceptions raised here)."""
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def read() -> None:
        try:
            for b in items:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    t = threading.Thread(target=read, name="heimdall-history-read", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def _parts(history: HistoryLike, key: str) -> list[Part]:
    if isinstance(history, pa.Table):
        return [("the table", history.schema, lambda: history.to_batches(BATCH_ROWS))]
    if isinstance(history, pa.RecordBatchReader):
        return [("the record batch reader", history.schema, lambda: history)]
    if isinstance(history, (str, os.PathLike)):
        paths: Sequence[Any] = [history]
    elif isinstance(history, Sequence) and history:
        paths = history
    else:
        raise ConfigError(
            "history must be a pyarrow Table or RecordBatchReader, a path or a list of paths "
            "of Parquet, Arrow IPC or CSV files (or directories of them), or a TopicHistory; "
            f"received {type(history).__name__}")
    return [_file_part(f, key) for p in paths for f in _files(Path(p))]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
        if not files:
            raise SourceError(f"{path}: no {', '.join(SUFFIXES)} file in the directory")
        return files
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    return [path]


def _file_part(path: Path, key: str) -> Part:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SourceError(f"{path}: not a history file; use {', '.join(SUFFIXES)}")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            # the key column as a dictionary: each distinct key decoded once (table_rows)
            keyed = [key] if key in schema.names else None
            return (str(path), schema,
                    lambda: pq.ParquetFile(path, read_dictionary=keyed).iter_batches(
                        BATCH_ROWS))
        if kind == "ipc":
            schema = _open_ipc(path).schema
            return (str(path), schema, lambda: _ipc_batches(path))
        import pyarrow.csv as csv

        schema = csv.open_csv(path).schema
        return (str(path), schema, lambda: csv.open_csv(path))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: cannot be read as {kind}: {exc}") from None


def _open_ipc(path: Path) -> Any:
    try:
        return pa.ipc.open_file(path)
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(path)


def _ipc_batches(path: Path) -> Iterator[pa.RecordBatch]:
    f = _open_ipc(path)
    if isinstance(f, pa.RecordBatchReader):
        yield from f
    else:
        for i in range(f.num_record_batches):
            yield f.get_batch(i)


def _check_columns(decoder: Any, schema: pa.Schema, where: str,
                   time_column: str | None) -> None:
    """A missing or mistyped column, before any row is read (an empty table of the schema
    goes through the conversion)."""
    try:
        table_rows(decoder, schema.empty_table(), time_column=time_column)
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise SchemaError(f"{where}: {exc}") from None
