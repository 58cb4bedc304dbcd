"""Memory figures say both what is reserved at start and what the keys held use now."""

from __future__ import annotations

import heimdall as hd
from heimdall.cli.top import view


def test_memory_in_use_grows_with_keys_reserved_does_not() -> None:
    spec = hd.StreamSpec("s", fields=["a", "b", "c"], window=hd.CountWindow(256))
    store = hd.WindowStore([spec], max_keys=10_000)
    empty = store.stats()
    assert empty["memory_used_bytes"] == 0
    for k in range(3):
        store.append("s", f"k{k}", (1.0, 2.0, 3.0))
    three = store.stats()
    assert three["memory_bytes"] == empty["memory_bytes"]  # fixed at start
    per_key = three["memory_used_bytes"] / 3
    # a key's ring (W + slack rows of 3 float64 and a timestamp) and its metadata line
    assert 256 * 32 <= per_key <= 2 * 256 * 32
    assert three["streams"]["s"]["memory_used_bytes"] == three["memory_used_bytes"]
    assert three["memory_used_bytes"] < three["memory_bytes"] / 1000


def test_top_shows_in_use_and_reserved() -> None:
    spec = hd.StreamSpec("s", fields=["a"], window=hd.CountWindow(64))
    store = hd.WindowStore([spec], max_keys=100_000)
    store.append("s", "k", (1.0,))
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(view("x:1", {"store": store.stats()}, None, 1.0))
    text = console.export_text()
    assert "in use of" in text
    assert "reserved" in text
