"""The store in named POSIX shared memory, and readers in other processes. Internal.

One segment per store::

    header (4096 B): magic, generation, writer pid, state, layout length, layout (JSON)
    per stream: data, ts, meta, live (the ring's arrays, as in process), stats (int64 x 8:
                events, evictions, expired keys, the scatter's counters; the native core's
                layout, ``S_*``),
                keys (max_keys x 64 B: length byte + encoded key), index (int64 x H),
                index version (int64, a seqlock over removals)

Keys are encoded ``b"s" + utf-8`` or ``b"i" + 8 bytes``, at most 63 bytes. The index is an
open-addressing hash table (linear probing, H = a power of two >= 2 x max_keys) of ``slot +
1`` (0 = empty), keyed by crc32 of the encoded key: a reader probes it itself, no message to
the writer. The writer writes a slot's key bytes before it publishes the slot in the index,
and takes it out of the index before it clears them; removals shift entries back (no
tombstones) inside the index version seqlock, so a reader retries a probe that overlapped
one. A reader verifies the key bytes of the slot it found after reading the slot's window
bounds: a slot evicted and reused for another key is never returned under the old name.
The per-key seqlock (WSEQ/CSEQ in meta) is the same as in process.

Only the owner creates (mode 0600) and unlinks; readers never unlink (Python < 3.13's
resource tracker would: readers unregister from it). The generation (random at creation)
and the writer's pid tell readers the writer restarted or died.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import secrets
import struct
import time
import weakref
import zlib
from collections.abc import Iterator, Sequence
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from heimdall import _core as core
from heimdall.errors import ConfigError, SchemaError, SharedMemoryError, shown
from heimdall.schema import StreamSpec

MAGIC = b"HDSHM001"
HEADER = 4096
KEY_BYTES = 64
STATE_LIVE, STATE_CLOSED = 1, 2
ST_EVENTS, ST_EVICTIONS, ST_EXPIRED, ST_LATE, ST_OOO, ST_EXPIRED_ON_ARRIVAL = range(6)
_ALIGN = 64
NAME_MAX = 200  # POSIX shared memory names live in /dev/shm: one file name, 255 bytes at most


def check_name(name: Any) -> str:
    """A segment's name as ``shm_open`` takes it (after the leading slash Python adds);
    ConfigError naming what is wrong otherwise."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a shared-memory name is a non-empty str; received {shown(name)}")
    if "/" in name or "\0" in name:
        raise ConfigError(f"a shared-memory name holds no '/' or NUL; received {shown(name)}")
    if len(name.encode()) > NAME_MAX:
        raise ConfigError(f"a shared-memory name is at most {NAME_MAX} bytes; received "
                          f"{len(name.encode())}")
    return name


def encode_key(key: Any) -> bytes:
    """A key's bytes in the shared index. Raises SchemaError if it cannot be shared."""
    if isinstance(key, str):
        try:
            b = b"s" + key.encode()
        except UnicodeEncodeError as exc:
            raise SchemaError(f"key {shown(key)} is not valid UTF-8 ({exc.reason}); shared-memory "
                              f"stores hold keys as UTF-8") from None
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not -(2**63) <= key < 2**63:
            raise SchemaError(f"key {shown(key)} is past int64; shared-memory stores hold int keys "
                              f"from -2**63 to 2**63 - 1")
        b = b"i" + struct.pack("<q", int(key))
    else:
        raise SchemaError(f"a key is a str or an int; received {shown(key)}")
    if len(b) >= KEY_BYTES:
        raise SchemaError(f"key {shown(key)} is {len(b) - 1} bytes; shared-memory stores hold keys "
                          f"of at most {KEY_BYTES - 2} bytes")
    return b


def decode_key(b: bytes) -> Any:
    return b[1:].decode() if b[:1] == b"s" else struct.unpack("<q", b[1:9])[0]


def _pow2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


def _spec_json(spec: StreamSpec) -> dict[str, Any]:
    w = spec.window
    window = {"count": w.n} if hasattr(w, "n") else {"seconds": w.seconds,
                                                      "max_rows": w.max_rows}
    return {"name": spec.name, "key": spec.key, "time": spec.time, "fields": list(spec.fields),
            "dtype": spec.dtype, "window": window,
            "allowed_lateness_s": spec.allowed_lateness_s, "nan": spec.nan,
            "time_unit": spec.time_unit}


def spec_from_json(d: dict[str, Any]) -> StreamSpec:
    from heimdall.schema import CountWindow, TimeWindow

    w = d["window"]
    window = CountWindow(w["count"]) if "count" in w else TimeWindow(w["seconds"],
                                                                     w["max_rows"])
    return StreamSpec(d["name"], key=d["key"], time=d["time"], fields=d["fields"],
                      dtype=d["dtype"], window=window,
                      allowed_lateness_s=d["allowed_lateness_s"], nan=d["nan"],
                      time_unit=d["time_unit"])


def plan(specs: Sequence[StreamSpec], max_keys: int, caps: dict[str, int]
         ) -> tuple[dict[str, Any], int]:
    """Offsets of every array; returns the layout and the segment's size."""
    off = HEADER
    streams = []
    for spec in specs:
        cap, F = caps[spec.name], len(spec.fields)
        H = _pow2(2 * max_keys)
        arrays = {}
        for name, shape, dtype in (
            ("data", [max_keys, cap, F], spec.dtype), ("ts", [max_keys, cap], "int64"),
            ("meta", [max_keys, core.META_COLS], "int64"), ("live", [max_keys], "bool"),
            ("stats", [core.STATS_COLS], "int64"), ("keys", [max_keys, KEY_BYTES], "uint8"),
            ("index", [H], "int64"), ("index_version", [1], "int64"),
        ):
            arrays[name] = {"offset": off, "shape": shape, "dtype": dtype}
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            off += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
        streams.append({"spec": _spec_json(spec), "cap": cap, "arrays": arrays})
    return {"max_keys": max_keys, "streams": streams}, off


def views(buf: memoryview, layout: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for s in layout["streams"]:
        out[s["spec"]["name"]] = {
            name: _array(buf, a["shape"], a["dtype"], a["offset"])
            for name, a in s["arrays"].items()
        }
    return out


class Segment:
    """A store's shared-memory segment, created (owner) or attached (reader)."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool,
                 layout: dict[str, Any]) -> None:
        self.shm = shm
        self.owner = owner
        self.layout = layout
        self.name = shm.name
        self.header = _array(_buf(shm), (4,), "int64", 8)
        self.arrays = views(_buf(shm), layout)
        # the owner's segment goes with the store: at close(), when the store is collected,
        # or when the interpreter exits without close() (weakref.finalize runs at exit)
        self._release = weakref.finalize(self, _release, shm) if owner else None

    @classmethod
    def create(cls, name: str, layout: dict[str, Any], size: int) -> Segment:
        check_name(name)
        try:
            shm = _SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            raise ConfigError(
                f"shared memory {shown(name)} exists: another store owns it, or a killed one left "
                f"it (`heimdall shm list`, `heimdall shm remove {name}`)") from None
        _untrack(shm)
        _advise_huge_pages(shm)
        blob = json.dumps(layout).encode()
        if len(blob) > HEADER - 48:
            _unlink(shm)
            raise ConfigError("too many streams for one shared-memory header")
        header = _array(_buf(shm), (4,), "int64", 8)
        header[0] = secrets.randbits(62)      # generation
        header[1] = os.getpid()              # writer
        header[3] = len(blob)
        _buf(shm)[40:40 + len(blob)] = blob
        _buf(shm)[:8] = MAGIC
        header[2] = STATE_LIVE
        return cls(shm, True, layout)

    @classmethod
    def attach(cls, name: str) -> Segment:
        check_name(name)
        try:
            shm = _SharedMemory(name=name)
        except FileNotFoundError:
            raise SharedMemoryError(
                f"no shared-memory store {shown(name)} on this host (`heimdall shm list` shows "
                f"them)") from None
        _untrack(shm)
        _advise_huge_pages(shm)
        if bytes(_buf(shm)[:8]) != MAGIC:
            shm.close()
            raise SharedMemoryError(f"shared memory {shown(name)} is not a Heimdall store")
        header = _array(_buf(shm), (4,), "int64", 8)
        layout = json.loads(bytes(_buf(shm)[40:40 + int(header[3])]))
        return cls(shm, False, layout)

    @property
    def generation(self) -> int:
        return int(self.header[0])

    @property
    def writer_pid(self) -> int:
        return int(self.header[1])

    @property
    def state(self) -> int:
        return int(self.header[2])

    def close(self) -> None:
        """Unmap; the owner also marks it closed and unlinks it."""
        if self._release is not None:
            self._release()  # once: marks it closed, unlinks it
        self.arrays = {}
        self.header = np.zeros(4, dtype=np.int64)
        with contextlib.suppress(BufferError):  # a caller still holds a view: the OS keeps it
            self.shm.close()


def _release(shm: shared_memory.SharedMemory) -> None:
    """The owner's end of a segment: readers see it closed, the name is unlinked (the
    mapping stays while views of it live)."""
    if shm.buf is not None:
        _array(shm.buf, (4,), "int64", 8)[2] = STATE_CLOSED
    _unlink(shm)


def _array(buf: memoryview, shape: Any, dtype: str, offset: int) -> np.ndarray:
    """An array over the segment that holds a buffer export for as long as it (or any view
    of it) lives, so the mapping cannot be unmapped under it: ``np.ndarray(buffer=...)``
    keeps only a reference, and a store collected while a user still held a window view
    left that view pointing at unmapped memory (a segfault on the next read)."""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(buf, dtype=dt, count=count, offset=offset).reshape(shape)


class _SharedMemory(shared_memory.SharedMemory):
    """``SharedMemory`` whose ``close`` leaves the mapping to its last array: while arrays
    over it live, unmapping is refused (BufferError) and happens when they go."""

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            super().close()


def _buf(shm: shared_memory.SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:  # pragma: no cover - only after close()
        raise SharedMemoryError(f"shared memory {shm.name!r} is closed")
    return buf


def _untrack(shm: shared_memory.SharedMemory) -> None:
    """Python < 3.13 registers every segment with the resource tracker, which unlinks it when
    the process ends: only the owner's ``close`` may."""
    with contextlib.suppress(Exception):
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]


def _advise_huge_pages(shm: shared_memory.SharedMemory) -> None:
    """Ask for transparent huge pages on the segment's mapping: with 4 KB pages, rows written
    (or read) at random far apart miss the TLB nearly every time. Linux honours it only where
    /sys/kernel/mm/transparent_hugepage/shmem_enabled is ``advise`` or ``always``."""
    mapping = getattr(shm, "_mmap", None)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if mapping is not None and advice is not None:
        with contextlib.suppress(OSError, ValueError):
            mapping.madvise(advice)


def _unlink(shm: shared_memory.SharedMemory) -> None:
    """Unlink without telling the resource tracker (it was told to forget the segment)."""
    import _posixshmem

    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink(shm._name)  # type: ignore[attr-defined]


class SharedIndex:
    """The key -> slot hash table of one stream, written by the owner, probed by anyone.

    Reads go through memoryviews (an int or a byte slice per access, no numpy scalar)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.keys = arrays["keys"]
        self.table = arrays["index"]
        self.version = arrays["index_version"]
        self.live = arrays["live"]
        self.mask = len(self.table) - 1
        self._t = self.table.data.cast("B").cast("q")
        self._k = self.keys.reshape(-1).data.cast("B")
        self._v = self.version.data.cast("B").cast("q")

    def _home(self, kb: bytes) -> int:
        return (zlib.crc32(kb) * 0x9E3779B1) & self.mask

    def _key_at(self, slot: int) -> bytes:
        off = slot * KEY_BYTES
        k = self._k
        return bytes(k[off + 1: off + 1 + k[off]])

    def holds(self, slot: int, kb: bytes) -> bool:
        """Whether ``slot`` holds the key encoded as ``kb`` (no decoding)."""
        off = slot * KEY_BYTES
        k = self._k
        return k[off] == len(kb) and k[off + 1: off + 1 + len(kb)] == kb

    # ---- the owner ----------------------------------------------------------------------

    def put_many(self, slots: list[int], keys: list[Any]) -> None:
        """Each key into the index at its slot (slots that hold no key), in order. The keys
        were checked with ``encode_key`` (the native core's ``shm.rs``: the same encoding and
        probe)."""
        core.shared_put(self.table, self.keys, self.version, slots, keys)

    def remove_many(self, slots: list[int]) -> None:
        """The keys ``slots`` hold out of the index, in order (the native core's ``shm.rs``)."""
        core.shared_remove(self.table, self.keys, self.version, slots)

    # ---- anyone -------------------------------------------------------------------------

    def lookup_encoded(self, kb: bytes) -> int | None:
        t, mask, v = self._t, self.mask, self._v
        for _ in range(1000):
            v0 = v[0]
            if v0 & 1:
                time.sleep(0)
                continue
            i = self._home(kb)
            found = None
            while True:
                e = t[i]
                if not e:
                    break
                if self.holds(e - 1, kb):
                    found = e - 1
                    break
                i = (i + 1) & mask
            if v[0] == v0:
                return found
        return None

    def lookup(self, key: Any) -> int | None:
        try:
            kb = encode_key(key)
        except SchemaError:
            return None
        return self.lookup_encoded(kb)

    def key_at(self, slot: int) -> Any:
        kb = self._key_at(int(slot))
        return decode_key(kb) if kb else None

    def __iter__(self) -> Iterator[Any]:
        for slot in np.flatnonzero(self.live).tolist():
            key = self.key_at(slot)
            if key is not None:
                yield key

    def __len__(self) -> int:
        return int(np.count_nonzero(self.live))


def list_segments(directory: Path = Path("/dev/shm")) -> list[dict[str, Any]]:
    """The Heimdall stores in shared memory on this host, with their writer's state."""
    out = []
    for p in sorted(directory.glob("*")):
        try:
            with open(p, "rb") as f:
                head = f.read(48)
        except OSError:
            continue
        if len(head) < 48 or head[:8] != MAGIC:
            continue
        gen, pid, state, _n = struct.unpack("<qqqq", head[8:40])
        alive = state == STATE_LIVE and _pid_alive(pid)
        out.append({"name": p.name, "bytes": p.stat().st_size, "writer_pid": pid,
                    "generation": gen,
                    "state": "live" if alive else ("closed" if state == STATE_CLOSED
                                                    else "writer dead")})
    return out


def remove_segment(name: str) -> None:
    """Unlink a segment a killed writer left. Refuses one whose writer is alive."""
    for s in list_segments():
        if s["name"] == name:
            if s["state"] == "live":
                raise SharedMemoryError(
                    f"shared memory {shown(name)} belongs to a running writer (pid "
                    f"{s['writer_pid']}); stop it instead")
            shm = _SharedMemory(name=name)
            _untrack(shm)
            shm.close()
            _unlink(shm)
            return
    raise SharedMemoryError(f"no Heimdall shared memory named {shown(name)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
