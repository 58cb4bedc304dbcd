"""MessagePack payloads, one map per message, with the same keys as the JSON format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from heimdall.decode._records import RecordDecoder


class MsgpackDecoder(RecordDecoder):
    """One MessagePack map per message; unknown keys are ignored, types are checked."""

    def make_codec(self, record: type) -> Callable[[bytes], Any]:
        return msgspec.msgpack.Decoder(record).decode
