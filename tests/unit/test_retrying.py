"""Start-up waits for a broker that answers with a passing error (retry with backoff, saying
what it waits for), gives up after its deadline, fails at once on anything else, and stops
waiting when cancelled."""

from __future__ import annotations

import threading
import time

import pulsar
import pytest

import heimdall as hd
from heimdall.sources.pulsar import retrying


def flaky(failures: list[Exception]) -> object:
    def call() -> str:
        if failures:
            raise failures.pop(0)
        return "subscribed"

    return call


def test_passing_errors_are_retried_until_the_call_succeeds(
        caplog: pytest.LogCaptureFixture) -> None:
    call = flaky([pulsar.ConsumerBusy("held"), pulsar.Timeout("slow")])
    assert retrying("subscribing 'x'", "pulsar://b:6650", call, 30) == "subscribed"  # type: ignore[arg-type]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "subscribing 'x' at pulsar://b:6650: ConsumerBusy; retrying in 0.5 s" in said
    assert "Timeout; retrying in 1.0 s" in said


def test_other_errors_fail_at_once() -> None:
    call = flaky([pulsar.AuthenticationError("no")])
    t0 = time.monotonic()
    with pytest.raises(hd.SourceError, match="subscribing 'x' at u failed: AuthenticationError"):
        retrying("subscribing 'x'", "u", call, 30)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 5


def test_the_deadline_ends_the_wait_with_the_setting_named() -> None:
    call = flaky([pulsar.ConsumerBusy("held")] * 100)
    with pytest.raises(hd.SourceError, match=r"gave up after 1.2 s.*connect_timeout_s"):
        retrying("subscribing 'x'", "u", call, 1.2)  # type: ignore[arg-type]


def test_cancel_ends_the_wait() -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    call = flaky([pulsar.ConnectError("down")] * 100)
    with pytest.raises(hd.SourceError, match="stopped while waiting for the broker"):
        retrying("connecting", "u", call, 60, cancel)  # type: ignore[arg-type]
