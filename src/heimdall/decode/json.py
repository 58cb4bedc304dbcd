"""JSON payloads, one record per message: ``{"machine_id": "m-1", "ts": 1700..., "temp": 71.2}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from heimdall.decode._records import RecordDecoder


class JsonDecoder(RecordDecoder):
    """One JSON object per message; unknown keys are ignored, types are checked."""

    def make_codec(self, record: type) -> Callable[[bytes], Any]:
        return msgspec.json.Decoder(record).decode
