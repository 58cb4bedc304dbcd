"""Publishing to the embedded broker as a user would: `heimdall publish` finds the broker of
a running `heimdall serve` through its configuration, keys each line by the stream's key
field, reports bad lines; the embedded broker's port can be fixed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.integration.conftest import wait_for

HEIMDALL = [sys.executable, "-m", "heimdall.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_publish_to_a_running_serve_on_the_embedded_broker(tmp_path: Path) -> None:
    broker_port, grpc_port = _free_port(), _free_port()
    (tmp_path / "heimdall.toml").write_text(f"""
[source]
data_dir = "data"
embedded_port = {broker_port}

[server]
metrics = ""
grpc = "127.0.0.1:{grpc_port}"

[[streams]]
name = "sensors"
topic = "persistent://public/default/sensors"
key = "machine_id"
fields = ["temp"]
window = {{ count = 8 }}
""")
    events = [{"machine_id": f"m-{i % 3}", "temp": float(i)} for i in range(30)]
    (tmp_path / "events.jsonl").write_text("\n".join(map(json.dumps, events)) + "\n")
    before = subprocess.run([*HEIMDALL, "publish", "sensors", "events.jsonl"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert before.returncode == 1
    assert "no embedded broker is running" in before.stderr
    assert "heimdall serve -c" in before.stderr

    with subprocess.Popen([*HEIMDALL, "serve"], cwd=tmp_path, stderr=subprocess.PIPE,
                          text=True) as serve:
        lines: list[str] = []
        assert serve.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(serve.stderr), daemon=True)
        reader.start()
        try:
            wait_for(lambda: any("serving;" in x for x in lines), 60, "serve up")
            assert f"pulsar://127.0.0.1:{broker_port}" in "".join(lines)  # the fixed port
            pub = subprocess.run([*HEIMDALL, "publish", "sensors", "events.jsonl"],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert pub.returncode == 0, pub.stderr
            assert "published 30 message(s)" in pub.stdout
            assert "keyed by 'machine_id'" in pub.stdout
            # stdin, a topic and --url; a line that is not JSON is reported, the rest sent
            stdin = '{"machine_id": "m-9", "temp": 1.5}\nnot json\n[1, 2]\n'
            pub2 = subprocess.run([*HEIMDALL, "publish", "persistent://public/default/sensors",
                                   "--url", f"pulsar://127.0.0.1:{broker_port}",
                                   "--key", "machine_id"], input=stdin, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)
            assert pub2.returncode == 1
            assert "line 2: not a JSON object" in pub2.stderr
            assert "line 3: not a JSON object" in pub2.stderr
            assert "published 1 message(s)" in pub2.stdout
            import heimdall as hd

            with hd.connect(f"127.0.0.1:{grpc_port}") as remote:
                wait_for(lambda: ("sensors", "m-9") in remote, 30, "the published events")
                wait_for(lambda: len(remote.window("sensors", "m-0")) == 8, 30, "all of m-0")
                assert remote.window("sensors", "m-0").values[:, 0].tolist() == [
                    float(i) for i in range(30) if i % 3 == 0][-8:]
                assert remote.window("sensors", "m-9").values.tolist() == [[1.5]]
        finally:
            serve.terminate()
            serve.wait(60)
    assert serve.returncode == 0
    assert not (tmp_path / "data" / "broker" / "url.json").exists()
