"""Deduplication's fingerprint tables: ns a message to check a batch of 10,000 new messages
against a full horizon of 100,000 (``candidates``), to remember it (``add``), and to let a
generation go (``reset``), with handles of a trivial class.

    .venv/bin/python benchmarks/bench_dedup.py [--other /tmp/venv-old/bin/python]

With ``--other`` (the Python of a venv holding another build) the same figures are taken
there too, in alternating runs, and printed side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

FIGURES = r'''
import json, time
try:
    from heimdall._core import FpTable, candidates
except ImportError:  # a build before the native core held them
    from heimdall.sources._seen import FpTable, candidates

class H:
    __slots__ = ("i",)
    def __init__(self, i): self.i = i

N, B = 100_000, 10_000
check, add, reset = [], [], []
for r in range(5):
    new, old = FpTable(N), FpTable(N)
    base = r * 10 * N
    new.add(list(range(base, base + N)), [H(i) for i in range(N)])
    old.add(list(range(base + N, base + 2 * N)), [H(i) for i in range(N)])
    fps = list(range(base + 2 * N, base + 2 * N + B))
    hs = [H(i) for i in range(B)]
    clock = time.perf_counter_ns
    t = clock(); candidates(new, old, fps); check.append(clock() - t)
    t = clock(); new.add(fps, hs); add.append(clock() - t)
    t = clock(); gone = old.reset(); del gone; reset.append(clock() - t)
med = lambda xs: sorted(xs)[len(xs) // 2]
print(json.dumps({"check (ns/message)": med(check) / B, "remember (ns/message)": med(add) / B,
                  "let a generation go (ns/message)": med(reset) / N}))
'''


def run(python: str) -> dict[str, float]:
    out = subprocess.run([python, "-c", FIGURES], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", help="the Python of another build's venv")
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    this, other = [], []
    for _ in range(args.pairs):
        this.append(run(sys.executable))
        if args.other:
            other.append(run(args.other))
    for name in this[0]:
        a = statistics.median(r[name] for r in this)
        line = f"{name:36} this build {a:7.1f}"
        if other:
            b = statistics.median(r[name] for r in other)
            line += f"   other build {b:7.1f}   ({a / b:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
