"""A cluster on this host, for the demo, the benchmark and the tests: ``heimdall serve`` node
processes started, killed (``kill -9``) and stopped, and the broker's retention set so a
node can replay what it takes over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from heimdall.errors import SourceError


def free_address() -> str:
    """``127.0.0.1:PORT`` with a port free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def keep_history(admin_url: str, namespace: str = "public/default") -> None:
    """Keep all of a namespace's history: a cluster node replays it for the keys it takes over
    (docs/cluster.md). Raises SourceError if the admin API refuses."""
    req = urllib.request.Request(
        f"{admin_url.rstrip('/')}/admin/v2/namespaces/{namespace}/retention",
        data=b'{"retentionTimeInMinutes": -1, "retentionSizeInMB": -1}',
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except OSError as exc:
        raise SourceError(f"setting retention at {admin_url}: {exc}") from exc


class NodeProcess:
    """One ``heimdall serve -c <workdir>/<name>.toml`` process, its log beside it. ``streams``
    is the ``[[streams]]`` part of the configuration, shared by every node."""

    def __init__(self, name: str, broker_url: str, admin_url: str, streams: str,
                 workdir: Path, *, max_keys: int = 100_000, refresh_s: float = 0.5,
                 subscription: str = "heimdall") -> None:
        self.name = name
        self.address = free_address()
        self.config = workdir / f"{name}-{subscription}.toml"
        self.config.write_text(f"""
[source]
url = "{broker_url}"
subscription = "{subscription}"
workers = 1
data_dir = "{workdir / name}"
[store]
max_keys = {max_keys}
[server]
metrics = ""
grpc = "{self.address}"
[cluster]
node = "{name}"
admin_url = "{admin_url}"
refresh_s = {refresh_s}
{streams}""")
        self.log = workdir / f"{name}-{subscription}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0  # where this run's lines start in the log

    def launch(self) -> NodeProcess:
        """Start the process (in a session of its own: a terminal's Ctrl-C is not for it; it
        dies with this process, even on SIGKILL, as the embedded broker does)."""
        from heimdall.sources._embedded import dies_with_parent

        with open(self.log, "ab") as log:
            self._log_from = log.tell()
            self.proc = subprocess.Popen(
                dies_with_parent([sys.executable, "-m", "heimdall.cli", "serve",
                                  "-c", str(self.config)]),
                stdout=log, stderr=log, start_new_session=True)
        return self

    def wait_serving(self, timeout_s: float = 120.0) -> NodeProcess:
        """Block until it logs that it serves. Raises SourceError (its log's tail) if not."""
        deadline = time.monotonic() + timeout_s
        while b"serving;" not in self.log.read_bytes()[self._log_from:]:
            if self.proc is None or self.proc.poll() is not None \
                    or time.monotonic() > deadline:
                raise SourceError(f"node {self.name} did not start:\n"
                                  f"{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def start(self) -> NodeProcess:
        return self.launch().wait_serving()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise SourceError(f"node {self.name} is not started")
        return self.proc.pid

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc is not None and self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (a graceful stop), then kill -9 after ``timeout_s``."""
        if self.proc is not None and self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
