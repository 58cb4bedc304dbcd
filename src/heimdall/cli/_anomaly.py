"""The demo's model: a z-score anomaly detector, fitted at start on normal readings.

A machine's score is the largest, over temperature and vibration, of how many standard errors
the mean of its last ``recent`` readings lies from the normal mean. Drift moves that mean;
noise alone rarely moves it past ``threshold`` (6 standard errors).
"""

from __future__ import annotations

import numpy as np

from heimdall.window import WindowBatch


class ZScoreDetector:
    """``(batch) -> scores (B,)``; ``fit`` learns the normal mean and std of each field."""

    def __init__(self, fields: tuple[str, ...], watch: tuple[str, ...] = ("temp", "vibration"),
                 recent: int = 16, threshold: float = 6.0) -> None:
        self.fields = fields
        self.cols = [fields.index(f) for f in watch]
        self.recent = recent
        self.threshold = threshold
        self.mean = np.zeros(len(fields))
        self.std = np.ones(len(fields))

    def fit(self, normal: np.ndarray) -> ZScoreDetector:
        """Learn from (n, F) readings of healthy machines."""
        self.mean = normal.mean(axis=0)
        self.std = normal.std(axis=0)
        return self

    def __call__(self, batch: WindowBatch) -> np.ndarray:
        r = min(self.recent, batch.values.shape[1])
        tail = batch.values[:, -r:, :][:, :, self.cols].astype(np.float64)
        n = np.minimum(batch.lengths, r)[:, None]
        valid = np.arange(r)[None, :] >= (r - n)  # right-aligned rows that hold data
        mean = (tail * valid[:, :, None]).sum(axis=1) / np.maximum(n, 1)
        se = self.std[self.cols] / np.sqrt(np.maximum(n, 1))
        z: np.ndarray = (np.abs(mean - self.mean[self.cols]) / se).max(axis=1)
        return z
