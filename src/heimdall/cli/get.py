"""``heimdall get ADDRESS STREAM KEY``: one key's window from a running Heimdall."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from heimdall.cli._render import add_remote_args, open_remote, positive_int, sparkline


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "get",
        help="print one key's window from a running Heimdall (gRPC)",
        description="Read one key's window over gRPC and print its newest rows as a table, "
        "with a sparkline of each field over the whole window and its mean, min and max. "
        "--json prints the whole window for scripts. Exit 1 with the reason if the server "
        "cannot be reached, refuses the token, or holds no such stream or key.",
    )
    add_remote_args(p)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("key", metavar="KEY", help="an integer KEY is tried as an int, then a str")
    p.add_argument("--rows", type=positive_int, default=10,
                   help="newest rows in the table (default 10)")
    p.add_argument("--json", action="store_true", help="the whole window as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from heimdall.errors import KeyNotFoundError, StreamNotFoundError

    with open_remote(args) as remote:
        key: Any = args.key
        try:
            w = remote.window(args.stream, int(key) if key.lstrip("-").isdigit() else key)
        except KeyNotFoundError as exc:
            if isinstance(exc, StreamNotFoundError) or not key.lstrip("-").isdigit():
                raise
            w = remote.window(args.stream, key)
    if args.json:
        print(json.dumps({"stream": w.stream, "key": w.key, "fields": list(w.fields),
                          "ts_ns": w.ts_ns.tolist(), "values": w.values.tolist()}))
        return 0
    console = Console()
    summary = Table(title=f"{w.stream} / {w.key!r}: {len(w)} rows", title_justify="left")
    for head in ("field", "window", "last", "mean", "min", "max"):
        summary.add_column(head, justify="left" if head in ("field", "window") else "right")
    for j, name in enumerate(w.fields):
        col = w.values[:, j].astype(np.float64)
        if len(col):
            summary.add_row(name, sparkline(col, 48), f"{col[-1]:.6g}", f"{col.mean():.6g}",
                            f"{col.min():.6g}", f"{col.max():.6g}")
    console.print(summary)
    rows = Table(title=f"newest {min(args.rows, len(w))} rows", title_justify="left")
    rows.add_column("ts_ns", justify="right")
    for name in w.fields:
        rows.add_column(name, justify="right")
    for t, vals in zip(w.ts_ns[-args.rows:].tolist(), w.values[-args.rows:].tolist(),
                       strict=True):
        rows.add_row(str(t), *(f"{v:.6g}" for v in vals))
    console.print(rows)
    return 0
