"""``heimdall serve -c heimdall.toml``: run the pipeline until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any

from heimdall._signals import stop_on_signals
from heimdall.config import load_config
from heimdall.pipeline import Pipeline


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the pipeline of a configuration until SIGINT/SIGTERM",
        description="Consume the configured topics into windows and serve metrics, until "
        "SIGINT or SIGTERM; then stop receiving, finish the batch in hand, flush "
        "acknowledgements and close. HEIMDALL_* environment variables override the file "
        "(e.g. HEIMDALL_SOURCE__URL=pulsar://broker:6650).",
    )
    p.add_argument("-c", "--config", default="heimdall.toml", help="default: heimdall.toml")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--start-empty", action="store_true",
                   help="start with empty windows when the newest checkpoint fails "
                   "verification (by default serve refuses: the broker already acknowledged "
                   "what it covered)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("heimdall")
    config = load_config(args.config)
    if args.start_empty and config.checkpoint is not None:
        config = config.model_copy(update={
            "checkpoint": config.checkpoint.model_copy(update={"on_corrupt": "start_empty"})})
    pipe = Pipeline(config)
    # from here on SIGINT (Ctrl-C: the terminal's whole foreground group, but the embedded
    # broker and model workers are shielded from it) and SIGTERM stop in order, even during
    # start-up; a second one changes nothing
    with stop_on_signals(on_stop=pipe.cancel_start) as stop:
        try:
            log.info("starting: %d stream(s) from %s", len(pipe.config.streams),
                     pipe.config.source.url)
            pipe.start()
            # what start-up made (modules, config, clients: ~140,000 objects) is never
            # garbage the cycle collector must find: frozen, a full collection no longer
            # walks it (~100 ms -> ~0, every thread stalled meanwhile)
            gc.freeze()
            if pipe.metrics_port:
                log.info("metrics on http://%s:%d/metrics",
                         (pipe.config.server.metrics or "").rpartition(":")[0],
                         pipe.metrics_port)
            if pipe.store.segment is not None:
                log.info("store in shared memory %r: hd.attach(%r) from other processes",
                         pipe.store.segment.name, pipe.store.segment.name)
            log.info("serving; SIGINT or SIGTERM stops")
            stop.wait()
            pipe.stop()  # the source finishes its batch and acknowledges, then the rest
            for name, s in pipe.stats()["ingest"].items():
                log.info("stopped: stream %s: %d messages, %d rows, %d dead letters, "
                         "%d redeliveries dropped", name, s["messages"], s["rows"],
                         s["dead_letters"], s["duplicates"])
        finally:
            pipe.close()  # model worker processes end; a shared-memory store is unlinked
    return 0
