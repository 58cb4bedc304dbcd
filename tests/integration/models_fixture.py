"""A model given by import path in the configuration tests."""

from __future__ import annotations

import numpy as np

from heimdall import WindowBatch


def window_sum(batch: WindowBatch) -> np.ndarray:
    """The sum of field "a" over each key's rows."""
    return (batch.values[:, :, 0] * batch.mask).sum(axis=1)
