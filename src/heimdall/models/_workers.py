"""Model worker processes: each attaches to the shared-memory store, reads the windows of the
keys it is given itself, runs the model, and sends back only the scores.

``score_batch`` is the one way a batch is scored, on the runner's thread or in a worker: read
the windows (a consistent copy), leave out keys gone or too short, call the model.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from heimdall._signals import ignore_interrupts, shielded
from heimdall.errors import ConfigError
from heimdall.window import WindowBatch, WindowReader


@dataclass
class Scored:
    """What became of one batch of keys."""

    keys: list[Any]          # the keys scored, in the order of ``out``
    gone: list[Any]          # keys the store no longer holds
    too_short: int           # keys left out for min_rows
    newest_ts: list[int]     # each scored key's newest event time
    rows: list[int]          # each scored key's window rows
    last_ts: list[int]       # each scored key's last row's time
    out: Any = None          # the model's output (checked by the runner)
    model_s: float = 0.0
    error: str | None = None  # the model raised: its traceback


def score_batch(store: WindowReader, stream: str, fn: Any, min_rows: int,
                keys: list[Any]) -> Scored:
    batch = store.windows(stream, keys)
    ok = batch.found & (batch.lengths >= min_rows)
    gone: list[Any] = []
    too_short = 0
    if not ok.all():
        gone = [k for k, f in zip(keys, batch.found.tolist(), strict=True) if not f]
        too_short = int((batch.found & ~ok).sum())
        idx = np.flatnonzero(ok)
        keys = [keys[i] for i in idx.tolist()]
        batch = WindowBatch(batch.stream, keys, batch.fields, batch.values[idx],
                            batch.ts_ns[idx], batch.lengths[idx], batch.found[idx])
    scored = Scored(keys, gone, too_short, newest_times(batch).tolist(), batch.lengths.tolist(),
                    batch.ts_ns[:, -1].tolist() if batch.ts_ns.shape[1] else [0] * len(keys))
    if not keys:
        return scored
    t0 = time.perf_counter()
    try:
        scored.out = fn(batch)
    except Exception:
        scored.error = traceback.format_exc(limit=8)
    scored.model_s = time.perf_counter() - t0
    return scored


def newest_times(batch: WindowBatch) -> np.ndarray:
    """Each window's newest event time: its last row's in a time window, the greatest in a
    count window (rows in arrival order; the padding's 0 is below any row's time unless a
    window's times are negative)."""
    ts = batch.ts_ns
    if not ts.shape[1]:
        return np.zeros(len(ts), np.int64)
    newest: np.ndarray = ts.max(axis=1)
    odd = (batch.lengths < ts.shape[1]) & (ts[:, -1] < 0)
    if odd.any():
        newest[odd] = np.where(batch.mask[odd], ts[odd], np.iinfo(np.int64).min).max(axis=1)
    return newest


def _worker(conn: Any, shm_name: str, stream: str, model: bytes, min_rows: int) -> None:
    ignore_interrupts()  # a terminal's Ctrl-C is the parent's to handle: it stops us
    from heimdall.models.adapters import adapt
    from heimdall.window.attach import attach

    obj, features, method = pickle.loads(model)
    fn = adapt(obj, features=features, method=method)
    store = attach(shm_name)
    conn.send("ready")
    while True:
        try:
            keys = conn.recv()
        except EOFError:
            return
        if keys is None:
            return
        try:
            result = score_batch(store, stream, fn, min_rows, keys)
            if result.out is not None:
                result.out = np.asarray(result.out)
        except Exception:  # e.g. the writer is gone
            result = Scored([], [], 0, [], [], [], error=traceback.format_exc(limit=8))
        conn.send(result)


DEPTH = 2  # batches handed to a worker ahead of its results


class WorkerPool:
    """``n`` spawned processes scoring batches of one model from a shared-memory store."""

    def __init__(self, n: int, shm_name: str, stream: str, model: tuple[Any, Any, Any],
                 min_rows: int, name: str) -> None:
        try:
            blob = pickle.dumps(model)
        except Exception as exc:
            raise ConfigError(
                f"model {name!r}: processes=N sends the model to worker processes, but it "
                f"cannot be pickled ({exc}); define it at module level") from exc
        ctx = mp.get_context("spawn")
        self._procs = []
        self._conns = []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, shm_name, stream, blob, min_rows),
                            daemon=True, name=f"heimdall-model-{name}-{i}")
            with shielded():  # started with SIGINT blocked, until the child ignores it
                p.start()
            child.close()
            self._procs.append(p)
            self._conns.append(parent)
        for i, conn in enumerate(self._conns):
            if not conn.poll(120):
                self.close()
                raise ConfigError(f"model {name!r}: worker process {i} did not start")
            msg = conn.recv()
            if msg != "ready":  # pragma: no cover
                self.close()
                raise ConfigError(f"model {name!r}: worker process {i}: {msg!r}")

    @property
    def size(self) -> int:
        return len(self._conns)

    def drain(self, take: Callable[[], list[Any] | None],
              finish: Callable[[Scored], int]) -> int:
        """Score batches from ``take`` until it returns None; ``finish`` each result. Returns
        the sum. Each worker holds up to ``DEPTH`` batches: the next one waits in its pipe
        while it scores, so it never idles while this process records a result (on a machine
        whose cores the workers fill, this process runs only when it preempts one)."""
        inflight = dict.fromkeys(self._conns, 0)
        exhausted = False

        def feed(conn: Any) -> None:
            nonlocal exhausted
            while not exhausted and inflight[conn] < DEPTH:
                keys = take()
                if keys is None:
                    exhausted = True
                    return
                conn.send(keys)
                inflight[conn] += 1

        for conn in self._conns:
            feed(conn)
        total = 0
        while True:
            busy = [c for c, n in inflight.items() if n]
            if not busy:
                return total
            for ready in wait(busy):
                done: Any = ready
                result = done.recv()
                inflight[done] -= 1
                feed(done)
                total += finish(result)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []
