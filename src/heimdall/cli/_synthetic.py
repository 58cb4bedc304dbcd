"""The demo's synthetic producer: machines with three sensors, a few drifting into anomalies,
and a few malformed messages on purpose (they must land on the dead-letter topic)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec
import numpy as np

log = logging.getLogger("heimdall.demo")

BAD_PAYLOADS = (
    b"{not json",
    b'{"machine_id": "m-0", "ts": 1, "temp": "hot", "vibration": 0.1, "rpm": 1500}',
    b'{"machine_id": "m-0", "ts": 1, "vibration": 0.1, "rpm": 1500}',
    b'{"machine_id": "m-0", "ts": 1, "temp": 1e999, "vibration": 0.1, "rpm": 1500}',
)


# healthy readings: temp, vibration, rpm ~ N(mean, std); drift adds DRIFT x (0..1)
NORMAL_MEAN = np.array([70.0, 0.03, 1500.0])
NORMAL_STD = np.array([1.5, 0.005, 20.0])
DRIFT = np.array([20.0, 0.05, 0.0])


class SyntheticProducer:
    """Publishes ``rate`` events/s from ``machines`` machines on its own thread.

    Every ``bad_every``-th message is malformed. ``sent`` and ``bad_sent`` count what went out.
    """

    def __init__(self, client: Any, topic: str, machines: int = 1000, rate: float = 20_000,
                 bad_every: int = 5000, seed: int = 7, key_based: bool = False) -> None:
        import pulsar

        # key_based: a batch holds one key's messages, as Key_Shared across consumers needs
        # (the broker routes a batch by its first message's key)
        batching = pulsar.BatchingType.KeyBased if key_based else pulsar.BatchingType.Default
        self.producer = client.create_producer(
            topic, block_if_queue_full=True, batching_enabled=True, batching_type=batching,
            batching_max_messages=1000, batching_max_publish_delay_ms=1,
        )
        self.machines = machines
        self.rate = rate
        self.bad_every = bad_every
        self.rng = np.random.default_rng(seed)
        self.names = [f"m-{i}" for i in range(machines)]
        self.drifting = sorted(self.rng.choice(machines, size=max(1, machines // 100),
                                               replace=False).tolist())
        self.sent = 0
        self.bad_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heimdall-demo-producer",
                                        daemon=True)
        self._encode = msgspec.json.Encoder().encode

    def normal_sample(self, n: int = 10_000) -> np.ndarray:
        """(n, 3) readings of healthy machines (temp, vibration, rpm), to fit a model on."""
        noise = np.random.default_rng(0).normal(0, 1, (n, 3))
        return NORMAL_MEAN + NORMAL_STD * noise

    def start(self) -> SyntheticProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop producing; what was sent is flushed to the broker (a failure to flush, e.g.
        a broker gone, is logged, not raised: the demo still ends with its summary)."""
        self._stop.set()
        self._thread.join(10)
        try:
            self.producer.flush()
            self.producer.close()
        except Exception as exc:  # the client's Timeout, ConnectError ...
            log.warning("demo producer: could not flush its last messages: %s", exc)

    def _run(self) -> None:
        tick = 0.01
        per_tick = max(1, int(self.rate * tick))
        t_next = time.perf_counter()
        drift_t0 = time.time()
        drifting = set(self.drifting)
        drift_temp, drift_vib = DRIFT[:2].tolist()
        while not self._stop.is_set():
            ids = self.rng.integers(0, self.machines, per_tick).tolist()
            healthy = (NORMAL_MEAN + NORMAL_STD * self.rng.normal(0, 1, (per_tick, 3))).tolist()
            drift = min(1.0, (time.time() - drift_t0) / 60)
            now_ms = time.time_ns() // 1_000_000
            send = self.producer.send_async
            for i, (temp, vib, rpm) in zip(ids, healthy, strict=True):
                self.sent += 1
                if self.bad_every and self.sent % self.bad_every == 0:
                    send(BAD_PAYLOADS[self.bad_sent % len(BAD_PAYLOADS)], None)
                    self.bad_sent += 1
                    continue
                d = drift if i in drifting else 0.0
                event = {
                    "machine_id": self.names[i], "ts": now_ms,
                    "temp": temp + drift_temp * d, "vibration": vib + drift_vib * d, "rpm": rpm,
                }
                send(self._encode(event), None, partition_key=self.names[i])
            t_next += tick
            delay = t_next - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
            else:
                t_next = time.perf_counter()  # behind: do not try to catch up in a burst
