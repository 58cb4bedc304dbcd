"""The same windows offline: replay from Parquet, and point-in-time training windows.

    .venv/bin/python benchmarks/bench_offline.py [--events 10000000 --keys 10000
        --labels 1000000 --rows 256 --fields 4]

(pandas comes with the ``bench`` extra: ``pip install -e '.[bench]'``.)

The events (arrival order = time order, keys uniform) and labels (uniform keys and times) are
written to Parquet once; each contender then runs in a fresh process, which reports its time
and its peak resident memory (``ru_maxrss``) beside what the process held before it started.

- ``replay`` from Parquet (``hd.replay(path, spec)``) against pyarrow reading the same file
  alone (``pq.read_table``, with its threads and with one): rows/s and their ratio (goal >=
  0.5x), in their own processes and alternating in one (the ratio that holds); and against
  its floor, the store's ``append_batch`` alone over the same batches.
- ``training_windows`` for every label, consumed a chunk at a time (``tw.chunks()``),
  against a hand-written numpy baseline (a stable sort by key, one searchsorted per label on
  (key, time), a fancy-index gather of the (W, F) rows, chunk by chunk: the count window only)
  and against pandas (``groupby().rolling(W).mean()`` per key, then ``merge_asof`` onto the
  labels: the point-in-time join a feature platform does, giving each label the mean of its
  window, not the window). Heimdall and numpy check each other: the same sum of lengths and
  of the newest row's first field.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 16_384


def _rss_mb() -> float:
    """This process's peak resident memory (VmHWM: ``ru_maxrss`` would carry the parent's
    peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spec(args: argparse.Namespace) -> Any:
    import heimdall as hd

    return hd.StreamSpec("s", key="id", time="ts", fields=[f"f{j}" for j in range(args.fields)],
                         window=hd.CountWindow(args.rows))


def make_data(args: argparse.Namespace, d: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    n = args.events
    ids = rng.integers(0, args.keys, n)
    names = np.array([f"m-{i:06d}" for i in range(args.keys)], dtype=object)
    cols: dict[str, Any] = {"id": pa.array(names[ids]).dictionary_encode(),
                            "ts": np.arange(n, dtype=np.int64) + 1_000}  # ms
    for j in range(args.fields):
        cols[f"f{j}"] = rng.normal(size=n)
    pq.write_table(pa.table(cols), d / "events.parquet", row_group_size=1 << 20)
    lids = rng.integers(0, args.keys, args.labels)
    pq.write_table(pa.table({"id": names[lids].tolist(),
                             "ts": rng.integers(0, n + 1_000, args.labels),
                             "y": rng.integers(0, 2, args.labels)}), d / "labels.parquet")


# ---- contenders, each in its own process --------------------------------------------------

def _warm() -> None:
    """pyarrow's Parquet reader and thread pool started, as every contender's first read
    would otherwise pay for them."""
    import pyarrow.parquet as pq

    pq.read_table(Path(sys.argv[sys.argv.index("--dir") + 1]) / "labels.parquet")


def c_pyarrow_read(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    _warm()
    t0 = time.perf_counter()
    table = pq.read_table(d / "events.parquet")
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def c_pyarrow_read_1t(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    _warm()
    t0 = time.perf_counter()
    table = pq.read_table(d / "events.parquet", use_threads=False)
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def c_replay(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    import heimdall as hd

    spec = _spec(args)
    _warm()
    t0 = time.perf_counter()
    store = hd.replay(d / "events.parquet", spec, max_keys=args.keys)
    s = time.perf_counter() - t0
    return {"seconds": s, "rows": store.stats()["streams"]["s"]["events"]}


def c_replay_vs_read(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    """Replay and pyarrow's read of the same file alternating in one process, 3 rounds: the
    ratio that holds on a noisy machine (the medians of each)."""
    import pyarrow.parquet as pq

    import heimdall as hd

    spec = _spec(args)
    _warm()
    reads, replays = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        pq.read_table(d / "events.parquet")
        reads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store = hd.replay(d / "events.parquet", spec, max_keys=args.keys)
        replays.append(time.perf_counter() - t0)
        store.close()
    return {"seconds": statistics.median(replays), "read_s": statistics.median(reads),
            "rounds": [round(r / p, 3) for r, p in zip(reads, replays, strict=True)]}


def c_store_writes(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    """The floor of a replay: the store's append_batch alone, of the same rows in the same
    batches, the keys already Python objects (one per distinct key) and the values an array."""
    import pyarrow.parquet as pq

    import heimdall as hd
    from heimdall.offline.history import BATCH_ROWS

    batches = []
    for b in pq.ParquetFile(d / "events.parquet", read_dictionary=["id"]).iter_batches(
            BATCH_ROWS):
        ids = b.column("id")
        keys = np.array(ids.dictionary.to_pylist(), dtype=object)[ids.indices.to_numpy()]
        values = np.stack([b.column(f"f{j}").to_numpy() for j in range(args.fields)], axis=1)
        batches.append((keys.tolist(), values, b.column("ts").to_numpy() * 1_000_000))
    store = hd.WindowStore([_spec(args)], max_keys=args.keys)
    t0 = time.perf_counter()
    for keys, values, ts in batches:
        store.append_batch("s", keys, values, ts)
    return {"seconds": time.perf_counter() - t0, "rows": args.events}


def c_heimdall(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    import heimdall as hd

    labels = pq.read_table(d / "labels.parquet")
    t0 = time.perf_counter()
    tw = hd.training_windows(d / "events.parquet", labels, _spec(args), chunk=CHUNK,
                             progress=False)
    t_read = time.perf_counter() - t0
    total_len, newest = 0, 0.0
    for c in tw.chunks(copy=False):
        total_len += int(c.lengths.sum())
        newest += float(c.values[:, -1, 0].sum())
    return {"seconds": time.perf_counter() - t0, "read_s": t_read, "lengths": total_len,
            "newest": newest}


def c_numpy(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    W, F = args.rows, args.fields
    t0 = time.perf_counter()
    events = pq.read_table(d / "events.parquet")
    labels = pq.read_table(d / "labels.parquet")
    keys = events.column("id").combine_chunks()
    dictionary = keys.dictionary
    codes = keys.indices.to_numpy().astype(np.int64)
    ts = events.column("ts").to_numpy()
    values = np.stack([events.column(f"f{j}").to_numpy() for j in range(F)], axis=1)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(dictionary))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    R = int(ts.max()) + 2
    composite = codes[order] * R + ts[order]
    lcode = pc.index_in(labels.column("id"), value_set=dictionary).to_numpy(
        zero_copy_only=False)
    lts = labels.column("ts").to_numpy()
    total_len, newest = 0, 0.0
    for a in range(0, len(lts), CHUNK):
        lc, lt = lcode[a:a + CHUNK].astype(np.int64), lts[a:a + CHUNK]
        end = np.searchsorted(composite, lc * R + lt, side="right")
        begin = np.maximum(starts[lc], end - W)
        idx = end[:, None] - W + np.arange(W)[None, :]
        real = idx >= begin[:, None]
        rows = order[np.where(real, idx, 0)]
        out = np.where(real[:, :, None], values[rows], 0.0)
        total_len += int(real.sum())
        newest += float(out[:, -1, 0].sum())
    return {"seconds": time.perf_counter() - t0, "lengths": total_len, "newest": newest}


def c_pandas(args: argparse.Namespace, d: Path) -> dict[str, Any]:
    import pandas as pd

    W = args.rows
    fields = [f"f{j}" for j in range(args.fields)]
    t0 = time.perf_counter()
    events = pd.read_parquet(d / "events.parquet")
    events["id"] = events["id"].astype(str)
    labels = pd.read_parquet(d / "labels.parquet")
    rolled = (events.groupby("id", sort=False)[fields].rolling(W, min_periods=1).mean()
              .reset_index(level=0))
    rolled["ts"] = events["ts"].to_numpy()[rolled.index.to_numpy()]
    joined = pd.merge_asof(labels.sort_values("ts"), rolled.sort_values("ts"), on="ts",
                           by="id", direction="backward")
    return {"seconds": time.perf_counter() - t0, "rows": len(joined)}


CONTENDERS = {"pyarrow_read": c_pyarrow_read, "pyarrow_read_1t": c_pyarrow_read_1t,
              "replay": c_replay, "replay_vs_read": c_replay_vs_read,
              "store_writes": c_store_writes, "heimdall": c_heimdall,
              "numpy": c_numpy, "pandas": c_pandas}


def child(args: argparse.Namespace) -> None:
    base = _rss_mb()
    out = CONTENDERS[args.child](args, Path(args.dir))
    out.update(base_mb=base, peak_mb=_rss_mb())
    print(json.dumps(out))


def run(args: argparse.Namespace, name: str, d: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--dir", str(d),
           "--events", str(args.events), "--keys", str(args.keys), "--labels",
           str(args.labels), "--rows", str(args.rows), "--fields", str(args.fields)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"{name} failed")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--labels", type=int, default=1_000_000)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--fields", type=int, default=4)
    p.add_argument("--only", nargs="*", default=list(CONTENDERS), choices=list(CONTENDERS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        make_data(args, d)
        print(f"data: {args.events:,} events, {args.keys:,} keys, {args.labels:,} labels, "
              f"W={args.rows}, F={args.fields} ({time.perf_counter() - t0:.1f} s to make)",
              file=sys.stderr)
        res = {}
        for name in args.only:
            res[name] = run(args, name, d)
            print(f"  {name}: {res[name]}", file=sys.stderr)
    table = Table(title="offline")
    for col in ("figure", "value", "baseline", "ratio", "peak RSS (MB)"):
        table.add_column(col, justify="left" if col == "figure" else "right")

    def mem(r: dict[str, Any]) -> str:
        return f"{r['peak_mb']:,.0f} (start {r['base_mb']:,.0f})"

    if "replay" in res:
        rr = args.events / res["replay"]["seconds"]
        for base, what in (("pyarrow_read", "pyarrow read"),
                           ("pyarrow_read_1t", "pyarrow read, 1 thread"),
                           ("store_writes", "the store's writes alone")):
            if base in res:
                br = args.events / res[base]["seconds"]
                table.add_row(f"replay from Parquet, rows/s vs {what}", f"{rr:,.0f}",
                              f"{br:,.0f}", f"{rr / br:.2f}x", mem(res["replay"]))
    if "replay_vs_read" in res:
        r = res["replay_vs_read"]
        table.add_row("replay / pyarrow read, alternating in one process (median of 3)",
                      f"{args.events / r['seconds']:,.0f}", f"{args.events / r['read_s']:,.0f}",
                      f"{r['read_s'] / r['seconds']:.2f}x", mem(r))
    if "heimdall" in res:
        hw = args.labels / res["heimdall"]["seconds"]
        for base in ("numpy", "pandas"):
            if base in res:
                bw = args.labels / res[base]["seconds"]
                what = "numpy gather" if base == "numpy" else "pandas rolling mean+asof"
                table.add_row(f"training_windows/s vs {what}", f"{hw:,.0f}", f"{bw:,.0f}",
                              f"{hw / bw:.2f}x", f"{mem(res['heimdall'])} vs "
                              f"{res[base]['peak_mb']:,.0f}")
        if "numpy" in res:
            same = (res["numpy"]["lengths"] == res["heimdall"]["lengths"]
                    and abs(res["numpy"]["newest"] - res["heimdall"]["newest"]) < 1e-6 * max(
                        1.0, abs(res["numpy"]["newest"])))
            table.add_row("heimdall == numpy windows", "yes" if same else "NO", "", "", "")
    Console().print(table)


if __name__ == "__main__":
    main()
