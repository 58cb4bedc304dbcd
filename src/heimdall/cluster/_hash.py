"""The broker's key hash: which hash range a key falls in, computed as Pulsar computes it
for Key_Shared subscriptions, so a client finds a key's node without asking anyone.

Pulsar 4 hashes the message key's UTF-8 bytes with Murmur3 32-bit (seed 0), clears the sign
bit, and maps the result into ``[1, 65535]`` (``hash % 65535 + 1``); a consumer's
``keyHashRangeArrays`` are inclusive ranges of that space. The hash is the native core's
(``native/src/hash.rs``); ``tests/integration/test_cluster.py`` holds it to the broker's own
routing of thousands of keys.

>>> murmur3_32(b"hello")
613153351
>>> key_hash("m-1") == key_hash("m-1") and 1 <= key_hash(17) < RANGE_SIZE
True
>>> key_hash(17) == key_hash("17")  # an int key is routed by its decimal text
True
"""

from __future__ import annotations

from heimdall._core import RANGE_SIZE, key_hash, murmur3_32

__all__ = ["RANGE_SIZE", "key_hash", "murmur3_32"]
