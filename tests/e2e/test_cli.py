"""The ``heimdall`` command as a user runs it: demo, serve (with SIGTERM) and check."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.e2e._serve import serving
from tests.integration.conftest import (
    assert_nothing_left,
    events,
    payload,
    publish,
    wait_for,
)

HEIMDALL = [sys.executable, "-m", "heimdall.cli"]


def test_demo_runs_for_its_duration_and_exits_0(tmp_path: Path) -> None:
    proc = subprocess.run([*HEIMDALL, "demo", "--duration", "10", "--rate", "5000"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "summary" in proc.stdout
    assert "dead letters" in proc.stdout
    assert "Traceback" not in proc.stderr
    out = " ".join(proc.stdout.split())  # rich wraps lines
    scored = re.search(r"anomaly detector: ([\d,]+) windows scored", out)
    assert scored is not None, out
    assert int(scored.group(1).replace(",", "")) > 10_000
    pr = re.search(r"precision ([\d.]+), recall ([\d.]+)", out)
    assert pr is not None, out
    # 10 of 1,000 machines drift; after 10 s their means sit ~8 standard errors out
    assert float(pr.group(1)) == 1.0
    assert float(pr.group(2)) >= 0.9


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_serve_stops_on_sigterm_and_acknowledges_what_it_applied(
    real_pulsar: Any, tmp_path: Path
) -> None:
    topic = f"persistent://public/default/serve-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    cfg = tmp_path / "heimdall.toml"
    cfg.write_text(f"""
[source]
url = "{real_pulsar.url}"
subscription = "serve-test"
workers = 2

[[streams]]
name = "s"
topic = "{topic}"
key = "id"
time = "ts"
fields = ["a", "b"]
window = {{ count = 8 }}

[server]
metrics = "127.0.0.1:{port}"
""")
    evs = events(5_000, 50, seed=5)
    proc = subprocess.Popen([*HEIMDALL, "serve", "-c", str(cfg)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _up(port), 60, "the metrics endpoint")
        publish(real_pulsar.url, topic, [(payload(e), e[0]) for e in evs])
        wait_for(lambda: _metric(port, "heimdall_rows_applied_total") >= len(evs), 60,
                 "all rows applied")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped: stream s: 5000 messages" in out
    assert_nothing_left(real_pulsar.url, topic, "serve-test")


def _up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
    except OSError:
        return False
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_accepts_a_good_config_and_names_bad_keys(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("""
[[streams]]
name = "sensors"
topic = "persistent://public/default/sensors"
key = "machine_id"
time = "ts"
fields = ["temp", "vibration", "rpm"]
dtype = "float32"
window = { count = 256 }

[server]
grpc = "127.0.0.1:50051"
flight = "127.0.0.1:8815"
""")
    ok = subprocess.run([*HEIMDALL, "check", "-c", str(good)], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    assert "sensors" in ok.stdout
    assert "gRPC 127.0.0.1:50051; Arrow Flight 127.0.0.1:8815" in ok.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text("""
[source]
workers = 0
subscription_type = "round_robin"

[[streams]]
name = "sensors"
topic = "t"
fields = ["temp"]
window = { count = 10, seconds = 5 }
colour = "blue"
""")
    res = subprocess.run([*HEIMDALL, "check", "-c", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1
    err = res.stderr
    assert "source.workers" in err
    assert "source.subscription_type" in err
    assert "streams[0] ('sensors').window" in err
    assert "streams[0] ('sensors').colour: unknown key" in err
    assert "Traceback" not in err

    missing = subprocess.run([*HEIMDALL, "check", "-c", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert "no such file" in missing.stderr

    env = dict(os.environ, HEIMDALL_STORE__MAX_KEYS="-3")
    res = subprocess.run([*HEIMDALL, "check", "-c", str(good)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 1
    assert "store.max_keys" in res.stderr




def test_serve_with_grpc_then_get_and_top(tmp_path: Path) -> None:
    cfg = tmp_path / "heimdall.toml"
    cfg.write_text("""
[[streams]]
name = "sensors"
topic = "sensors-e2e"
key = "machine_id"
fields = ["temp", "rpm"]
window = { count = 16 }

[server]
metrics = ""
grpc = "127.0.0.1:0"
""")
    env = {**os.environ, "HEIMDALL_SERVER__TOKEN": "e2e-secret"}
    with serving(cfg, env) as serve:
        address = serve.address("gRPC")
        import heimdall as hd

        with hd.connect(address, token="e2e-secret") as remote:
            remote.push("sensors", ["m-1"] * 20, [[70.0 + i, 1500.0] for i in range(20)])
        get = subprocess.run([*HEIMDALL, "get", address, "sensors", "m-1", "--json",
                              "--token", "e2e-secret"], capture_output=True, text=True,
                             timeout=60)
        assert get.returncode == 0, get.stderr
        window = json.loads(get.stdout)
        assert window["fields"] == ["temp", "rpm"]
        assert [v[0] for v in window["values"]] == [70.0 + i for i in range(4, 20)]
        table = subprocess.run([*HEIMDALL, "get", address, "sensors", "m-1"],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "HEIMDALL_TOKEN": "e2e-secret",
                                    "COLUMNS": "120"})
        assert table.returncode == 0, table.stderr
        assert "▁" in table.stdout
        assert "89" in table.stdout  # the newest temp
        denied = subprocess.run([*HEIMDALL, "get", address, "sensors", "m-1"],
                                capture_output=True, text=True, timeout=60)
        assert denied.returncode == 1
        assert "refused the call" in denied.stderr
        assert "Traceback" not in denied.stderr
        missing = subprocess.run([*HEIMDALL, "get", address, "sensors", "m-2", "--token",
                                  "e2e-secret"], capture_output=True, text=True, timeout=60)
        assert missing.returncode == 1
        assert "holds no key 'm-2'" in missing.stderr
        top = subprocess.run([*HEIMDALL, "top", address, "-n", "2", "--interval", "0.1",
                              "--token", "e2e-secret"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "COLUMNS": "160"})
        assert top.returncode == 0, top.stderr
        assert "sensors" in top.stdout
        assert "1/" in top.stdout  # keys held / max
        assert "in use of" in top.stdout  # memory: in use and reserved
        assert serve.stop() == 0, serve.output
    assert "Traceback" not in serve.output
    assert serve.output.count("gRPC on") == 1  # said once, by the server


def test_demo_with_the_model_in_worker_processes(tmp_path: Path) -> None:
    proc = subprocess.run([*HEIMDALL, "demo", "--duration", "8", "--rate", "4000",
                           "--model-processes", "2"],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "anomaly detector in 2 worker processes" in out
    scored = re.search(r"anomaly detector: ([\d,]+) windows scored", out)
    assert scored is not None, out
    assert int(scored.group(1).replace(",", "")) > 5_000
    pr = re.search(r"precision ([\d.]+)", out)
    assert pr is not None
    assert float(pr.group(1)) == 1.0
    assert "Traceback" not in proc.stderr
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("heimdall-demo-")]
