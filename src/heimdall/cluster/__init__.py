"""A cluster: many Heimdall nodes on one Key_Shared subscription, the broker assigning each
its key-hash ranges, clients routing each read to the key's node."""

from heimdall.cluster._hash import RANGE_SIZE, key_hash

__all__ = ["RANGE_SIZE", "key_hash"]
