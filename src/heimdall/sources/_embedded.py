"""The embedded broker: a ``pulsar-lite`` process in the data directory, on a free port.

It speaks the Pulsar protocol to the official client, needs no Java, and is Heimdall's
default when no broker is configured. Its log goes to ``<data_dir>/broker.log`` and its
metrics port is off. It runs in a session of its own, out of the terminal's reach: Ctrl-C
stops Heimdall, which stops the broker last. The process is started with
``PR_SET_PDEATHSIG`` (Linux, by ``setpriv``): if the Heimdall process dies, even by SIGKILL,
the kernel ends the broker too, so no orphan keeps the data directory's lock. Messages and
cursors survive a restart on the same directory.

What pulsar-lite gets wrong is listed in the project notes; Heimdall uses the subscription
types and the single-process layout that hold there (see ``PulsarSource``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from heimdall.errors import SourceError

_CONFIG = "# written by Heimdall: no metrics port (it would take 0.0.0.0:8080)\n" \
          "[metrics]\nenabled = false\n"


def dies_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel kills it when the thread that starts it ends, even by
    SIGKILL (``PR_SET_PDEATHSIG``, set by util-linux's ``setpriv`` before it execs ``argv``).
    Not by a ``preexec_fn``: Python code between fork and exec, in a process with other
    threads (gRPC, the Pulsar client), can crash or hang the child. Where ``setpriv`` is
    missing (not Linux), ``argv`` as it is."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    try:
        from pulsar_lite.binary_finder import find_pulsar_lite_binary
    except ImportError as exc:
        raise SourceError(
            "the embedded broker needs the pulsar-lite package: pip install pulsar-lite"
        ) from exc
    return str(find_pulsar_lite_binary())


def running_url(data_dir: str | os.PathLike[str]) -> str | None:
    """The URL of the embedded broker running in ``data_dir`` (as ``Pipeline`` lays it out:
    ``<source.data_dir>/broker``), or None when none runs there.

    >>> running_url("/nonexistent") is None
    True
    """
    try:
        info = json.loads((Path(data_dir) / "url.json").read_text())
        os.kill(int(info["broker_pid"]), 0)  # still alive
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(info["url"])


class EmbeddedPulsar:
    """A pulsar-lite broker process. ``start()`` blocks until it accepts connections.

    >>> # with EmbeddedPulsar("heimdall-data") as broker: client = pulsar.Client(broker.url)
    """

    def __init__(self, data_dir: str | os.PathLike[str], port: int = 0,
                 start_timeout_s: float = 20.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``pulsar://`` service URL."""
        return f"pulsar://127.0.0.1:{self.port}"

    @property
    def url_path(self) -> Path:
        """A JSON file naming the running broker's URL (gone once it stops)."""
        return self.data_dir / "url.json"

    @property
    def log_path(self) -> Path:
        """Where the broker writes its log."""
        return self.data_dir / "broker.log"

    def start(self) -> EmbeddedPulsar:
        """Start the broker; retries on another port if the chosen one was taken meanwhile."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "pulsar-lite.toml").write_text(_CONFIG)
        binary = _binary()
        fixed = self.port != 0
        for _attempt in range(1 if fixed else 5):
            port = self.port if fixed else free_port()
            with open(self.log_path, "ab") as log:
                proc = subprocess.Popen(
                    dies_with_parent([binary, "--addr", f"127.0.0.1:{port}", "--db-path",
                                      str(self.data_dir / "data.db"), "--log-level", "warn"]),
                    cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    # its own session: a terminal's Ctrl-C (sent to the foreground process
                    # group) must not kill it before Heimdall has stopped using it
                    start_new_session=True,
                )
            if self._wait_ready(proc, port):
                self._proc, self.port = proc, port
                # for `heimdall publish` and other tools: where the running broker listens
                self.url_path.write_text(json.dumps({"url": self.url, "pid": os.getpid(),
                                                     "broker_pid": proc.pid}))
                return self
        raise SourceError(
            f"the embedded broker did not start in {self.data_dir}; see {self.log_path}: "
            f"{self._log_tail()}"
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", port), timeout=0.5
            ):
                return True
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        return False

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id, while it runs."""
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``). Idempotent."""
        proc, self._proc = self._proc, None
        with contextlib.suppress(OSError):
            self.url_path.unlink()
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedPulsar:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
