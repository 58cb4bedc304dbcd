"""The owner's writes to a shared-memory store's key index, in the native core (shm.rs), against
the Python writes they replaced (kept here as the oracle): the same bytes in the key rows,
the table and the version after any sequence of puts and removals, so that readers in other
processes (SharedIndex.lookup_encoded, in Python) find every key held and no other."""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from heimdall.window._shared import KEY_BYTES, SharedIndex, encode_key


def _arrays(max_keys: int, table: int) -> dict[str, np.ndarray]:
    return {"keys": np.zeros((max_keys, KEY_BYTES), np.uint8), "index": np.zeros(table, np.int64),
            "index_version": np.zeros(1, np.int64), "live": np.zeros(max_keys, bool)}


class Oracle:
    """SharedIndex's put and remove as they were written in Python."""

    def __init__(self, a: dict[str, np.ndarray]) -> None:
        self.k, self.t, self.v = a["keys"].reshape(-1), a["index"], a["index_version"]
        self.mask = len(self.t) - 1

    def home(self, kb: bytes) -> int:
        return (zlib.crc32(kb) * 0x9E3779B1) & self.mask

    def put(self, key: str | int, slot: int) -> None:
        kb, off = encode_key(key), slot * KEY_BYTES
        self.k[off + 1: off + 1 + len(kb)] = np.frombuffer(kb, np.uint8)
        self.k[off] = len(kb)
        i = self.home(kb)
        while self.t[i]:
            i = (i + 1) & self.mask
        self.t[i] = slot + 1

    def remove(self, key: str | int, slot: int) -> None:
        kb, t, mask = encode_key(key), self.t, self.mask
        i = self.home(kb)
        while t[i] and t[i] != slot + 1:
            i = (i + 1) & mask
        if not t[i]:
            return
        self.v[0] += 1
        t[i] = 0
        j = i
        while True:
            j = (j + 1) & mask
            if not t[j]:
                break
            off = (int(t[j]) - 1) * KEY_BYTES
            home = self.home(bytes(self.k[off + 1: off + 1 + int(self.k[off])]))
            if (j - home) & mask >= (j - i) & mask:
                t[i], t[j] = t[j], 0
                i = j
        self.v[0] += 1
        self.k[slot * KEY_BYTES] = 0


KEYS = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1))


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), KEYS, st.integers(1, 6)), max_size=60),
       table=st.sampled_from([16, 32]))
def test_c_writes_leave_the_bytes_the_python_writes_left(
    ops: list[tuple[bool, str | int, int]], table: int
) -> None:
    max_keys = 12
    a, b = _arrays(max_keys, table), _arrays(max_keys, table)
    c, oracle = SharedIndex(a), Oracle(b)
    held: dict[str | int, int] = {}
    free = list(range(max_keys))
    for add, key, n in ops:
        if add and key not in held and free and len(held) < table // 2:
            slots = free[:1]
            del free[:1]
            c.put_many(slots, [key])
            oracle.put(key, slots[0])
            held[key] = slots[0]
        elif held:
            out = list(held)[:n]  # a batch of removals, in order
            c.remove_many([held[k] for k in out])
            for k in out:
                oracle.remove(k, held[k])
                free.append(held.pop(k))
        for name in a:
            assert a[name].tobytes() == b[name].tobytes(), name
    for key, slot in held.items():
        assert c.lookup_encoded(encode_key(key)) == slot
    assert np.count_nonzero(a["index"]) == len(held)


def test_batches_of_many_keys_are_found_by_a_reader() -> None:
    a = _arrays(1000, 2048)
    ix = SharedIndex(a)
    keys: list[str | int] = [f"sensor-{i}" for i in range(600)] + list(range(-200, 200))
    ix.put_many(list(range(1000)), keys)
    ix.remove_many(list(range(0, 1000, 3)))
    for slot, key in enumerate(keys):
        found = ix.lookup_encoded(encode_key(key))
        assert found == (None if slot % 3 == 0 else slot)
    assert int(a["index_version"][0]) == 2 * len(range(0, 1000, 3))
    assert np.count_nonzero(a["index"]) == 1000 - len(range(0, 1000, 3))
