"""``heimdall publish``: JSON lines from a file or stdin to a topic, keyed by a field.

Works against any Pulsar broker (``--url``); with ``-c heimdall.toml`` it finds the broker
the configuration names, the embedded one included (a running ``heimdall serve`` or
``heimdall demo`` writes its URL into ``<source.data_dir>/broker/url.json``), and a stream
name stands for its topic and key field.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from heimdall.errors import ConfigError, SourceError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="publish JSON lines (a file or stdin) to a topic, keyed by a field",
        description="Read one JSON object per line from FILE (or stdin: '-' or no FILE) and "
        "publish each to TARGET, a topic or a stream of the configuration, with the value "
        "of --key as the message key (Key_Shared routes by it). The broker is --url, or the "
        "one the configuration names (with url = \"embedded\": the embedded broker of a "
        "running `heimdall serve -c` on that configuration). A line that is not a JSON "
        "object is reported and skipped (exit 1 at the end); --raw sends lines as they are.",
    )
    p.add_argument("target", metavar="TARGET",
                   help="a stream name from the configuration, or a topic")
    p.add_argument("file", metavar="FILE", nargs="?", default="-",
                   help="JSON lines to publish (default: stdin)")
    p.add_argument("-c", "--config", default="heimdall.toml",
                   help="the configuration naming the broker and streams (default: "
                   "heimdall.toml; not needed with --url and a topic)")
    p.add_argument("--url", default=None, help="the broker, e.g. pulsar://broker:6650")
    p.add_argument("--key", default=None, metavar="FIELD",
                   help="payload field whose value is the message key (default: the "
                   "stream's key field)")
    p.add_argument("--raw", action="store_true",
                   help="send each line as it is, JSON or not (to try dead letters)")
    p.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(broker URL, topic, key field) from the arguments and, where needed, the config."""
    cfg = None
    path = Path(args.config)
    if args.url is None or not args.target.startswith(("persistent://", "non-persistent://")):
        if path.exists():
            from heimdall.config import load_config

            cfg = load_config(path)
        elif args.url is None:
            raise ConfigError(f"{path}: no such file; give --url pulsar://HOST:PORT, or -c "
                              f"with the configuration of the Heimdall to publish to")
    topic, key = args.target, args.key
    if cfg is not None:
        stream = next((s for s in cfg.streams if s.name == args.target), None)
        if stream is not None:
            topic = stream.topic
            key = key or (stream.key if stream.key_from == "payload" else None)
    url = args.url
    if url is None:
        if cfg is None:  # pragma: no cover (loaded above whenever --url is missing)
            raise ConfigError("give --url or -c")
        url = cfg.source.url
        if url == "embedded":
            from heimdall.pipeline import broker_dir
            from heimdall.sources._embedded import running_url

            url = running_url(broker_dir(cfg))
            if url is None:
                raise SourceError(
                    f"no embedded broker is running for {path} (in "
                    f"{broker_dir(cfg)}): start `heimdall serve -c {path}` first, "
                    f"or give --url")
    return url, topic, key


def _lines(name: str) -> Iterator[tuple[int, bytes]]:
    stream: IO[bytes]
    with contextlib.ExitStack() as stack:
        if name == "-":
            stream = sys.stdin.buffer
        else:
            try:
                stream = stack.enter_context(open(name, "rb"))
            except OSError as exc:
                raise ConfigError(f"{name}: cannot read it: {exc.strerror}") from None
        for n, line in enumerate(stream, 1):
            line = line.strip()
            if line:
                yield n, line


def run(args: argparse.Namespace) -> int:
    from heimdall.sources._publish import Publisher

    url, topic, key_field = _target(args)
    publisher = Publisher(url)
    skipped = 0
    t0 = last = time.monotonic()
    try:
        for n, line in _lines(args.file):
            key = None
            if not args.raw or key_field:
                try:
                    event = json.loads(line)
                    if not isinstance(event, dict):
                        raise ValueError(f"a JSON {type(event).__name__}, not an object")
                except ValueError as exc:
                    if not args.raw:
                        skipped += 1
                        print(f"line {n}: not a JSON object ({exc}); skipped",
                              file=sys.stderr)
                        continue
                    event = {}
                if key_field and event.get(key_field) is not None:
                    key = str(event[key_field])
            publisher.send(topic, line, key)
            if sys.stderr.isatty() and time.monotonic() - last > 1.0:
                last = time.monotonic()
                print(f"\r{publisher.sent:,} sent ...", end="", file=sys.stderr)
        publisher.flush()
    finally:
        publisher.close()
    print(f"published {publisher.sent:,} message(s) to {topic} at {url} in "
          f"{time.monotonic() - t0:.1f} s"
          + (f", keyed by {key_field!r}" if key_field else ", no key")
          + (f"; {skipped} line(s) skipped" if skipped else ""))
    return 1 if skipped else 0
