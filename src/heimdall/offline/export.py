"""Windows to Parquet in long format: one row per event held (key, ts_ns, then the fields),
each key's rows oldest first, from any reader (a store, a remote node, a cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from heimdall.window.reader import WindowReader

KEYS_PER_READ = 512


def export_windows(reader: WindowReader, stream: str, path: str | Path, *,
                   keys_per_read: int = KEYS_PER_READ) -> tuple[int, int]:
    """Write every key's window of ``stream`` to a Parquet file at ``path`` (a row group per
    ``keys_per_read`` keys, each read as one consistent ``windows`` call); returns (keys,
    rows). Written to a temporary name and renamed: a failed export leaves no partial file."""
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    keys = reader.keys(stream)
    writer: Any = None
    rows = 0
    try:
        for a in range(0, max(len(keys), 1), keys_per_read):
            batch = reader.windows(stream, keys[a:a + keys_per_read])
            mask = batch.mask & batch.found[:, None]
            lengths = mask.sum(axis=1)
            cols: dict[str, Any] = {
                "key": pa.array(np.repeat(np.array(batch.keys, dtype=object), lengths).tolist()
                                if len(batch.keys) else []),
                "ts_ns": pa.array(batch.ts_ns[mask], pa.int64()),
            }
            values = batch.values[mask]
            for j, name in enumerate(batch.fields):
                cols[name] = pa.array(values[:, j])
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        writer.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(keys), rows
