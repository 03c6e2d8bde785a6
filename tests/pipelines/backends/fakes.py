"""Injected stand-ins for backends and models (no GPU, no compiler, no TensorRT)."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch


class MeanModel(torch.nn.Module):
    """Logit = mean brightness of each image; records the batch sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:]).clone()


class FixedSizeBackend:
    """A compiled-backend stand-in: only ``batch_sizes`` run; above ``max_batch`` it fails like OOM."""

    def __init__(self, batch_sizes: tuple[int, ...] = (1, 2, 4), max_batch: int = 64) -> None:
        self.model = MeanModel()
        self._batch_sizes = batch_sizes
        self.max_batch = max_batch

    @property
    def name(self) -> str:
        return "compile"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return self._batch_sizes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] not in self._batch_sizes:
            raise ValueError(f"batch {x.shape[0]} not compiled")
        if x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return self.model(x)

    def estimate_memory_mb(self, input_size: tuple[int, int], batch: int) -> float:
        return float(batch)

    def describe(self) -> str:
        return "fixed-size fake"


class ActivationWatchBackend(FixedSizeBackend):
    """Fails like OOM above ``max_batch`` after allocating "activations"; records, at each call,
    how many activations of earlier failed calls are still alive (held by a traceback)."""

    def __init__(self, batch_sizes: tuple[int, ...] = (1, 2, 4), max_batch: int = 1) -> None:
        super().__init__(batch_sizes, max_batch)
        self._failed: list[weakref.ref[torch.Tensor]] = []
        self.alive_at_call: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.alive_at_call.append(sum(ref() is not None for ref in self._failed))
        if x.shape[0] > self.max_batch:
            activations = torch.empty(x.shape[0], 1024)
            self._failed.append(weakref.ref(activations))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return super().__call__(x)


@contextlib.contextmanager
def cuda_math_restored() -> Iterator[None]:
    """Put the process-wide TF32 and cuDNN benchmark flags back as they were after the block."""
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
