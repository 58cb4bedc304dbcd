"""``heimdall serve`` as a child process for the end-to-end tests: started, its output
collected line by line, stopped with SIGTERM, and never left behind."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.conftest import wait_for

HEIMDALL = [sys.executable, "-m", "heimdall.cli"]


class Serving:
    """A running ``heimdall serve``: its process and the lines it has printed so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def address(self, what: str) -> str:
        """The address the log line ``<what> on HOST:PORT`` names, once it is printed."""
        wait_for(lambda: f"{what} on " in self.output, 60, what)
        found = re.search(rf"{what} on (\S+)", self.output)
        assert found is not None
        return found.group(1)

    def stop(self) -> int:
        """SIGTERM, then its exit status (it must stop within 60 s)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@contextmanager
def serving(cfg: Path, env: dict[str, str] | None = None) -> Iterator[Serving]:
    """``heimdall serve -c cfg`` in cfg's folder; killed on the way out if still running."""
    proc = subprocess.Popen([*HEIMDALL, "serve", "-c", str(cfg)], cwd=cfg.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    s = Serving(proc)
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: s.lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        yield s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        proc.stdout.close()
