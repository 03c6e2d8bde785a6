"""How closely backends and precisions agree: with each other, and with the official reference.

Used by ``scripts/bench_gpu.py`` and the GPU tests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.model.birefnet import create_model


@dataclass(frozen=True)
class Agreement:
    """Agreement of two ``[B, h, w]`` uint8 alpha batches.

    Attributes:
        mean_iou: mean over images of the IoU of the masks ``alpha ≥ 128`` (1.0 when both are empty).
        max_abs_alpha: largest ``|Δα|`` over all pixels, in ``[0, 1]`` units.
        mean_abs_alpha: mean ``|Δα|``, in ``[0, 1]`` units.
    """

    mean_iou: float
    max_abs_alpha: float
    mean_abs_alpha: float


def alpha_agreement(reference: np.ndarray, other: np.ndarray) -> Agreement:
    """Compare two uint8 alpha batches of the same shape ``[B, h, w]``."""
    if reference.shape != other.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {other.shape}")
    ious = []
    for a, b in zip(reference >= 128, other >= 128, strict=True):
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
    diff = np.abs(reference.astype(np.int16) - other.astype(np.int16)) / 255.0
    return Agreement(mean_iou=float(np.mean(ious)), max_abs_alpha=float(diff.max()), mean_abs_alpha=float(diff.mean()))


# Float32 tolerances of the equivalence check (reference/equivalence.md, scripts/check_equivalence.py).
FLOAT32_MAX_MASK_DIFF = 2e-5
FLOAT32_MEAN_MASK_DIFF = 1e-6


@dataclass(frozen=True)
class Equivalence:
    """Our float32 output against the official float64 reference mask.

    Attributes:
        max_abs_mask_diff, mean_abs_mask_diff: ``|sigmoid(ours) − reference|`` over the mask.
        passed: both within the float32 tolerances.
    """

    max_abs_mask_diff: float
    mean_abs_mask_diff: float

    @property
    def passed(self) -> bool:
        return self.max_abs_mask_diff <= FLOAT32_MAX_MASK_DIFF and self.mean_abs_mask_diff <= FLOAT32_MEAN_MASK_DIFF


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """Full float32 matmuls and convolutions on CUDA inside the block (TF32 rounds to 10 bits).

    A flag already off is left alone: writing the matmul one, even back to its value, turns torch's
    matmul ``fp32_precision`` from ``none`` into ``ieee``, which is part of inductor's cache key, so
    a later ``torch.compile`` would miss the graphs compiled before the block.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if matmul:
        torch.backends.cuda.matmul.allow_tf32 = False
    if cudnn:
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        if matmul:
            torch.backends.cuda.matmul.allow_tf32 = True
        if cudnn:
            torch.backends.cudnn.allow_tf32 = True


def reference_equivalence(variant: str, case: str, reference_dir: Path, device: torch.device) -> Equivalence:
    """Run the deterministic-weights reference case (e.g. ``lite``, ``288x416``) in float32 on ``device``.

    Reads ``{variant}_state_dict_manifest.json`` and ``{variant}_reference_{case}.npz`` from
    ``reference_dir`` (no safetensors needed). TF32 is off for the forward pass.
    """
    from pipelines.model.checkpoint import load_state_dict_into
    from pipelines.model.deterministic import deterministic_input, deterministic_state_dict
    from pipelines.model.variants import get_variant

    manifest = json.loads((reference_dir / f"{variant}_state_dict_manifest.json").read_text())
    reference = np.load(reference_dir / f"{variant}_reference_{case}.npz")
    model = create_model(get_variant(variant).config)
    entries = [(key, shape) for key, shape, _dtype in manifest["entries"]]
    load_state_dict_into(model, deterministic_state_dict(entries), source="deterministic")
    model = model.to(device)
    x = deterministic_input(*reference["input"].shape[1:]).to(device)
    with tf32_disabled(), torch.inference_mode():
        logits = model(x)[0, 0].double().cpu()
    diff = np.abs(torch.sigmoid(logits).numpy() - reference["mask_f64"])
    return Equivalence(max_abs_mask_diff=float(diff.max()), mean_abs_mask_diff=float(diff.mean()))
