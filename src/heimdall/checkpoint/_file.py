"""The checkpoint file: one file per checkpoint, verified as a whole.

Layout::

    b"HDCKPT01" | header length (u64 LE) | header (msgpack) | array bytes ... | sha256 (32 B)

The header holds the manifest (plain data: config fingerprint, per-stream state, acknowledged
ids) and where each array's bytes are. The digest covers everything before it, so a
truncated file, a flipped byte or a torn write fails verification. A file is written under a
temporary name, fsynced, renamed into place and the directory fsynced: a crash leaves either
the whole new checkpoint or none of it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from heimdall.errors import CorruptCheckpointError

MAGIC = b"HDCKPT01"
_DIGEST = 32
PREFIX = "ckpt-"
SUFFIX = ".hdc"


def path_for(directory: Path, seq: int) -> Path:
    return directory / f"{PREFIX}{seq:012d}{SUFFIX}"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(sequence number, path) of the checkpoints in ``directory``, newest first."""
    out = []
    for p in directory.glob(f"{PREFIX}*{SUFFIX}"):
        try:
            out.append((int(p.name[len(PREFIX):-len(SUFFIX)]), p))
        except ValueError:
            continue
    return sorted(out, reverse=True)


def write(directory: Path, seq: int, manifest: Mapping[str, Any],
          arrays: Mapping[str, np.ndarray]) -> tuple[Path, int]:
    """Write checkpoint ``seq`` durably; returns its path and size in bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    layout = []
    offset = 0
    for name, a in arrays.items():
        layout.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape),
                       "offset": offset, "nbytes": int(a.nbytes)})
        offset += int(a.nbytes)
    header = msgspec.msgpack.encode({"manifest": manifest, "arrays": layout})
    final = path_for(directory, seq)
    tmp = directory / f".{final.name}.tmp"
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for chunk in (MAGIC, len(header).to_bytes(8, "little"), header):
            h.update(chunk)
            f.write(chunk)
        for a in arrays.values():
            buf = np.ascontiguousarray(a).reshape(-1).view(np.uint8).data
            h.update(buf)
            f.write(buf)
        f.write(h.digest())
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final, size


def read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a checkpoint. Raises CorruptCheckpointError saying what is wrong."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpointError(f"{path}: cannot read: {exc}") from exc
    if len(blob) < len(MAGIC) + 8 + _DIGEST or not blob.startswith(MAGIC):
        raise CorruptCheckpointError(f"{path}: not a Heimdall checkpoint, or truncated "
                                     f"({len(blob)} bytes)")
    body = memoryview(blob)[:-_DIGEST]
    if hashlib.sha256(body).digest() != blob[-_DIGEST:]:
        raise CorruptCheckpointError(f"{path}: checksum mismatch (truncated or altered)")
    n = int.from_bytes(blob[8:16], "little")
    try:
        header = msgspec.msgpack.decode(body[16:16 + n])
        start = 16 + n
        arrays = {}
        for a in header["arrays"]:
            raw = body[start + a["offset"]: start + a["offset"] + a["nbytes"]]
            arrays[a["name"]] = np.frombuffer(raw, dtype=np.dtype(a["dtype"])).reshape(
                a["shape"])
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(f"{path}: malformed header: {exc}") from exc
    return header["manifest"], arrays
