"""TensorRT backend through torch-tensorrt (optional extra ``pip install .[tensorrt]``).

One static-shape engine per compiled batch size, built once and cached on disk. The cache key
holds everything an engine depends on: variant, weights, input size, batch size, precision, GPU
name and the TensorRT / torch-tensorrt versions (:func:`engine_cache_key`), so a new GPU type or a
library upgrade builds a fresh engine instead of loading an incompatible one. Operators TensorRT
cannot convert (torchvision's ``deform_conv2d``) stay in PyTorch inside the compiled graph.

``torch_tensorrt`` is imported here only, inside :meth:`TensorRTBackend.build`, through the spec's
importer, so the package's absence is a fallback, never an import error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from pipelines.backends.base import BackendSpec, BackendUnavailableError, estimate_activation_mb
from pipelines.backends.eager import prepare_model

logger = logging.getLogger(__name__)

ENGINE_SUFFIX = ".ep"
# Smallest TensorRT subgraph worth a separate engine; smaller islands between deform convs stay in PyTorch.
MIN_BLOCK_SIZE = 5


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "unknown"


def engine_cache_key(
    variant: str,
    weights_id: str,
    input_size: tuple[int, int],
    batch_size: int,
    dtype: torch.dtype,
    gpu_name: str,
    tensorrt_version: str,
) -> str:
    """File stem of a cached engine: ``general-w<id>-1024x1024-b4-float16-NVIDIA_H100-trt10.3.0``."""
    height, width = input_size
    parts = [
        _slug(variant),
        f"w{_slug(weights_id)}",
        f"{height}x{width}",
        f"b{batch_size}",
        str(dtype).replace("torch.", ""),
        _slug(gpu_name),
        f"trt{_slug(tensorrt_version)}",
    ]
    return "-".join(parts)


def tensorrt_versions(torch_tensorrt: ModuleType, importer: Callable[[str], ModuleType]) -> str:
    """``torch-tensorrt`` version plus the TensorRT runtime's, e.g. ``2.9.0_10.13.3``."""
    versions = [str(getattr(torch_tensorrt, "__version__", "unknown"))]
    with contextlib.suppress(ImportError, AttributeError):
        versions.append(str(importer("tensorrt").__version__))
    return "_".join(versions)


class TensorRTBackend:
    """Runs one TensorRT-compiled module per batch size."""

    def __init__(self, engines: dict[int, Callable[[torch.Tensor], Any]], dtype: torch.dtype,
                 engine_paths: dict[int, Path]) -> None:
        self._engines = engines
        self._dtype = dtype
        self.engine_paths = engine_paths

    @classmethod
    def build(cls, model: nn.Module, spec: BackendSpec) -> TensorRTBackend:
        """Load each engine from the cache or build and save it.

        Raises:
            BackendUnavailableError: no CUDA device, torch-tensorrt missing, or a build failed.
        """
        try:
            torch_tensorrt = spec.importer("torch_tensorrt")
        except ImportError as exc:
            raise BackendUnavailableError(f"torch_tensorrt is not installed ({exc}); pip install .[tensorrt]") from exc
        if spec.device.type != "cuda":
            raise BackendUnavailableError("TensorRT needs a CUDA device")
        model = prepare_model(model, spec.dtype)
        version = tensorrt_versions(torch_tensorrt, spec.importer)
        gpu_name = torch.cuda.get_device_name(spec.device)
        engines: dict[int, Callable[[torch.Tensor], Any]] = {}
        paths: dict[int, Path] = {}
        for size in spec.batch_sizes:
            key = engine_cache_key(spec.variant, spec.weights_id, spec.input_size, size, spec.dtype, gpu_name, version)
            path = Path(spec.engine_cache_dir) / f"{key}{ENGINE_SUFFIX}"
            try:
                engines[size] = _load_or_build(torch_tensorrt, model, spec, size, path)
            except BackendUnavailableError:
                raise
            except Exception as exc:  # a converter or builder error means "use the next backend"
                raise BackendUnavailableError(
                    f"TensorRT engine build failed for batch {size}: {type(exc).__name__}: {exc}"
                ) from exc
            paths[size] = path
        return cls(engines, spec.dtype, paths)

    @property
    def name(self) -> str:
        return "tensorrt"

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self._engines))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        engine = self._engines.get(x.shape[0])
        if engine is None:
            raise ValueError(f"no engine for batch {x.shape[0]}; pad to one of {self.batch_sizes}")
        with torch.inference_mode():
            out = engine(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    def estimate_memory_mb(self, input_size: tuple[int, int], batch: int) -> float:
        # TensorRT reuses activation memory across layers, so the eager figure is an upper bound;
        # bench_gpu.py reports the measured peak per backend to tighten it (docs/performance.md).
        return estimate_activation_mb(input_size, batch, self._dtype)

    def describe(self) -> str:
        files = ", ".join(p.name for p in self.engine_paths.values())
        return f"TensorRT {str(self._dtype).replace('torch.', '')} engines: {files}"


def _load_or_build(torch_tensorrt: ModuleType, model: nn.Module, spec: BackendSpec, size: int,
                   path: Path) -> Callable[[torch.Tensor], Any]:
    example = torch.zeros((size, 3, *spec.input_size), device=spec.device, dtype=spec.dtype)
    if path.is_file():
        try:
            loaded = torch_tensorrt.load(str(path)).module()
            logger.info("TensorRT engine loaded from %s", path)
            return loaded
        except Exception as exc:  # a corrupt or stale file is rebuilt
            logger.warning("could not load TensorRT engine %s (%s: %s); rebuilding", path, type(exc).__name__, exc)
    start = time.perf_counter()
    compiled = torch_tensorrt.compile(
        model,
        ir="dynamo",
        inputs=[example],
        enabled_precisions={spec.dtype},
        min_block_size=MIN_BLOCK_SIZE,
    )
    logger.info("TensorRT engine for batch %d built in %.0f s", size, time.perf_counter() - start)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch_tensorrt.save(compiled, str(partial), inputs=[example])
        os.replace(partial, path)  # atomic: replicas starting together never read a half-written file
    except Exception as exc:  # an unwritable cache costs a rebuild next start, not this start
        logger.warning("could not cache TensorRT engine at %s (%s: %s)", path, type(exc).__name__, exc)
    return compiled
