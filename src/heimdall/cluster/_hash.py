"""The broker's key hash: which hash range a key falls in, computed as Pulsar computes it
for Key_Shared subscriptions, so a client finds a key's node without asking anyone.

Pulsar 4 hashes the message key's UTF-8 bytes with Murmur3 32-bit (seed 0), clears the sign
bit, and maps the result into ``[1, 65535]`` (``hash % 65535 + 1``); a consumer's
``keyHashRangeArrays`` are inclusive ranges of that space. ``tests/integration/test_cluster.py``
holds this to the broker's own routing of thousands of keys.
"""

from __future__ import annotations

_C1, _C2, _M32 = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
# Key_Shared's hash space is [1, RANGE_SIZE - 1]: hashes are taken modulo 65535, plus one
RANGE_SIZE = 1 << 16
_MODULO = RANGE_SIZE - 1


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit of ``data``, as an unsigned int.

    >>> murmur3_32(b"hello")
    613153351
    >>> murmur3_32(b"")
    0
    """
    h = seed
    n = len(data)
    tail = n - n % 4
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _C1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * _C2) & _M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _M32
        h = (h * 5 + 0xE6546B64) & _M32
    k = 0
    for i, b in enumerate(data[tail:]):
        k ^= b << (8 * i)
    k = (k * _C1) & _M32
    k = ((k << 15) | (k >> 17)) & _M32
    k = (k * _C2) & _M32
    h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def key_hash(key: str | int) -> int:
    """The Key_Shared hash of an entity key: its text (an int key as its decimal digits, as
    a producer sets the message key) hashed as Pulsar's broker hashes a message key, in
    ``[1, RANGE_SIZE)``.

    >>> key_hash("m-1") == key_hash("m-1") and 1 <= key_hash(17) < RANGE_SIZE
    True
    """
    text = key if isinstance(key, str) else str(int(key))
    return (murmur3_32(text.encode()) & 0x7FFFFFFF) % _MODULO + 1
