"""The inference runner: triggers, batching across keys, adapters, predictions."""

from heimdall.models.adapters import adapt, window_features
from heimdall.models.predictions import Prediction, Predictions
from heimdall.models.runner import ModelRunner, ModelSpec, ModelStats

__all__ = [
    "ModelRunner",
    "ModelSpec",
    "ModelStats",
    "Prediction",
    "Predictions",
    "adapt",
    "window_features",
]
