"""What the CLI's subcommands share: sparklines, and the options to reach a remote Heimdall."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from heimdall.cluster.client import ClusterStore
from heimdall.remote import ClientTLS, RemoteStore, connect

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(x: np.ndarray, width: int = 40) -> str:
    """A one-line sketch of ``x`` (its last ``width`` points).

    >>> sparkline(np.array([0.0, 1.0, 2.0, 3.0]))
    '▁▃▅█'
    """
    x = np.asarray(x, dtype=np.float64)[-width:]
    if x.size == 0:
        return ""
    lo, hi = float(x.min()), float(x.max())
    scale = (len(SPARK) - 1) / (hi - lo) if hi > lo else 0.0
    return "".join(SPARK[int((v - lo) * scale)] for v in x)


def mib(n: float) -> str:
    """Bytes as MiB, to one decimal (two below 1 MiB).

    >>> mib(3 * 2**20), mib(2**19)
    ('3.0 MiB', '0.50 MiB')
    """
    m = n / 2**20
    return f"{m:.1f} MiB" if m >= 1 else f"{m:.2f} MiB"


def memory(stats: dict[str, Any]) -> str:
    """A store's (or stream's) memory: what its keys use now of what is reserved at start.

    >>> memory({"memory_bytes": 620 * 2**20, "memory_used_bytes": 3 * 2**20})
    '3.0 MiB in use of 620.0 MiB reserved'
    """
    return (f"{mib(stats.get('memory_used_bytes', 0))} in use of "
            f"{mib(stats.get('memory_bytes', 0))} reserved")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, or a clear usage error.

    >>> positive_int("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; received {text!r}"
                                         ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; received {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0, or a clear usage error.

    >>> positive_float("0.5")
    0.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0; received {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; received {text}")
    return value


def add_remote_args(p: Any, address_help: str = "") -> None:
    """ADDRESS and the options to reach a remote Heimdall's gRPC server."""
    p.add_argument("address", metavar="ADDRESS",
                   help=address_help or "the server's host:port (server.grpc); a cluster: "
                   "any node's, or several, comma-separated (each key is read from its node)")
    p.add_argument("--cluster", action="store_true",
                   help="ADDRESS is a node of a cluster: read every node through it")
    p.add_argument("--token", default=os.environ.get("HEIMDALL_TOKEN"),
                   help="bearer token (default: $HEIMDALL_TOKEN)")
    p.add_argument("--tls", action="store_true", help="use TLS with the system's CA roots")
    p.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting this CA file")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="client certificate's key")
    p.add_argument("--timeout", type=positive_float, default=5.0, metavar="S",
                   help="seconds to connect and per call (default: 5)")


def open_remote(args: argparse.Namespace) -> RemoteStore | ClusterStore:
    """One server, or a cluster (several addresses, or ``--cluster``)."""
    tls: ClientTLS | None = None
    if args.tls or args.tls_ca or args.tls_cert:
        tls = ClientTLS(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key)
    addresses: list[str] = [a.strip() for a in str(args.address).split(",") if a.strip()]
    if len(addresses) > 1 or getattr(args, "cluster", False):
        return connect(addresses, token=args.token, tls=tls, timeout_s=args.timeout)
    return connect(addresses[0] if addresses else "", token=args.token, tls=tls,
                   timeout_s=args.timeout)
