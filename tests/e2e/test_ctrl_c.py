"""Ctrl-C in a real terminal: ``heimdall demo`` and ``heimdall serve`` run under a
pseudo-terminal whose Ctrl-C byte makes the kernel send SIGINT to the whole foreground
process group, as a terminal does. Each must stop in order (the embedded broker last) and
exit 0 with its summary, every time, leaving no process behind."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

HEIMDALL = [sys.executable, "-m", "heimdall.cli"]


class Terminal:
    """A command under a pseudo-terminal: its session leader, the terminal's foreground
    process group."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover (the child)
            os.chdir(cwd)
            os.execvpe(argv[0], argv, {**os.environ, "COLUMNS": "120", "LINES": "40"})
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.pid, self.fd = pid, fd
        self.output = b""

    def read_until(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text.encode() not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen in {timeout_s} s: {self.text[-3000:]}")
            if not self._read(0.2):
                raise AssertionError(f"ended before {text!r}: {self.text[-3000:]}")

    def _read(self, wait_s: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait_s)
        if ready:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the other side closed
                return False
            if not chunk:
                return False
            self.output += chunk
        return True

    def ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")  # the line discipline sends SIGINT to the foreground group

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._read(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.05):
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"still running {timeout_s} s after Ctrl-C: {self.text[-3000:]}")

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


def _serve_config(tmp_path: Path, topic: str) -> Path:
    """``heimdall.toml`` for ``serve`` on the embedded broker; returns its data directory."""
    data = tmp_path / "serve-data"
    (tmp_path / "heimdall.toml").write_text(f"""
[source]
url = "embedded"
data_dir = "{data}"

[server]
metrics = ""

[[streams]]
name = "sensors"
topic = "persistent://public/default/{topic}"
key = "machine_id"
fields = ["temp"]
window = {{ count = 8 }}
""")
    return data


def _left_behind(marker: Path) -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True,
                        check=True)
    return [line for line in ps.stdout.splitlines() if str(marker) in line]


@pytest.mark.slow
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_ctrl_c_ends_the_demo_with_its_summary(tmp_path: Path, round_: int) -> None:
    data = tmp_path / "demo-data"
    extra = ["--model-processes", "2"] if round_ == 3 else []
    term = Terminal([*HEIMDALL, "demo", "--machines", "200", "--rate", "4000",
                     "--data-dir", str(data), *extra], tmp_path)
    term.read_until("Ctrl-C stops", 120)
    term.read_until("events/s", 30)  # the live view is up
    term.ctrl_c()
    code = term.wait(90)
    assert code == 0, term.text[-3000:]
    assert "summary" in term.text
    assert "Traceback" not in term.text
    assert "Failed to establish connection" not in term.text
    assert not _left_behind(data)


@pytest.mark.slow
def test_ctrl_c_twice_still_ends_the_demo_in_order(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    term = Terminal([*HEIMDALL, "demo", "--machines", "200", "--rate", "4000",
                     "--data-dir", str(data)], tmp_path)
    term.read_until("Ctrl-C stops", 120)
    term.ctrl_c()
    term.ctrl_c()
    assert term.wait(90) == 0, term.text[-3000:]
    assert "summary" in term.text
    assert "Traceback" not in term.text
    assert not _left_behind(data)


@pytest.mark.slow
@pytest.mark.parametrize("round_", [1, 2])
def test_ctrl_c_stops_serve_with_its_summary(tmp_path: Path, round_: int) -> None:
    data = _serve_config(tmp_path, f"sensors-{round_}")
    term = Terminal([*HEIMDALL, "serve", "-c", "heimdall.toml"], tmp_path)
    term.read_until("serving; SIGINT or SIGTERM stops", 120)
    term.ctrl_c()
    assert term.wait(60) == 0, term.text[-3000:]
    assert "stopped: stream sensors" in term.text
    assert "Traceback" not in term.text
    assert not _left_behind(data)


@pytest.mark.slow
def test_kill_9_of_serve_takes_its_embedded_broker_with_it(tmp_path: Path) -> None:
    data = _serve_config(tmp_path, "sensors")
    term = Terminal([*HEIMDALL, "serve", "-c", "heimdall.toml"], tmp_path)
    term.read_until("serving; SIGINT or SIGTERM stops", 120)
    assert _left_behind(data), "the embedded broker is not running"
    os.kill(term.pid, 9)
    term.wait(10)
    deadline = time.monotonic() + 10
    while _left_behind(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _left_behind(data), "the broker outlived Heimdall's kill -9"
