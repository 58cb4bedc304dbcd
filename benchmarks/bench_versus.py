"""This build of the window store against another, alternating, in fresh processes.

    .venv/bin/python benchmarks/bench_versus.py --other /tmp/venv-old/bin/python [--pairs 3]

``--other`` is the Python of a second virtualenv with another build installed (e.g. main
before a change: ``git worktree add /tmp/old <commit>``, ``python -m venv /tmp/venv-old``,
``/tmp/venv-old/bin/pip install /tmp/old``). Each pair runs the same figures script under
both interpreters, one after the other; the table gives each figure per build (the median
of the pairs) and their ratio. Figures: ``import heimdall`` plus a first ``append_batch``
in a fresh process, then a first ``windows()`` and ``aggregate()``; ``window().values`` p50
beside its floor (a dict lookup and a slice of a numpy array); ``append()`` events/s;
``append_batch`` rows/s; ``windows()`` of 512 keys beside a numpy copy of the same bytes;
``aggregate()`` of 512 keys; a shared-memory store taking 20,000 new keys a pass into
10,000 slots (every batch evicts, and changes the shared key index).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

FIGURES = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import heimdall as hd
spec = hd.StreamSpec("s", key="id", fields=["a", "b", "c", "d"], window=hd.CountWindow(256))
store = hd.WindowStore([spec], max_keys=2048)
keys = [f"k{i}" for i in range(1024)]
store.append_batch("s", keys * 4, np.ones((4096, 4)), np.arange(4096, dtype=np.int64))
first = time.perf_counter() - t0
store.windows("s", keys[:512]); store.aggregate("s", keys[:512])
out = {"import + first append_batch (ms)": first * 1e3,
       "... + first windows() and aggregate() (ms)": (time.perf_counter() - t0) * 1e3}
rng = np.random.default_rng(0)
for r in range(255):
    store.append_batch("s", keys, rng.random((1024, 4)))
clock = time.perf_counter_ns
def p50(fn, args, reps=3):
    lat = []
    for _ in range(reps):
        for a in args:
            t = clock(); fn(a); lat.append(clock() - t)
    return float(np.median(lat))
out["window().values p50 (us)"] = p50(lambda k: store.window("s", k).values, keys) / 1e3
ring = np.zeros((1024, 320, 4)); index = {k: i for i, k in enumerate(keys)}
out["floor: dict + slice p50 (us)"] = p50(lambda k: ring[index[k], 64:320], keys) / 1e3
n = 200_000
ks = [keys[i % 1024] for i in range(n)]
row = (1.0, 2.0, 3.0, 4.0)
t = time.perf_counter()
for k in ks:
    store.append("s", k, row)
out["append() events/s"] = n / (time.perf_counter() - t)
big = rng.random((65536, 4)); bk = [keys[i % 1024] for i in range(65536)]
t = time.perf_counter()
for _ in range(20):
    store.append_batch("s", bk, big)
out["append_batch rows/s"] = 20 * 65536 / (time.perf_counter() - t)
ask = [keys[i] for i in rng.choice(1024, 512, replace=False)]
out["windows() 512 keys p50 (ms)"] = p50(lambda _: store.windows("s", ask), range(50), 1) / 1e6
out["floor: numpy copy of the bytes (ms)"] = p50(
    lambda _: (ring[:512, 64:320].copy(), ring[:512, 64:320, 0].astype(np.int64)), range(50),
    1) / 1e6
out["aggregate() 512 keys p50 (ms)"] = p50(lambda _: store.aggregate("s", ask), range(50),
                                            1) / 1e6
import uuid
churn = hd.WindowStore([hd.StreamSpec("c", key="id", fields=["a"], window=hd.CountWindow(8))],
                       max_keys=10_000, shared_memory=f"hd-versus-{uuid.uuid4().hex[:8]}")
rates = []
for p in range(4):  # 20,000 new keys a pass into 10,000 slots: every batch evicts
    ck = [f"c{p}-{i}" for i in range(20_000)]
    t = time.perf_counter()
    for c in range(0, 20_000, 10_000):
        churn.append_batch("c", ck[c:c + 10_000], np.ones((10_000, 1)))
    rates.append(20_000 / (time.perf_counter() - t))
churn.close()
out["shared store under churn, rows/s"] = float(np.median(rates[1:]))
print(json.dumps(out))
'''


def run(python: str) -> dict[str, float]:
    done = subprocess.run([python, "-c", FIGURES], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{python}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="the Python of the other build's venv")
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    console = Console()
    this, other = [], []
    for i in range(args.pairs):
        console.print(f"pair {i + 1}/{args.pairs} ...")
        t = time.perf_counter()
        this.append(run(sys.executable))
        other.append(run(args.other))
        console.print(f"  {time.perf_counter() - t:.0f} s")
    table = Table(title=f"this build ({sys.executable}) against {args.other}, "
                        f"median of {args.pairs} alternating pairs")
    for col in ("figure", "this build", "other build", "this / other", "pairs (this/other)"):
        table.add_column(col, justify="right")
    for name in this[0]:
        a = statistics.median(r[name] for r in this)
        b = statistics.median(r[name] for r in other)
        each = ", ".join(f"{x[name] / y[name]:.2f}" for x, y in zip(this, other, strict=True))
        table.add_row(name, f"{a:,.3f}" if a < 100 else f"{a:,.0f}",
                      f"{b:,.3f}" if b < 100 else f"{b:,.0f}", f"{a / b:.2f}x", each)
    console.print(table)


if __name__ == "__main__":
    main()
