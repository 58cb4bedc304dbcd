"""Session fixtures shared by the integration and end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.real_pulsar.standalone import PulsarStandalone


@pytest.fixture(scope="session")
def real_pulsar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulsarStandalone]:
    """A real Apache Pulsar standalone broker on free ports, for the whole session."""
    broker = PulsarStandalone(tmp_path_factory.mktemp("pulsar-standalone")).start()
    try:
        yield broker
    finally:
        broker.stop()
