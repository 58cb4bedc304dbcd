"""Adapters: what users run, made into ``(batch: WindowBatch) -> ndarray``.

- a plain callable: used as it is;
- a scikit-learn estimator (or anything with ``predict``, ``predict_proba`` or
  ``decision_function``): fed ``features(batch)``, by default ``window_features`` (last,
  mean and std of each field over each key's rows);
- an ONNX Runtime ``InferenceSession``: fed ``features(batch)``, by default the windows
  ``batch.values`` (B, W, F) as float32, on its first input; its first output is the score;
- a PyTorch ``nn.Module``: fed ``torch.from_numpy(features(batch))`` (no copy), by default
  the windows, under ``torch.inference_mode()``.

Frameworks are detected by the type's module and never imported here unless the object
comes from them, so each stays an optional extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from heimdall.errors import ConfigError
from heimdall.window import WindowBatch

ModelFn = Callable[[WindowBatch], Any]
Features = Callable[[WindowBatch], np.ndarray]

_SKLEARN_METHODS = ("predict", "predict_proba", "decision_function")


def window_features(batch: WindowBatch) -> np.ndarray:
    """(B, 3F) float64: per field, the last value, the mean and the std of each key's rows
    (0 for a key with no rows)."""
    mask = batch.mask[:, :, None]
    n = np.maximum(batch.lengths, 1)[:, None].astype(np.float64)
    v = batch.values.astype(np.float64, copy=False)
    mean = np.where(mask, v, 0.0).sum(axis=1) / n
    var = np.where(mask, (v - mean[:, None, :]) ** 2, 0.0).sum(axis=1) / n
    last = v[:, -1, :]
    return np.concatenate([last, mean, np.sqrt(var)], axis=1)


def _module_of(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _is_torch_module(obj: Any) -> bool:
    if _module_of(obj) != "torch" and not any(
        c.__module__.startswith("torch.") for c in type(obj).__mro__
    ):
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def adapt(obj: Any, *, features: Features | None = None, method: str | None = None) -> ModelFn:
    """The scoring function for ``obj`` (see the module docstring).

    Raises ``ConfigError`` when ``obj`` is none of the kinds above, or ``method`` is not one
    it has.
    """
    if _module_of(obj) == "onnxruntime" and hasattr(obj, "run") and hasattr(obj, "get_inputs"):
        return _onnx(obj, features)
    if _is_torch_module(obj):
        return _torch(obj, features)
    if method is not None or (
        not _is_plain_callable(obj) and any(hasattr(obj, m) for m in _SKLEARN_METHODS)
    ):
        return _estimator(obj, features, method)
    if callable(obj):
        if features is not None:
            return lambda batch: obj(features(batch))
        fn: ModelFn = obj
        return fn
    raise ConfigError(
        f"cannot run {type(obj).__name__!r} as a model: give a callable taking a WindowBatch, "
        f"a scikit-learn estimator, an onnxruntime.InferenceSession or a torch.nn.Module"
    )


def _is_plain_callable(obj: Any) -> bool:
    import inspect

    return inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj)


def _estimator(est: Any, features: Features | None, method: str | None) -> ModelFn:
    name = method or next((m for m in _SKLEARN_METHODS if hasattr(est, m)), None)
    if name is None or not hasattr(est, name):
        raise ConfigError(
            f"{type(est).__name__} has no method {method!r}; "
            f"it has {[m for m in _SKLEARN_METHODS if hasattr(est, m)]}"
        )
    call = getattr(est, name)
    feats = features or window_features

    def score(batch: WindowBatch) -> Any:
        return call(feats(batch))

    return score


def _onnx(sess: Any, features: Features | None) -> ModelFn:
    input_name = sess.get_inputs()[0].name

    def score(batch: WindowBatch) -> Any:
        x = features(batch) if features else batch.values
        return sess.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return score


def _torch(module: Any, features: Features | None) -> ModelFn:
    import torch

    module.eval()

    def score(batch: WindowBatch) -> Any:
        x = features(batch) if features else batch.values
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(x)))
        return out.detach().cpu().numpy()

    return score
