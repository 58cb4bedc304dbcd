"""heimdall backfill -> serve -> more live events gives the windows of one live run over all
of it; heimdall export writes them (from the node over gRPC, and from its checkpoint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heimdall as hd
from heimdall.cli import main
from heimdall.config import load_config
from heimdall.pipeline import Pipeline
from tests.integration.conftest import new_topic, publish, wait_for

N, KEYS, HISTORY = 3_000, 20, 2_000


def _events() -> pa.Table:
    rng = np.random.default_rng(3)
    return pa.table({"id": [f"k{k}" for k in rng.integers(0, KEYS, N).tolist()],
                     "ts": np.arange(N, dtype=np.int64) * 10 + 1_000,
                     "a": rng.normal(size=N), "b": rng.integers(0, 9, N).astype(float)})


def _config(tmp_path: Path, topic: str, window: str) -> Path:
    path = tmp_path / "heimdall.toml"
    path.write_text(f"""
[source]
url = "embedded"
data_dir = "{tmp_path / 'data'}"

[server]
metrics = ""
grpc = "127.0.0.1:0"

[checkpoint]
dir = "{tmp_path / 'state'}"
interval_s = 60

[[streams]]
name = "s"
topic = "{topic}"
key = "id"
time = "ts"
fields = ["a", "b"]
window = {window}
""")
    return path


def _windows(reader: hd.WindowReader, keys: list[str]) -> hd.WindowBatch:
    return reader.windows("s", keys)


@pytest.mark.parametrize("window", ["{ count = 16 }", "{ seconds = 0.5, max_rows = 64 }"],
                         ids=["count", "time"])
def test_backfill_then_serve_equals_one_live_run(tmp_path: Path, window: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    events = _events()
    history = tmp_path / "history"
    history.mkdir()
    pq.write_table(events.slice(0, 1_000), history / "part-0.parquet")
    pq.write_table(events.slice(1_000, HISTORY - 1_000), history / "part-1.parquet")
    cfg_path = _config(tmp_path, new_topic(), window)
    assert main(["backfill", "-c", str(cfg_path), "--from", str(history)]) == 0
    err = capsys.readouterr().err
    assert f"{HISTORY:,} rows read" in err
    assert "boundary" in err
    # a second backfill into the same state is refused, nothing written
    assert main(["backfill", "-c", str(cfg_path), "--from", str(history)]) == 1
    assert "holds checkpoints already" in capsys.readouterr().err

    spec = load_config(cfg_path).streams[0].spec()
    whole = hd.replay(events, spec)  # one live run over all of it (replay == live: offline)
    keys = sorted(whole.keys("s"))
    pipe = Pipeline.from_config(cfg_path)
    with pipe:
        assert pipe.counters["s"].rows == HISTORY  # restored from the backfill
        # the topic holds all of it (retained history and new events alike)
        publish(pipe.url, pipe.config.streams[0].topic,
                [(orjson.dumps(r), r["id"]) for r in events.to_pylist()])
        c = pipe.counters["s"]
        wait_for(lambda: c.messages >= N, 60, "every event taken in")
        assert c.before_boundary == HISTORY  # each history event left out once, counted
        got = _windows(pipe.store, keys)
        want = _windows(whole, keys)
        assert np.array_equal(got.values, want.values)
        assert np.array_equal(got.ts_ns, want.ts_ns)
        assert pipe.grpc is not None
        address = f"127.0.0.1:{pipe.grpc.port}"
        assert main(["export", address, "-o", str(tmp_path / "live.parquet")]) == 0
    assert main(["export", str(tmp_path / "state"), "-c", str(cfg_path),
                 "-o", str(tmp_path / "ckpt.parquet")]) == 0
    for name in ("live.parquet", "ckpt.parquet"):
        long = pq.read_table(tmp_path / name)
        assert long.column_names == ["key", "ts_ns", "a", "b"]
        assert long.num_rows == int(want.lengths.sum())
        per_key = long.to_pylist()
        for i, k in enumerate(keys):
            rows = [r for r in per_key if r["key"] == k]
            n = int(want.lengths[i])
            assert [r["ts_ns"] for r in rows] == want.ts_ns[i][-n:].tolist()
            assert [r["a"] for r in rows] == want.values[i][-n:, 0].tolist()


def test_backfill_and_export_refuse_clearly(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = _config(tmp_path, new_topic(), "{ count = 4 }")
    hist = tmp_path / "h.parquet"
    pq.write_table(_events().slice(0, 50), hist)
    no_ckpt = tmp_path / "plain.toml"
    no_ckpt.write_text(cfg_path.read_text().replace("[checkpoint]", "[checkpoint]\nenabled "
                                                                    "= false"))
    cases = [
        (["backfill", "-c", str(no_ckpt), "--from", str(hist)], "checkpoints are off"),
        (["backfill", "-c", str(cfg_path), "--from", str(hist), "--stream", "x"],
         "no stream 'x'"),
        (["backfill", "-c", str(cfg_path), "--from", str(hist), "--until", "noon"],
         "--until 'noon': use ISO 8601"),
        (["backfill", "-c", str(cfg_path), "--from", str(hist), "--until",
          "2026-01-01T00:00:00"], "give a time zone"),
        (["backfill", "-c", str(cfg_path), "--from", str(tmp_path / "none.parquet")],
         "no such file"),
        (["export", str(tmp_path), "-c", str(tmp_path / "none.toml"), "-o",
          str(tmp_path / "o.parquet")], "none.toml: no such file"),
        (["export", str(tmp_path), "-c", str(cfg_path), "-o", str(tmp_path / "o.parquet")],
         "no checkpoint there"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").iterdir())
    # --until leaves the later history out and is the boundary
    assert main(["backfill", "-c", str(cfg_path), "--from", str(hist), "--until", "1200"]) == 0
    err = capsys.readouterr().err
    assert "rows after --until left out" in err
    assert "(1200000000 ns)" in err
    assert main(["export", str(tmp_path / "state"), "-c", str(cfg_path),
                 "-o", str(tmp_path / "o.parquet")]) == 0
    assert pq.read_table(tmp_path / "o.parquet").column("ts_ns").to_numpy().max() <= 1_200 * 10**6
