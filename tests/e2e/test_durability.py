"""kill -9 of ``heimdall serve`` while events stream into a real Apache Pulsar: after every
restart the checkpoint comes back, the broker redelivers what it lacks, and at the end every
window equals the oracle computed from the whole stream (no gap, no duplicate), and every
poison message is on the dead-letter topic."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

import heimdall as hd
from tests.integration.conftest import drain, events, oracle, payload, publish, wait_for

HEIMDALL = [sys.executable, "-m", "heimdall.cli"]
GOOD, POISON, KEYS, WINDOW = 180_000, 20_000, 1_000, 16


class Serve:
    """``heimdall serve`` in a subprocess; ``address`` once its gRPC server is up."""

    def __init__(self, cfg: Path, cwd: Path) -> None:
        self.proc = subprocess.Popen([*HEIMDALL, "serve", "-c", str(cfg)], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        self.lines.extend(iter(self.proc.stdout.readline, ""))

    @property
    def address(self) -> str | None:
        m = re.search(r"gRPC on (\S+)", "".join(self.lines))
        return m.group(1) if m else None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def term(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


def test_kill_9_at_five_random_points_loses_and_doubles_nothing(
        real_pulsar: Any, tmp_path: Path) -> None:
    url = real_pulsar.url
    topic = f"persistent://public/default/kill9-{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "heimdall.toml"
    cfg.write_text(f"""
[source]
url = "{url}"
subscription = "kill9"
workers = 2

[[streams]]
name = "s"
topic = "{topic}"
key = "id"
time = "ts"
fields = ["a", "b"]
window = {{ count = {WINDOW} }}

[server]
metrics = ""
grpc = "127.0.0.1:0"

[checkpoint]
dir = "{tmp_path / 'state'}"
interval_s = 0.5
max_pending = 5000
""")
    good = events(GOOD, KEYS, seed=11)
    rng = random.Random(7)
    stream: list[tuple[bytes, str]] = []
    poison_at = set(rng.sample(range(GOOD + POISON), POISON))
    it = iter(good)
    poison_ids = []
    for i in range(GOOD + POISON):
        if i in poison_at:
            poison_ids.append(f"poison-{i}")
            stream.append((f"not json {i}".encode(), f"k{i % KEYS}"))
        else:
            e = next(it)
            stream.append((payload(e), e[0]))

    def producer() -> None:  # ~8,000 messages/s for ~25 s
        for start in range(0, len(stream), 2_000):
            publish(url, topic, stream[start:start + 2_000])
            time.sleep(0.2)

    pub = threading.Thread(target=producer)
    pub.start()
    kills = []
    t0 = time.monotonic()
    for _ in range(5):
        s = Serve(cfg, tmp_path)
        wait_for(lambda s=s: s.address is not None, 60, "the gRPC server")
        time.sleep(rng.uniform(0.5, 3.0))  # a random point of its life
        s.kill()
        kills.append(round(time.monotonic() - t0, 1))
    final = Serve(cfg, tmp_path)
    try:
        wait_for(lambda: final.address is not None, 60, "the gRPC server")
        pub.join(180)
        remote = hd.connect(final.address or "")

        def applied() -> int:
            return int(remote.server_stats()["ingest"]["s"]["rows"])

        wait_for(lambda: applied() >= GOOD, 120, "every event applied")
        time.sleep(1.0)  # anything beyond would be a duplicate
        stats = remote.server_stats()
        assert stats["ingest"]["s"]["rows"] == GOOD, stats["ingest"]
        assert stats["checkpoint"]["restored_seq"] is not None
        expected = oracle(good, WINDOW)
        keys = sorted(expected)
        batch = remote.windows("s", keys)
        assert batch.found.all()
        for i, k in enumerate(keys):
            n = int(batch.lengths[i])
            np.testing.assert_array_equal(batch.values[i, WINDOW - n:], expected[k],
                                          err_msg=f"key {k} after kills at {kills} s")
        remote.close()
        assert final.term() == 0
    finally:
        if final.proc.poll() is None:
            final.proc.kill()
    dead = drain(url, f"{topic}-heimdall-dlq", "check")
    payloads = [d for d, _ in dead]
    distinct = set(payloads)
    assert distinct == {f"not json {i}".encode() for i in poison_at}
    # exactly once: a poison message redelivered after a kill (its acknowledgement lost) is
    # recognised by the original id the dead letters carry, read back at start
    dupes = len(payloads) - len(distinct)
    print(f"kills at {kills} s; dead letters {len(payloads)}, duplicates {dupes}",
          file=sys.stderr)
    assert dupes == 0
    assert all("heimdall-message-id" in p for _, p in dead)
    assert os.path.isdir(tmp_path / "state")
