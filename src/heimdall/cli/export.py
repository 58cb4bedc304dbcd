"""``heimdall export``: the windows a node holds now, or a checkpoint holds, to Parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from heimdall.cli._render import add_remote_args, open_remote
from heimdall.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write the windows of a running node, or of a checkpoint, to Parquet",
        description="Write every key's window to Parquet in long format: a row per event "
        "held, with columns key, ts_ns and the stream's fields, each key's rows oldest "
        "first. FROM is a running node's gRPC address (host:port; several comma-separated, "
        "or --cluster, for a cluster) or a checkpoint directory (its newest checkpoint, read "
        "with the stream settings of -c). With one stream, OUT is a .parquet file; with "
        "several, a directory of STREAM.parquet files.",
    )
    add_remote_args(p, address_help="a node's host:port, or a checkpoint directory")
    p.add_argument("-o", "--out", required=True, metavar="OUT",
                   help="the Parquet file (one stream) or directory (several)")
    p.add_argument("--stream", action="append", default=None, metavar="NAME",
                   help="a stream to export (repeat for several; default: every stream)")
    p.add_argument("-c", "--config", default="heimdall.toml",
                   help="for a checkpoint: the configuration it was made under (default: "
                   "heimdall.toml)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from heimdall.offline.export import export_windows

    source = Path(args.address)
    if source.is_dir():
        reader: Any = _checkpoint_store(source, args.config)
        streams = list(reader.streams)
    else:
        reader = open_remote(args)
        streams = list(reader.stats()["streams"])
    try:
        chosen = args.stream or streams
        unknown = [s for s in chosen if s not in streams]
        if unknown:
            raise ConfigError(f"no stream(s) {unknown} there; streams are {streams}")
        out = Path(args.out)
        if len(chosen) == 1 and out.suffix == ".parquet":
            targets = {chosen[0]: out}
        else:
            if out.suffix == ".parquet":
                raise ConfigError(f"{len(chosen)} streams: give -o a directory, not {out}")
            out.mkdir(parents=True, exist_ok=True)
            targets = {s: out / f"{s}.parquet" for s in chosen}
        for stream, path in targets.items():
            keys, rows = export_windows(reader, stream, path)
            print(f"{stream}: {keys:,} keys, {rows:,} rows -> {path}", file=sys.stderr)
    finally:
        reader.close()
    return 0


def _checkpoint_store(directory: Path, config: str) -> Any:
    from heimdall.checkpoint import Checkpointer
    from heimdall.config import CheckpointConfig, load_config
    from heimdall.window import WindowStore

    if not Path(config).exists():
        raise ConfigError(f"{config}: no such file; a checkpoint is read with the stream "
                          f"settings it was made under: give -c heimdall.toml")
    cfg = load_config(config)
    store = WindowStore([s.spec() for s in cfg.streams],
                        **{**cfg.store_kwargs(), "shared_memory": None})
    try:
        seq = Checkpointer(CheckpointConfig(dir=str(directory)), store, []).restore()
    except BaseException:
        store.close()
        raise
    if seq is None:
        store.close()
        raise ConfigError(f"{directory}: no checkpoint there")
    return store
