"""The protocol every inference backend implements, and the settings a backend is built from."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Protocol, runtime_checkable

import torch

Importer = Callable[[str], ModuleType]

# Activation memory of one forward pass per megapixel of model input, fp32 eager, about 20 % above
# the largest measured: general at 1024² on an H100 (bench_gpu.py, 2026-11-27), peak allocated
# minus weights, per image, was 2293 MiB at batch 1 and 2553 MiB at batch 16 (2435 MiB per
# megapixel). Half precision measured 0.53-0.62 of float32 (its deformable convs stay float32).
ACTIVATION_MB_PER_MEGAPIXEL_FP32 = 2900.0
HALF_PRECISION_ACTIVATION_SCALE = 0.65

DEFAULT_ENGINE_CACHE_DIR = Path.home() / ".cache" / "birefnet-serve" / "engines"


class BackendUnavailableError(RuntimeError):
    """A backend cannot be built here (missing package, no GPU, failed compile or engine build)."""


def estimate_activation_mb(input_size: tuple[int, int], batch: int, dtype: torch.dtype, factor: float = 1.0) -> float:
    """Rough activation memory of one forward pass in MB (an over-estimate, for the pre-check).

    ``factor`` scales the eager figure for backends that plan memory differently.
    """
    megapixels = input_size[0] * input_size[1] / 1e6
    scale = HALF_PRECISION_ACTIVATION_SCALE if dtype in (torch.float16, torch.bfloat16) else 1.0
    return ACTIVATION_MB_PER_MEGAPIXEL_FP32 * megapixels * batch * scale * factor


@dataclass(frozen=True)
class BackendSpec:
    """What a backend is built for.

    Attributes:
        variant: registry name, part of the TensorRT engine cache key.
        input_size: model input ``(height, width)``; compiled backends specialise on it.
        device: where the model already lives.
        dtype: the model's parameter dtype and the dtype of the inputs the backend receives.
        batch_sizes: the batch sizes compiled backends are built for, ascending; batches are
            padded up to the nearest one. Eager accepts any batch size.
        compile_mode: ``torch.compile`` mode (``default``, ``reduce-overhead`` for CUDA graphs,
            ``max-autotune``, ``max-autotune-no-cudagraphs``).
        engine_cache_dir: where TensorRT engines are stored between starts.
        weights_id: identifies the loaded weights (checkpoint name, size and date, or
            ``deterministic``); part of the engine cache key so new weights never reuse an engine.
        importer: imports optional packages by name (injected in tests to simulate their absence).
    """

    variant: str
    input_size: tuple[int, int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    batch_sizes: tuple[int, ...] = (1, 2, 4)
    compile_mode: str = "default"
    engine_cache_dir: Path = DEFAULT_ENGINE_CACHE_DIR
    weights_id: str = "unknown"
    importer: Importer = importlib.import_module

    def __post_init__(self) -> None:
        sizes = self.batch_sizes
        if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
            raise ValueError(f"batch_sizes must be distinct positive integers in ascending order; got {sizes}")


@runtime_checkable
class InferenceBackend(Protocol):
    """Runs BiRefNet: ``[B, 3, H, W]`` normalised input of :attr:`dtype` → ``[B, 1, H, W]`` logits.

    ``B`` must be one of :attr:`batch_sizes` when that is not empty (compiled backends are
    specialised per batch size); an empty tuple accepts any batch size.
    """

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def batch_sizes(self) -> tuple[int, ...]: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def estimate_memory_mb(self, input_size: tuple[int, int], batch: int) -> float:
        """Activation memory of one forward pass of ``batch`` images, in MB."""
        ...

    def describe(self) -> str:
        """One line for logs and ``/health`` (mode, engine file, …)."""
        ...
