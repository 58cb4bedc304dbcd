"""Windows read from another language: the Java Arrow Flight client of examples/flight-java
(its jars from Maven Central, once) reads the same windows from a live ``heimdall serve`` as
the Python client."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import heimdall as hd
from heimdall.cluster.standalone import maven_jars
from tests.e2e._serve import serving

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flight-java"


@pytest.fixture(scope="module")
def java_lib() -> Path:
    version = re.search(r"<arrow.version>(.+)</arrow.version>",
                        (EXAMPLE / "pom.xml").read_text()).group(1)  # type: ignore[union-attr]
    return maven_jars(EXAMPLE / "pom.xml",
                      Path.home() / ".cache" / "heimdall" / f"flight-java-{version}" / "lib",
                      f"the Arrow Flight Java client {version}")


def test_java_reads_the_windows_python_reads(tmp_path: Path, java_lib: Path) -> None:
    cfg = tmp_path / "heimdall.toml"
    cfg.write_text("""
[[streams]]
name = "sensors"
topic = "sensors-flight"
key = "machine_id"
fields = ["temp", "rpm"]
window = { count = 8 }

[server]
metrics = ""
grpc = "127.0.0.1:0"
flight = "127.0.0.1:0"
""")
    env = {**os.environ, "HEIMDALL_SERVER__TOKEN": "flight-secret"}
    with serving(cfg, env) as serve:
        grpc_at = serve.address("gRPC")
        flight_at = serve.address("Arrow Flight")
        with hd.connect(grpc_at, token="flight-secret") as remote:
            for m in range(3):
                remote.push("sensors", [f"m-{m}"] * (5 + 2 * m),
                            [[70.0 + m + i / 8, 1500.0 - i] for i in range(5 + 2 * m)])
        host, port = flight_at.rsplit(":", 1)
        keys = ["m-0", "m-1", "m-2", "m-9"]
        java = subprocess.run(
            ["java", "--add-opens=java.base/java.nio=ALL-UNNAMED", "-cp", f"{java_lib}/*",
             str(EXAMPLE / "ReadWindows.java"), host, port, "sensors", *keys],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "HEIMDALL_TOKEN": "flight-secret"})
        assert java.returncode == 0, java.stderr
        got = [json.loads(line) for line in java.stdout.splitlines() if line.startswith("{")]
        with hd.connect(flight_at, token="flight-secret", transport="flight") as flight:
            want = flight.windows("sensors", keys)
        assert [g["key"] for g in got] == keys
        for i, g in enumerate(got):
            n = int(want.lengths[i])
            assert g["found"] == bool(want.found[i])
            assert g["length"] == n
            assert g["ts_ns"] == want.ts_ns[i, 8 - n:].tolist()
            assert np.array_equal(np.array(g["values"]).reshape(n, 2), want.values[i, 8 - n:])
        assert [g["length"] for g in got] == [5, 7, 8, 0]
        # without the token the Java client is refused
        refused = subprocess.run(
            ["java", "--add-opens=java.base/java.nio=ALL-UNNAMED", "-cp", f"{java_lib}/*",
             str(EXAMPLE / "ReadWindows.java"), host, port, "sensors", "m-0"],
            capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if k != "HEIMDALL_TOKEN"})
        assert refused.returncode != 0
        assert "UNAUTHENTICATED" in refused.stderr or "bearer token" in refused.stderr
        assert serve.stop() == 0, serve.output
