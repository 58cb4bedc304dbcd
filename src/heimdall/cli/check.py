"""``heimdall check -c heimdall.toml``: validate a configuration without starting anything."""

from __future__ import annotations

import argparse
from typing import Any

from heimdall._preflight import preflight
from heimdall.config import load_config


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="validate a configuration file",
        description="Read and validate a heimdall.toml (with HEIMDALL_* overrides applied). "
        "Exit 0 and a summary when it is valid; exit 1 and every problem, each naming its "
        "key, when it is not.",
    )
    p.add_argument("-c", "--config", default="heimdall.toml", help="default: heimdall.toml")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    preflight(cfg)  # every check serve makes before it connects: models, files, directories
    print(f"{args.config}: ok")
    print(f"  source   {cfg.source.kind} {cfg.source.url}, subscription "
          f"{cfg.source.subscription!r} ({cfg.source.subscription_type}), "
          f"{cfg.source.workers} worker(s); redeliveries recognised among the last "
          f"{cfg.dedup_horizon:,} messages of each stream")
    print(f"  store    max_keys {cfg.store.max_keys:,}, idle_ttl_s {cfg.store.idle_ttl_s}")
    for s in cfg.streams:
        spec = s.spec()
        print(f"  stream   {s.name!r} <- {s.topic} ({s.format}); key {s.key!r} from "
              f"{s.key_from}, time from {s.time_from}; fields {list(spec.fields)} "
              f"{spec.dtype}; {spec.window}; dead letters -> {s.dlq_topic}")
    srv = cfg.server
    security = (" TLS" if srv.tls_cert else "") + (
        " +client certs" if srv.tls_client_ca else "") + (" token" if srv.token else "")
    grpc = srv.grpc + security if srv.grpc else "off"
    flight = srv.flight + security if srv.flight else "off"
    print(f"  server   metrics {srv.metrics or 'off'}; gRPC {grpc}; Arrow Flight {flight}")
    ck = cfg.active_checkpoint
    if ck is not None:
        print(f"  checkpoints every {ck.interval_s:g} s into {ck.dir!r} (keep {ck.keep}); "
              f"messages acknowledged once checkpointed")
    else:
        print("  checkpoints off: acknowledged once in memory (a restart starts empty)")
    return 0
