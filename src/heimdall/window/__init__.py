"""The window store: per-key ring buffers, zero-copy views, batched reads and aggregates.

Data flow. A write (``WindowStore.append``, ``append_batch``) goes to the stream's ``Ring``
(``_ring.py``), which holds the policy: new keys get slots, a full store evicts the least
recently updated key (``_admit.py`` plans a batch's evictions), idle keys expire. The rows
themselves go through the ring's core, ``heimdall._core.RingCore`` (the Rust crate in
``native/``): its key index (``KeyIndex``: key -> slot, slot -> key) finds each row's slot,
and its write path appends the row under the slot's seqlock, in a ring with slack that
compacts. A store's two per-event calls, ``append`` and ``window``, are its core's
(``StoreCore``), which hand every case they do not do whole to the store's Python paths.

A read takes no lock: ``window`` returns a view (``view.py``: ``Window``, a slice of the
ring checked by the seqlock); ``windows`` and ``aggregate`` (``reads.py``, shared by every
reader of rings in this process) copy or reduce many keys at once in the core, each key's
read kept only if its seqlock and its slot's owner vouch for it. Another process reads the
same rings through shared memory (``_shared.py``: the segment and its key index;
``attach.py``: ``AttachedStore``). Every reader satisfies ``WindowReader`` (``reader.py``).
"""

from heimdall.window.reader import DEFAULT_AGGREGATES, WindowReader
from heimdall.window.reads import AGGREGATES
from heimdall.window.store import WindowStore
from heimdall.window.view import Window, WindowBatch

__all__ = ["AGGREGATES", "DEFAULT_AGGREGATES", "Window", "WindowBatch", "WindowReader",
           "WindowStore"]
