"""``torch.compile`` backend: one static-shape graph per compiled batch size.

``dynamic=False`` specialises the graph on each batch size (BiRefNet's window partitioning and
resizes compile to much better kernels with static shapes); batches are padded up to the nearest
compiled size, so at most ``len(batch_sizes)`` graphs exist. ``mode="reduce-overhead"`` adds CUDA
graphs (one per size; outputs live in graph-owned memory, so they are cloned before returning),
``"max-autotune-no-cudagraphs"`` autotunes kernels without them. All sizes are compiled when the
backend is built, so a compile failure surfaces there and the selection falls back to eager.

Compiling is slow (minutes for BiRefNet-general), and inductor's on-disk cache makes a repeat
compile of the same graph take seconds. Its default home is ``/tmp``, which a container restart or
a new node loses, so the backend keeps it beside the TensorRT engines, in
``<engine_cache_dir>/inductor``: a replica that restarts, or any replica on a volume shared with
``scripts/build_engine.py --backend compile``, skips the compile. ``TORCHINDUCTOR_CACHE_DIR``, when
set, wins.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.backends.base import BackendSpec, BackendUnavailableError, estimate_activation_mb
from pipelines.backends.eager import prepare_model

logger = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

Compiler = Callable[..., Callable[[torch.Tensor], torch.Tensor]]


INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def _torch_default_cache_dir() -> str | None:
    """Inductor's own default (``/tmp/torchinductor_<user>``), or None if this torch hides it."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:
        return None
    return os.path.abspath(default_cache_dir())


def use_compile_cache(engine_cache_dir: Path, environ: MutableMapping[str, str] = os.environ) -> Path:
    """Point inductor's on-disk cache at ``engine_cache_dir/inductor`` unless the user chose one.

    Inductor reads ``TORCHINDUCTOR_CACHE_DIR`` each time it looks for a cached graph or kernel, so
    this takes effect for every compile after it. Importing torchvision already sets the variable
    to inductor's default, so that value counts as "not chosen". Returns the directory in use.
    """
    current = environ.get(INDUCTOR_CACHE_ENV)
    if not current or os.path.abspath(current) == _torch_default_cache_dir():
        environ[INDUCTOR_CACHE_ENV] = str(Path(engine_cache_dir).expanduser().resolve() / "inductor")
    return Path(environ[INDUCTOR_CACHE_ENV])


def uses_cuda_graphs(mode: str) -> bool:
    """Whether ``torch.compile`` records CUDA graphs in this mode."""
    return mode in ("reduce-overhead", "max-autotune")


class CompiledBackend:
    """``torch.compile(model, mode=…, dynamic=False)``, warmed up for every compiled batch size."""

    def __init__(
        self,
        model: nn.Module,
        dtype: torch.dtype,
        batch_sizes: tuple[int, ...],
        mode: str = "default",
        compiler: Compiler | None = None,
    ) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {mode!r}; use one of {', '.join(COMPILE_MODES)}")
        self.model = prepare_model(model, dtype)
        self._dtype = dtype
        self._batch_sizes = batch_sizes
        self.mode = mode
        compile_fn: Compiler = compiler if compiler is not None else torch.compile
        self._compiled = compile_fn(self.model, mode=mode, dynamic=False, fullgraph=False)
        self.compile_seconds: dict[int, float] = {}
        self.cache_dir: Path | None = None

    @classmethod
    def build(cls, model: nn.Module, spec: BackendSpec, compiler: Compiler | None = None) -> CompiledBackend:
        """Compile and run every batch size of ``spec`` once; any failure → BackendUnavailableError."""
        try:
            backend = cls(model, spec.dtype, spec.batch_sizes, spec.compile_mode, compiler)
            backend.cache_dir = use_compile_cache(spec.engine_cache_dir)
            backend.warm_up(spec.input_size, spec.device)
        except Exception as exc:  # any compiler error means "use the next backend"
            raise BackendUnavailableError(f"torch.compile failed: {type(exc).__name__}: {exc}") from exc
        return backend

    @property
    def name(self) -> str:
        return "compile"

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return self._batch_sizes

    def warm_up(self, input_size: tuple[int, int], device: torch.device) -> None:
        """Compile (first call) each batch size on a zero input, recording how long it took."""
        for size in self._batch_sizes:
            x = torch.zeros((size, 3, *input_size), device=device, dtype=self._dtype)
            start = time.perf_counter()
            self(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.compile_seconds[size] = time.perf_counter() - start
            logger.info("torch.compile (%s) batch %d ready in %.1f s", self.mode, size, self.compile_seconds[size])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._batch_sizes and x.shape[0] not in self._batch_sizes:
            raise ValueError(f"batch {x.shape[0]} was not compiled; pad to one of {self._batch_sizes}")
        cuda_graphs = uses_cuda_graphs(self.mode) and x.device.type == "cuda"
        with torch.inference_mode():
            if not x.is_inference() or not x.is_contiguous():
                # Dynamo guards on both: a normal or channels-last tensor after warm-up would
                # compile every batch size again, and past its recompile limit run it uncompiled.
                x = x.clone(memory_format=torch.contiguous_format)
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            out: Any = self._compiled(x)
            return out.clone() if cuda_graphs else out

    def estimate_memory_mb(self, input_size: tuple[int, int], batch: int) -> float:
        # CUDA graphs keep a private pool per size, which the pre-check sees as reserved-but-unused
        # memory. Measured on an H100 (general, float16, batch 1): 2224 MB peak under
        # reduce-overhead against eager's 1831 MB, still within the shared estimate's margin.
        return estimate_activation_mb(input_size, batch, self._dtype)

    def describe(self) -> str:
        dtype = str(self._dtype).replace("torch.", "")
        described = f"torch.compile mode={self.mode} {dtype} batches={self._batch_sizes}"
        return described if self.cache_dir is None else f"{described} cache={self.cache_dir}"
