"""``heimdall backfill``: a checkpoint built from history, that ``heimdall serve`` starts from.

The history goes through ``hd.replay`` (the live decoders' conversion and the store's own
writes) into a store made as ``serve`` makes it, and is written as the first checkpoint of
the configuration's ``[checkpoint] dir``. The checkpoint carries the boundary: ``serve``
leaves out (and counts) live rows with event times at or before it, since history holds them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from heimdall.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "backfill",
        help="build a checkpoint from history files that `heimdall serve` starts from",
        description="Replay history (Parquet, Arrow IPC or CSV files, or directories of "
        "them; columns named like the stream's key, time and fields) into the windows of one "
        "stream, as live ingest would have built them, and write them as the first "
        "checkpoint of the configuration's [checkpoint] dir. `heimdall serve` then starts "
        "warm from it and goes on live; live rows with event times at or before the "
        "boundary (--until, default the newest event time in the history) are left out and "
        "counted, since the history holds them. See docs/offline.md.",
    )
    p.add_argument("-c", "--config", default="heimdall.toml",
                   help="the configuration serve will run (default: heimdall.toml)")
    p.add_argument("--from", dest="paths", nargs="+", required=True, metavar="PATH",
                   help="history files or directories, in arrival order")
    p.add_argument("--stream", default=None,
                   help="the stream the history is of (default: the configuration's only "
                   "stream)")
    p.add_argument("--until", default=None, metavar="TIME",
                   help="the boundary: history after it is left out, live events at or "
                   "before it are left out by serve. ISO 8601 (2026-12-01T00:00:00Z) or a "
                   "number in the stream's time_unit (default: the history's newest)")
    p.add_argument("--time-column", default=None, metavar="NAME",
                   help="the history's time column, for a stream stamped on arrival")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from heimdall.checkpoint import Checkpointer
    from heimdall.checkpoint import _file as checkpoint_file
    from heimdall.config import load_config
    from heimdall.offline.history import HistoryReport, read_history
    from heimdall.offline.replay_store import apply_rows
    from heimdall.sources._ingest import StreamIngest
    from heimdall.window import WindowStore

    cfg = load_config(args.config)
    ckpt = cfg.active_checkpoint
    if ckpt is None:
        raise ConfigError(f"{args.config}: backfill writes a checkpoint, and checkpoints are "
                          f"off; add a [checkpoint] section (docs/RELIABILITY.md)")
    names = [s.name for s in cfg.streams]
    name = args.stream or (names[0] if len(names) == 1 else None)
    if name is None:
        raise ConfigError(f"the configuration has streams {names}: say which with --stream")
    if name not in names:
        raise ConfigError(f"no stream {name!r} in {args.config}; streams are {names}")
    directory = Path(ckpt.dir)
    if directory.exists() and checkpoint_file.list_checkpoints(directory):
        raise ConfigError(f"{directory} holds checkpoints already: backfill starts a new "
                          f"deployment's state; move them aside first")
    scfg = next(s for s in cfg.streams if s.name == name)
    spec = scfg.spec()
    until = _parse_until(args.until, spec.time_unit) if args.until is not None else None
    err = Console(stderr=True)
    store = WindowStore([s.spec() for s in cfg.streams], **cfg.store_kwargs())
    report = HistoryReport()
    newest = None
    after = 0
    try:
        with err.status(f"replaying history into stream {name!r}") as status:
            for rows in read_history(args.paths, spec, report, time_column=args.time_column):
                if until is not None:
                    keep = rows.ts_ns <= until
                    if not keep.all():
                        after += int((~keep).sum())
                        rows = rows.take(keep)
                if len(rows.keys):
                    apply_rows(store, name, rows.keys, rows.values, rows.ts_ns, report)
                    top = int(rows.ts_ns.max())
                    newest = top if newest is None else max(newest, top)
                status.update(f"replaying history into stream {name!r}: {report.rows:,} rows")
        boundary = until if until is not None else newest
        ingests = [StreamIngest(s, store, cfg.dedup_horizon, cfg.source.max_message_bytes)
                   for s in cfg.streams]
        for i in ingests:
            if i.name == name:
                i.boundary_ns = boundary
                i.counters.rows = report.taken - after
        path = Checkpointer(ckpt, store, ingests).checkpoint()
        if path is None:
            raise ConfigError(f"writing the checkpoint into {directory} failed (see above)")
        keys = len(store.keys(name))
    finally:
        store.close()
    print(f"stream {name!r}: {report.rows:,} rows read, {report.taken - after:,} in the "
          f"windows of {keys:,} keys", file=sys.stderr)
    if after:
        print(f"  {after:,} rows after --until left out", file=sys.stderr)
    if report.left_out:
        print(f"  {report.left_out:,} rows left out: {dict(report.bad)}", file=sys.stderr)
        for e in report.examples:
            print(f"    {e}", file=sys.stderr)
    shown = _show_ns(boundary) if boundary is not None else "none (no row taken)"
    print(f"boundary: {shown}; live rows at or before it are left out", file=sys.stderr)
    print(f"wrote {path}; start with: heimdall serve -c {args.config}", file=sys.stderr)
    return 0


def _parse_until(text: str, unit: str) -> int:
    from heimdall.schema import NS_PER_UNIT

    try:
        return int(text) * NS_PER_UNIT[unit]
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--until {text!r}: use ISO 8601 (2026-12-01T00:00:00Z) or a "
                          f"number in {unit}") from None
    if t.tzinfo is None:
        raise ConfigError(f"--until {text!r}: give a time zone (Z or +HH:MM)")
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _show_ns(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    return f"{t.isoformat()} ({ns} ns)"
