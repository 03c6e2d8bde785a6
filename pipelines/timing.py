"""Wall-clock timing of model work for the benchmark scripts, with CUDA's queue drained around it."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``run`` takes; on CUDA the device is synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
