"""Durability: checkpoints of the store and of what the broker may redeliver."""

from heimdall.checkpoint.checkpointer import Checkpointer, CheckpointStats
from heimdall.errors import CorruptCheckpointError

__all__ = ["CheckpointStats", "Checkpointer", "CorruptCheckpointError"]
