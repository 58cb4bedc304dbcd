"""A real Apache Pulsar standalone broker, for the integration tests, the cluster benchmark
and ``heimdall demo --nodes N`` (a cluster needs Pulsar's Key_Shared across processes and its
admin API, which the embedded broker lacks).

The jars come from Maven Central through ``_pulsar/pom.xml`` (``mvn``, once, ~235 MB) and are
cached outside the work tree (``~/.cache/heimdall/pulsar-<version>/lib``, or
``$HEIMDALL_PULSAR_LIB``); it needs ``java`` 17+ and ``mvn``. The broker runs
``org.apache.pulsar.PulsarStandaloneStarter`` with functions worker and stream storage off,
the RocksDB metadata store, and free ports, in a directory of its own.

Run it by hand: ``python -m heimdall.cluster.standalone`` (fetches the jars, starts, prints
the URL).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

VERSION = "4.0.7"
HERE = Path(__file__).resolve().parent / "_pulsar"


def lib_dir() -> Path:
    """Where the broker's jars are cached."""
    env = os.environ.get("HEIMDALL_PULSAR_LIB")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "heimdall" / f"pulsar-{VERSION}" / "lib"


def fetch_jars() -> Path:
    """Download the broker and its dependencies with Maven, once. Returns the jar folder."""
    return maven_jars(HERE / "pom.xml", lib_dir(), f"Apache Pulsar {VERSION}",
                      [f"-Dpulsar.version={VERSION}"])


def maven_jars(pom: Path, lib: Path, what: str, props: Sequence[str] = ()) -> Path:
    """The jars of ``pom``'s dependencies copied into ``lib`` from Maven Central (every
    request sent there, ``_pulsar/settings.xml``), once: a finished folder is stamped."""
    stamp = lib / ".complete"
    if stamp.exists():
        return lib
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError(f"{what} needs java (17+) and mvn on PATH")
    tmp = lib.with_name(lib.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn", "-B", "-q", "-s", str(HERE / "settings.xml"), "-f", str(pom), *props,
        "dependency:copy-dependencies", f"-DoutputDirectory={tmp}",
    ]
    print(f"fetching {what} jars from Maven Central into {lib} ...", file=sys.stderr,
          flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mvn failed ({proc.returncode}): {proc.stdout[-2000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    stamp.touch()
    return lib


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PulsarStandalone:
    """One standalone broker process on free ports; ``start()`` waits until it serves."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.web_port = _free_port()
        self.bk_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"pulsar://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, timeout_s: float = 240.0) -> PulsarStandalone:
        lib = fetch_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "standalone.conf"
        conf.write_text("\n".join([
            "clusterName=standalone",
            f"brokerServicePort={self.port}",
            f"webServicePort={self.web_port}",
            "bindAddress=127.0.0.1",
            "advertisedAddress=127.0.0.1",
            "managedLedgerDefaultEnsembleSize=1",
            "managedLedgerDefaultWriteQuorum=1",
            "managedLedgerDefaultAckQuorum=1",
            "functionsWorkerEnabled=false",
            "systemTopicEnabled=false",
            "topicLevelPoliciesEnabled=false",
            "transactionCoordinatorEnabled=false",
            "exposeTopicLevelMetricsInPrometheus=false",
            "allowAutoTopicCreationType=non-partitioned",
            "brokerDeleteInactiveTopicsEnabled=false",
            "",
        ]))
        java = [
            "java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
            "-Dpulsar.log.level=warn", "-Dlog4j2.level=warn",
            "-Dio.netty.tryReflectionSetAccessible=true",
            "--add-opens", "java.base/java.nio=ALL-UNNAMED",
            "--add-opens", "java.base/jdk.internal.misc=ALL-UNNAMED",
            "--add-opens", "java.base/java.lang=ALL-UNNAMED",
            "-cp", f"{lib}/*", "org.apache.pulsar.PulsarStandaloneStarter",
            "--config", str(conf), "-nfw", "-nss",
            "--metadata-url", f"rocksdb://{self.workdir / 'metadata'}",
            "--bookkeeper-dir", str(self.workdir / "bookkeeper"),
            "--bookkeeper-port", str(self.bk_port),
            "--advertised-address", "127.0.0.1",
        ]
        with open(self.workdir / "pulsar.log", "ab") as log:
            self.proc = subprocess.Popen(java, cwd=self.workdir, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Pulsar standalone exited; see {self.workdir/'pulsar.log'}")
            with contextlib.suppress(OSError):
                url = f"{self.admin_url}/admin/v2/namespaces/public"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if b"public/default" in resp.read():
                        return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Pulsar standalone did not serve in {timeout_s:.0f} s; "
                           f"see {self.workdir / 'pulsar.log'}")

    def kill(self) -> None:
        """SIGKILL, as a crash would; ``start()`` again brings it back on the same ports and
        data."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        broker = PulsarStandalone(Path(d)).start()
        print(f"serving {broker.url} (admin {broker.admin_url}) after "
              f"{time.monotonic() - t0:.1f} s; Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            broker.stop()
