"""The ``heimdall`` command: one module per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from heimdall.errors import HeimdallError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``heimdall`` command. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="heimdall",
        description="Heimdall keeps the latest window of every live stream in memory and "
        "hands it to models by reference.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from heimdall.cli import backfill, check, demo, export, get, publish, serve, shm, top

    demo.add_parser(sub)
    serve.add_parser(sub)
    check.add_parser(sub)
    backfill.add_parser(sub)
    export.add_parser(sub)
    get.add_parser(sub)
    publish.add_parser(sub)
    top.add_parser(sub)
    shm.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except HeimdallError as exc:
        print(f"heimdall: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
