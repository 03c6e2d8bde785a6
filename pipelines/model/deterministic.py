"""Deterministic closed-form weights and inputs of the equivalence test (reference/equivalence.md).

The same formula fills every state-dict entry on both sides (ours and the official code), so the
outputs can be compared without real weights. It also gives the offline demo a model before any
trained one exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from pipelines.model.birefnet import relative_position_index

_P = 10007


def _sines(n: int, entry_index: int) -> np.ndarray:
    k = np.arange(n, dtype=np.int64)
    r = (7919 * ((k * k) % _P) + 4657 * k + 6151 * entry_index) % _P
    return np.sin(2 * np.pi * r.astype(np.float64) / _P)


def deterministic_tensor(key: str, shape: Sequence[int], entry_index: int) -> torch.Tensor:
    """The canonical value of state-dict entry ``entry_index`` (its position in the official order).

    Returns float32 for floating entries (the canonical precision) and int64 for the index buffers.
    """
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("relative_position_index"):
        window = int(round((shape[0]) ** 0.5))
        return relative_position_index(window)
    s = _sines(n, entry_index)
    if key.endswith("running_var"):
        values = 1.0 + 0.1 * np.abs(s)
    elif key.endswith("running_mean"):
        values = 0.05 * s
    elif key.endswith("relative_position_bias_table"):
        values = 0.1 * s
    elif len(shape) == 1 and key.endswith("weight"):
        values = 1.0 + 0.05 * s
    elif len(shape) == 1 and key.endswith("bias"):
        values = 0.02 * s
    else:
        fan_in = n / shape[0]
        values = 1.5 * s / np.sqrt(fan_in)
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def deterministic_state_dict(entries: Iterable[tuple[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    """Fill an ordered list of ``(key, shape)`` entries (e.g. a manifest, or ``model.state_dict()``)."""
    return {key: deterministic_tensor(key, shape, i) for i, (key, shape) in enumerate(entries)}


def deterministic_input(height: int, width: int) -> torch.Tensor:
    """The reference input ``[1, 3, H, W]`` float32 (stands for an already normalised image)."""
    c = np.arange(3, dtype=np.float64)[:, None, None]
    y = np.arange(height, dtype=np.float64)[None, :, None]
    x = np.arange(width, dtype=np.float64)[None, None, :]
    v = 1.5 * np.sin(0.043 * y * (c + 1) + 0.029 * x + 0.9 * c) + 0.5 * np.cos(0.011 * (y + 2 * x) - 0.4 * c)
    return torch.from_numpy(v.astype(np.float32))[None]
