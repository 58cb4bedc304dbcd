"""Signals: how Heimdall stops on Ctrl-C or SIGTERM, and keeps the terminal's signals away
from the processes it starts.

A terminal sends Ctrl-C's SIGINT to its whole foreground process group. A child in that
group (the embedded broker, a model worker) would die at once, before Heimdall could stop in
order: ingest finishing its batch while the broker still answers. So every child is shielded
(`start_new_session` for the broker, SIGINT ignored in model workers, see ``shielded``) and
Heimdall stops them itself; the command catches the signal with ``stop_on_signals`` and
turns it into an orderly stop, however often it comes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("heimdall")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: threading.Event | None = None,
                    on_stop: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """For the block, SIGINT and SIGTERM set ``stop`` (returned) instead of raising
    KeyboardInterrupt, and call ``on_stop`` (e.g. to end a wait for the broker during
    start-up); a second signal says the stop is under way and changes nothing. Call from
    the main thread; the previous handlers come back after the block.

    >>> with stop_on_signals() as stop:
    ...     stop.is_set()
    False
    """
    stop = stop if stop is not None else threading.Event()
    seen = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal seen
        seen += 1
        name = signal.Signals(signum).name
        if seen == 1:
            log.info("%s: stopping", name)
            if on_stop is not None:
                on_stop()
        else:
            log.warning("%s again: already stopping (finishing the work in hand, then "
                        "the broker); kill -9 %d ends it at once", name, os.getpid())
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def shielded() -> Iterator[None]:
    """Block SIGINT in this thread for the block: a process started meanwhile (fork, or
    spawn's fork and exec) starts with it blocked, and ``ignore_interrupts`` in the child
    then drops it for good, so a terminal's Ctrl-C never reaches it in between."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_interrupts() -> None:
    """In a child process: ignore SIGINT (the parent stops it), then unblock it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
