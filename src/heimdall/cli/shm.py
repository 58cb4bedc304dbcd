"""``heimdall shm list`` and ``heimdall shm remove NAME``: shared-memory stores on this host."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from heimdall.window._shared import list_segments, remove_segment


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "shm",
        help="list or remove shared-memory stores on this host",
        description="Shared-memory stores (store.shared_memory) live in /dev/shm until their "
        "writer closes them. `list` shows each with its writer's state; `remove NAME` "
        "unlinks one whose writer was killed (it refuses while the writer runs).",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="the stores, their size and their writer's state")
    rm = verbs.add_parser("remove", help="unlink a store a killed writer left")
    rm.add_argument("name", metavar="NAME")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.verb == "remove":
        remove_segment(args.name)
        print(f"removed {args.name}")
        return 0
    segments = list_segments()
    if not segments:
        print("no Heimdall shared-memory stores on this host")
        return 0
    t = Table(title="Heimdall shared-memory stores")
    for col in ("name", "MiB", "writer pid", "state"):
        t.add_column(col, justify="left" if col in ("name", "state") else "right")
    for s in segments:
        t.add_row(s["name"], f"{s['bytes'] / 2**20:,.1f}", str(s["writer_pid"]), s["state"])
    Console().print(t)
    return 0
