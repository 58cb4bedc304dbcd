"""``replay``: a WindowStore built from history by the live store's own writes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from heimdall.errors import ConfigError, HeimdallError
from heimdall.offline.history import HistoryLike, HistoryReport, Progress, read_history
from heimdall.schema import StreamSpec
from heimdall.window import WindowStore

log = logging.getLogger("heimdall.offline")


def replay(
    history: HistoryLike | Mapping[str, HistoryLike],
    specs: StreamSpec | Sequence[StreamSpec],
    *,
    time_column: str | None = None,
    report: HistoryReport | None = None,
    store: WindowStore | None = None,
    progress: bool | None = None,
    **store_options: Any,
) -> WindowStore:
    """A ``WindowStore`` holding the windows the live store would hold after ``history``.

    ``history`` is one history (see ``heimdall.offline.history``) when there is one spec, else
    a mapping from stream name to its history. Rows go through the live decoders' column
    conversion and the store's ``append_batch``, in history order. ``store_options`` are
    ``WindowStore``'s (``max_keys``, ``evict``, ...), or give a ``store`` to fill. Rows left
    out are counted in ``report`` (and logged); a missing or mistyped column raises
    SchemaError before anything is written. ``progress``: the rows taken so far on stderr
    (default: when it is a terminal).

    >>> import heimdall as hd, pyarrow as pa
    >>> spec = hd.StreamSpec("s", key="id", time="ts", fields=["x"], window=hd.CountWindow(2))
    >>> events = pa.table({"id": ["a", "a", "b", "a"], "ts": [1, 2, 3, 4],
    ...                    "x": [1.0, 2.0, 3.0, 4.0]})
    >>> hd.replay(events, spec).window("s", "a").values[:, 0].tolist()
    [2.0, 4.0]
    """
    spec_list = [specs] if isinstance(specs, StreamSpec) else list(specs)
    if not spec_list or not all(isinstance(s, StreamSpec) for s in spec_list):
        raise ConfigError("replay needs one StreamSpec or a list of them")
    if isinstance(history, Mapping):
        histories = dict(history)
        unknown = set(histories) - {s.name for s in spec_list}
        if unknown:
            raise ConfigError(f"history given for streams {sorted(unknown)} that no spec names")
    elif len(spec_list) == 1:
        histories = {spec_list[0].name: history}
    else:
        raise ConfigError("with several specs, give history as {stream name: history}")
    if store is None:
        store = WindowStore(spec_list, **store_options)
    elif store_options:
        raise ConfigError("give store options or a store, not both")
    report = report if report is not None else HistoryReport()
    bar = Progress("replaying history (rows)", None,
                   sys.stderr.isatty() if progress is None else progress)
    try:
        for spec in spec_list:
            if spec.name not in histories:
                continue
            for rows in read_history(histories[spec.name], spec, report,
                                     time_column=time_column):
                apply_rows(store, spec.name, rows.keys, rows.values, rows.ts_ns, report)
                bar.advance(len(rows.keys))
    finally:
        bar.close()
    if report.left_out:
        log.warning("replay: %s", report)
    return store


def apply_rows(store: WindowStore, stream: str, keys: list[Any], values: Any, ts: Any,
               report: HistoryReport) -> None:
    """``append_batch``; rows the store refuses are left out one by one, counted."""
    try:
        store.append_batch(stream, keys, values, ts)
        return
    except HeimdallError:
        pass
    for i in range(len(keys)):
        try:
            store.append_batch(stream, keys[i:i + 1], values[i:i + 1], ts[i:i + 1])
        except HeimdallError as exc:
            report.taken -= 1
            report.note_bad("the store", [(i, f"{type(exc).__name__}: {exc}")])
