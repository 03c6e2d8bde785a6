"""Inference backends: eager PyTorch, ``torch.compile`` and TensorRT behind one small protocol.

:func:`~pipelines.backends.selection.build_backend` is the one place that chooses a backend; it
falls back ``tensorrt → compile → eager`` with one log line per failure. Nothing here touches
CUDA at import time, and ``torch_tensorrt`` is imported only inside
:mod:`pipelines.backends.tensorrt`, when that backend is built.
"""

from __future__ import annotations

from pipelines.backends.base import BackendSpec, BackendUnavailableError, InferenceBackend
from pipelines.backends.batching import PinnedStaging, padded_batch_size, plan_chunks
from pipelines.backends.selection import BACKEND_NAMES, BackendChoice, build_backend, fallback_chain

__all__ = [
    "BACKEND_NAMES",
    "BackendChoice",
    "BackendSpec",
    "BackendUnavailableError",
    "InferenceBackend",
    "PinnedStaging",
    "build_backend",
    "fallback_chain",
    "padded_batch_size",
    "plan_chunks",
]
