"""The inference stage: BiRefNet on batches of uint8 images, GPU when present, CPU otherwise.

The preprocess stage hands over ``[h, w, 3]`` uint8 images already resized to the variant's input
size; they are staged in a reused pinned host buffer, uploaded as uint8 and normalised (ImageNet
mean/std) on the device, so that only uint8 crosses process boundaries and the PCIe bus. The model
runs through an inference backend (eager, ``torch.compile`` or TensorRT, chosen by
:func:`pipelines.backends.build_backend` with fallback); compiled backends get batches padded to
their compiled sizes. The output per image is a :class:`~pipelines.datatypes.Matte`: the sigmoid
of the logits as uint8 at model resolution, never min-max stretched.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipelines.backends import (
    BACKEND_NAMES,
    BackendSpec,
    InferenceBackend,
    PinnedStaging,
    build_backend,
    plan_chunks,
)
from pipelines.backends.base import DEFAULT_ENGINE_CACHE_DIR
from pipelines.backends.compiled import uses_cuda_graphs
from pipelines.backends.eager import EagerBackend
from pipelines.datatypes import Matte
from pipelines.errors import GpuMemoryExhaustedError, InferenceError
from pipelines.model.birefnet import BiRefNet, DeformSampling, PatchOrder, create_model, with_patch_order
from pipelines.model.checkpoint import LoadReport, load_checkpoint, load_state_dict_into
from pipelines.model.deterministic import deterministic_state_dict
from pipelines.model.variants import Variant, at_input_size, get_variant
from pipelines.weights import resolve_weights

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class SegmenterSettings:
    """How to build a :class:`Segmenter`.

    Attributes:
        variant: registry name (``general``, ``lite``, ``demo``, …).
        input_size: ``(height, width)`` to serve at instead of the variant's own, multiples of 32
            (see :func:`pipelines.model.variants.at_input_size`); None keeps the variant's.
        weights: path to a checkpoint; None → ``BIREFNET_WEIGHTS``, the HF cache, or a download
            (the demo variant uses its bundled file, or deterministic weights if none is bundled).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        dtype: ``float32``, ``float16`` or ``bfloat16``. On the CPU, ``bfloat16`` runs where the CPU
            has it in hardware (AVX512-BF16 or AMX: general at 1024² 1.7× faster with 30 % less
            peak memory, lite 1.4×) and ``float16`` never (see :func:`dtype_on_device`): float32
            instead.
        allow_download: fetch missing weights from Hugging Face.
        num_threads: torch intra-op threads on CPU (None leaves torch's default).
        patch_order: decoder patch-channel order (``current`` or ``legacy``).
        deform_sampling: deformable-conv implementation: ``torchvision``, ``grid_sample`` (same
            output; 1.3–1.6× faster forwards on CPU for ~20 % more peak memory) or ``auto``
            (see :func:`resolve_deform_sampling`: torchvision only on CUDA without TensorRT or
            CUDA graphs).
        memory_check: compare each batch's estimate with free GPU memory: run what does not fit
            in smaller chunks, and refuse (503) only when a single image does not fit.
        backend: ``eager``, ``compile`` or ``tensorrt``; an unavailable one falls back along
            ``tensorrt → compile → eager`` (reported in :class:`SegmenterInfo`).
        compile_mode: ``torch.compile`` mode: ``default``, ``reduce-overhead`` (CUDA graphs),
            ``max-autotune`` or ``max-autotune-no-cudagraphs``.
        engine_cache_dir: TensorRT engine cache (None → ``~/.cache/birefnet-serve/engines``).
        batch_sizes: batch sizes compiled backends are built for, ascending; batches are padded
            to the nearest one and split above the largest. Keep the largest ≥ the deployment's
            ``max_batch_size``. Eager ignores them.
        tf32: on CUDA, let float32 matmuls and convolutions use TF32 tensor cores, as the
            official inference code does (``set_float32_matmul_precision('high')``); False keeps
            full float32. Half-precision dtypes are unaffected.
        cudnn_benchmark: on CUDA, let cuDNN time its convolution algorithms for each input shape
            once and keep the fastest. None (default): on for the compiled backends, whose few
            fixed shapes the warm-up times; off for eager, where every new batch size would pay a
            timing pass (and its workspace trials) on a live request.
    """

    variant: str = "general"
    input_size: tuple[int, int] | None = None
    weights: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    allow_download: bool = True
    num_threads: int | None = None
    patch_order: str = PatchOrder.CURRENT.value
    deform_sampling: str = "auto"
    memory_check: bool = True
    backend: str = "eager"
    compile_mode: str = "default"
    engine_cache_dir: str | None = None
    batch_sizes: tuple[int, ...] = (1, 2, 4)
    tf32: bool = True
    cudnn_benchmark: bool | None = None


@dataclass(frozen=True)
class SegmenterInfo:
    """What ``/health`` reports about the inference stage."""

    model_name: str
    variant: str
    device: str
    dtype: str
    backend: str
    tensorrt_enabled: bool
    tensorrt_reason: str
    backend_fallbacks: tuple[tuple[str, str], ...]
    gpu_memory_free_mb: float | None
    checkpoint_path: str
    checkpoint_present: bool
    input_size: tuple[int, int]


# Backends built for a few fixed batch sizes (a TensorRT build falls back to compile, same mode).
FIXED_SHAPE_BACKENDS = ("compile", "tensorrt")


def input_size_for(variant: str, override: tuple[int, int] | None = None) -> tuple[int, int]:
    """Model input size ``(height, width)`` of a variant, or ``override``, without loading anything."""
    return at_input_size(get_variant(variant), override).input_size


def resolve_deform_sampling(
    requested: str, device: torch.device, backend: str = "eager", compile_mode: str = "default"
) -> DeformSampling:
    """The deformable-conv implementation for ``requested`` on ``device`` with ``backend``.

    ``auto`` is torchvision's kernel only on CUDA with eager or CUDA-graph-free compile, and the
    pure-ATen grid_sample version (same output) elsewhere: faster on the CPU; convertible by
    TensorRT, which would otherwise split its engine at every deformable conv; and safe under
    CUDA graphs. torchvision's deform_conv2d kernels launch on the legacy default stream
    (pytorch/vision#9513, fixed after 0.26), which graph capture and its side-stream warm-up do not
    order with, so under CUDA graphs grid_sample is used even when torchvision was asked for.
    A TensorRT build that falls back compiles with the same ``compile_mode``.
    """
    cuda = device.type == "cuda"
    cuda_graphs = cuda and backend in FIXED_SHAPE_BACKENDS and uses_cuda_graphs(compile_mode)
    if requested == "auto":
        on_torchvision = cuda and backend != "tensorrt" and not cuda_graphs
        return DeformSampling.TORCHVISION if on_torchvision else DeformSampling.GRID_SAMPLE
    try:
        sampling = DeformSampling(requested)
    except ValueError:
        names = ", ".join(["auto", *(m.value for m in DeformSampling)])
        raise ValueError(f"unknown deform_sampling {requested!r}; use one of {names}") from None
    if sampling is DeformSampling.TORCHVISION and cuda_graphs:
        logger.warning("deform_sampling torchvision is unsafe under CUDA graphs (its kernels ignore the "
                       "capture stream); using grid_sample")
        return DeformSampling.GRID_SAMPLE
    return sampling


def cuda_usable() -> bool:
    """A CUDA device is present and answers (a broken driver or a full GPU counts as unusable)."""
    if not torch.cuda.is_available():
        return False
    try:
        torch.cuda.mem_get_info(0)
    except RuntimeError as exc:
        logger.warning("CUDA is present but not usable (%s); running on the CPU", exc)
        return False
    return True


def resolve_device(requested: str) -> torch.device:
    """``auto`` → the first CUDA device when one is usable, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if cuda_usable() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError("device 'cuda' was requested but no CUDA GPU is available")
    return device


def cpu_has_native_bfloat16() -> bool:
    """The CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN's bfloat16 matmuls
    and convolutions beat float32; elsewhere they are emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence the getattr
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def dtype_on_device(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype a model asked for ``dtype`` runs in on ``device`` (half precision on the CPU:
    bfloat16 only where the CPU has it natively; float16 never, which runs many times slower)."""
    if device.type != "cpu" or dtype is torch.float32:
        return dtype
    if dtype is torch.bfloat16 and cpu_has_native_bfloat16():
        return dtype
    reason = "is many times slower than float32 on the CPU" if dtype is torch.float16 else (
        "has no hardware support on this CPU (AVX512-BF16 or AMX)")
    logger.warning("%s %s; using float32", str(dtype).replace("torch.", ""), reason)
    return torch.float32


def cudnn_benchmark_for(setting: bool | None, backend: str) -> bool:
    """The ``cudnn_benchmark`` setting resolved: None → on for fixed-shape (compiled) backends."""
    return setting if setting is not None else backend in FIXED_SHAPE_BACKENDS


def configure_cuda_math(tf32: bool, cudnn_benchmark: bool) -> None:
    """Set the process-wide CUDA math flags an Inference replica runs with (see SegmenterSettings)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack equally sized ``[h, w, 3]`` uint8 images into one ``[B, h, w, 3]`` array."""
    if not images:
        raise ValueError("cannot stack an empty batch")
    first = images[0].shape
    for image in images:
        if image.shape != first or image.dtype != np.uint8:
            raise ValueError(f"batch images must all be {first} uint8; got {image.shape} {image.dtype}")
    return np.stack(images)


def logits_to_alpha(logits: torch.Tensor) -> torch.Tensor:
    """``[B, 1, h, w]`` logits → ``[B, h, w]`` uint8 alpha = round(sigmoid · 255). No stretching."""
    return torch.sigmoid(logits.float()).mul_(255.0).round_().to(torch.uint8)[:, 0]


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Segmenter:
    """BiRefNet inference on one device.

    Args:
        model: a loaded BiRefNet in eval mode on ``device``.
        variant: the registry entry (input size, normalisation, display name).
        device, dtype: where and how it runs.
        checkpoint: where the weights came from (``""`` for generated weights).
        memory_check: pre-check free GPU memory per batch.
        backend: how the model runs; None → eager on ``model`` in ``dtype``.
        tensorrt_reason: why TensorRT is (not) in use, for ``/health``.
        backend_fallbacks: ``(backend, reason)`` of each backend that could not be built before
            ``backend`` was, for ``/health``.
    """

    def __init__(
        self,
        model: BiRefNet,
        variant: Variant,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        checkpoint: str = "",
        memory_check: bool = True,
        backend: InferenceBackend | None = None,
        tensorrt_reason: str = "TensorRT backend not selected (backend: eager)",
        backend_fallbacks: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.model = model
        self.variant = variant
        self.device = device
        self.dtype = dtype
        self.checkpoint = checkpoint
        self.memory_check = memory_check and device.type == "cuda"
        self.inference_backend: InferenceBackend = backend if backend is not None else EagerBackend(model, dtype)
        self.tensorrt_reason = tensorrt_reason
        self.backend_fallbacks = backend_fallbacks
        self._staging = PinnedStaging(pin=device.type == "cuda")
        # One batch on the device at a time: the pinned buffer and CUDA graphs are reused.
        self._lock = threading.RLock()
        mean = torch.tensor(variant.mean, device=device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(variant.std, device=device).view(1, 3, 1, 1) * 255.0
        self._mean, self._std = mean, std
        self.warmed_up = False

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: SegmenterSettings) -> Segmenter:
        """Build the model for ``settings.variant`` and load its weights (may download)."""
        variant = at_input_size(get_variant(settings.variant), settings.input_size)
        device = resolve_device(settings.device)
        dtype = DTYPES.get(settings.dtype)
        if dtype is None:
            raise ValueError(f"unknown dtype {settings.dtype!r}; use one of {', '.join(DTYPES)}")
        dtype = dtype_on_device(dtype, device)
        if device.type == "cuda":
            configure_cuda_math(settings.tf32, cudnn_benchmark_for(settings.cudnn_benchmark, settings.backend))
        if device.type == "cpu" and settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        sampling = resolve_deform_sampling(settings.deform_sampling, device, settings.backend, settings.compile_mode)
        config = replace(with_patch_order(variant.config, settings.patch_order), deform_sampling=sampling)
        model = create_model(config)
        checkpoint, report = _load_weights(model, variant, settings)
        logger.info("BiRefNet %s weights: %s", variant.name, report.summary() if report else "generated")
        model = model.to(device=device, dtype=dtype).eval()
        spec = BackendSpec(
            variant=variant.name,
            input_size=variant.input_size,
            device=device,
            dtype=dtype,
            batch_sizes=tuple(settings.batch_sizes),
            compile_mode=settings.compile_mode,
            engine_cache_dir=Path(settings.engine_cache_dir) if settings.engine_cache_dir else DEFAULT_ENGINE_CACHE_DIR,
            weights_id=weights_fingerprint(checkpoint),
        )
        if settings.backend not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {settings.backend!r}; use one of {', '.join(BACKEND_NAMES)}")
        choice = build_backend(model, settings.backend, spec)
        if device.type == "cuda" and choice.failures:
            torch.cuda.empty_cache()  # what a failed build left in the caching allocator
        return cls(model, variant, device, dtype, checkpoint, settings.memory_check,
                   backend=choice.backend, tensorrt_reason=choice.tensorrt_reason,
                   backend_fallbacks=choice.failures)

    # -- properties ---------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """Name of the backend in use: ``eager``, ``compile`` or ``tensorrt``."""
        return self.inference_backend.name

    @property
    def input_size(self) -> tuple[int, int]:
        return self.variant.input_size

    @property
    def model_name(self) -> str:
        return self.variant.display_name

    def gpu_memory_free_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        free, _total = torch.cuda.mem_get_info(self.device)
        return free / 2**20

    def info(self) -> SegmenterInfo:
        return SegmenterInfo(
            model_name=self.model_name,
            variant=self.variant.name,
            device=self.device.type,
            dtype=str(self.dtype).replace("torch.", ""),
            backend=self.backend,
            tensorrt_enabled=self.backend == "tensorrt",
            tensorrt_reason=self.tensorrt_reason,
            backend_fallbacks=self.backend_fallbacks,
            gpu_memory_free_mb=self.gpu_memory_free_mb(),
            checkpoint_path=self.checkpoint,
            checkpoint_present=not self.checkpoint or Path(self.checkpoint).is_file(),
            input_size=self.input_size,
        )

    # -- inference ----------------------------------------------------------------------------

    def available_memory_mb(self) -> float | None:
        """Free device memory plus what torch's allocator caches unused; None when unchecked (CPU)."""
        free = self.gpu_memory_free_mb() if self.memory_check else None
        if free is None:
            return None
        reusable = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return free + reusable / 2**20

    def fitting_batch(self, batch: int) -> int:
        """How many of ``batch`` images to run at once so that the memory estimate fits.

        The whole batch when it fits (or nothing is checked), else the largest smaller size that
        does (compiled sizes first), run one after another. Raises
        :class:`GpuMemoryExhaustedError` only when a single image does not fit.
        """
        available = self.available_memory_mb()
        if available is None:
            return batch
        sizes = sorted({batch, 1, *(b for b in self.inference_backend.batch_sizes if b < batch)}, reverse=True)
        for size in sizes:
            if self.required_memory_mb(size) <= available:
                if size < batch:
                    logger.warning("%.0f MB of GPU memory free: running a batch of %d as chunks of %d",
                                   available, batch, size)
                return size
        raise self._memory_exhausted(available)

    def _memory_exhausted(self, available_mb: float) -> GpuMemoryExhaustedError:
        return GpuMemoryExhaustedError(
            gpu_memory_required_mb=round(self.required_memory_mb(1)),
            gpu_memory_available_mb=round(available_mb),
            suggested_action="Retry in 30 seconds",
            retry_after_seconds=30,
        )

    def required_memory_mb(self, batch: int) -> float:
        """The backend's activation estimate for the largest padded chunk a batch runs as."""
        largest = max(padded for _images, padded in plan_chunks(batch, self.inference_backend.batch_sizes))
        return self.inference_backend.estimate_memory_mb(self.input_size, largest)

    def _normalise(self, batch: np.ndarray, padded: int | None = None) -> torch.Tensor:
        """``[n, h, w, 3]`` uint8 host → ``[padded, 3, h, w]`` normalised on the device (pad rows zero)."""
        pixels = self._staging.upload(batch, self.device, padded)
        # NCHW-contiguous in the same copy as the cast, as the compiled graphs were traced.
        x = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        return ((x - self._mean) / self._std).to(self.inference_backend.dtype)

    def _run_chunks(self, batch: np.ndarray) -> np.ndarray:
        alphas = []
        start = 0
        with torch.inference_mode():
            for count, padded in plan_chunks(len(batch), self.inference_backend.batch_sizes):
                logits = self.inference_backend(self._normalise(batch[start:start + count], padded))
                alphas.append(logits_to_alpha(logits[:count]).cpu().numpy())
                start += count
        return alphas[0] if len(alphas) == 1 else np.concatenate(alphas)

    def forward_alpha(self, batch: np.ndarray) -> np.ndarray:
        """``[B, h, w, 3]`` uint8 → ``[B, h, w]`` uint8 alpha. Splits the batch on GPU out-of-memory."""
        try:
            with self._lock:
                return self._run_chunks(batch)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
        # Retry outside the handler: the exception's traceback holds the failed pass's tensors
        # until the handler ends, and empty_cache() cannot return memory that is still referenced.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            raise self._memory_exhausted(self.gpu_memory_free_mb() or 0.0)
        half = len(batch) // 2
        logger.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half)
        return np.concatenate([self.forward_alpha(batch[:half]), self.forward_alpha(batch[half:])])

    def segment(self, images: Sequence[np.ndarray]) -> list[Matte]:
        """Segment a batch: ``[h, w, 3]`` uint8 images at :attr:`input_size` → one Matte each."""
        expected = (*self.input_size, 3)
        for image in images:
            if image.shape != expected:
                raise InferenceError(f"model input must be {expected}, got {image.shape}")
        step = self.fitting_batch(len(images))
        batch = stack_images(images)
        start = time.perf_counter()
        alphas = [alpha for i in range(0, len(batch), step) for alpha in self.forward_alpha(batch[i:i + step])]
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        return [Matte(alpha=a, model_name=self.model_name, inference_ms=elapsed_ms) for a in alphas]

    def warm_up(self, batch_size: int = 1) -> None:
        """Run forward passes so that kernels, allocators, caches and the pinned buffer are ready.

        Compiled backends run every compiled batch size (the largest first, so the pinned buffer
        is allocated once); eager runs one batch of ``batch_size``.
        """
        h, w = self.input_size
        sizes = sorted(self.inference_backend.batch_sizes, reverse=True) or [batch_size]
        for size in sizes:
            self.forward_alpha(np.zeros((size, h, w, 3), dtype=np.uint8))
        self.warmed_up = True


def weights_fingerprint(checkpoint: str) -> str:
    """Short id of a weights file (name, size, modification time) for engine cache keys."""
    if not checkpoint:
        return "deterministic"
    path = Path(checkpoint)
    try:
        stat = path.stat()
        text = f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}"
    except OSError:
        text = path.name
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _load_weights(model: BiRefNet, variant: Variant, settings: SegmenterSettings) -> tuple[str, LoadReport | None]:
    if not variant.hf_repo and not settings.weights:
        from pipelines.weights import bundled_weights

        bundled = bundled_weights(variant)
        if bundled is None:
            logger.warning("no bundled weights for '%s': using deterministic generated weights", variant.name)
            entries = [(k, tuple(t.shape)) for k, t in model.state_dict().items()]
            report = load_state_dict_into(model, deterministic_state_dict(entries), source="deterministic")
            return "", report
        return str(bundled), load_checkpoint(model, bundled)
    path = resolve_weights(variant, settings.weights, allow_download=settings.allow_download)
    return str(path), load_checkpoint(model, path)
