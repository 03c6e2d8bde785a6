"""The inference stage: BiRefNet on batches of uint8 images, GPU when present, CPU otherwise.

The preprocess stage hands over ``[h, w, 3]`` uint8 images already resized to the variant's input
size; normalisation (ImageNet mean/std) happens here on the device, so that only uint8 crosses
process boundaries. The output per image is a :class:`~pipelines.datatypes.Matte`: the sigmoid of
the logits as uint8 at model resolution, never min-max stretched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.datatypes import Matte
from pipelines.errors import GpuMemoryExhaustedError, InferenceError
from pipelines.model.birefnet import BiRefNet, PatchOrder, create_model, with_patch_order
from pipelines.model.checkpoint import LoadReport, load_checkpoint, load_state_dict_into
from pipelines.model.deterministic import deterministic_state_dict
from pipelines.model.variants import Variant, get_variant
from pipelines.weights import resolve_weights

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Activation memory of one forward pass per megapixel of model input, fp32 (measured peak minus
# weights: general 1024² ≈ 4.8 GB − 0.9 GB, README figures); half precision needs about half.
_ACTIVATION_MB_PER_MEGAPIXEL_FP32 = 3700.0


@dataclass(frozen=True)
class SegmenterSettings:
    """How to build a :class:`Segmenter`.

    Attributes:
        variant: registry name (``general``, ``lite``, ``demo``, …).
        weights: path to a checkpoint; None → ``BIREFNET_WEIGHTS``, the HF cache, or a download
            (the demo variant uses its bundled file, or deterministic weights if none is bundled).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (half precision only on CUDA).
        allow_download: fetch missing weights from Hugging Face.
        num_threads: torch intra-op threads on CPU (None leaves torch's default).
        patch_order: decoder patch-channel order (``current`` or ``legacy``).
        memory_check: refuse a batch when free GPU memory is below the estimate.
    """

    variant: str = "general"
    weights: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    allow_download: bool = True
    num_threads: int | None = None
    patch_order: str = PatchOrder.CURRENT.value
    memory_check: bool = True


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
    gpu_memory_free_mb: float | None
    checkpoint_path: str
    checkpoint_present: bool
    input_size: tuple[int, int]


def input_size_for(variant: str) -> tuple[int, int]:
    """Model input size ``(height, width)`` of a variant, without loading anything."""
    return get_variant(variant).input_size


def resolve_device(requested: str) -> torch.device:
    """``auto`` → the first CUDA device when one is usable, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError("device 'cuda' was requested but no CUDA GPU is available")
    return device


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


def estimate_batch_memory_mb(input_size: tuple[int, int], batch: int, dtype: torch.dtype) -> float:
    """Rough activation memory of one forward pass (an over-estimate, for the pre-check)."""
    megapixels = input_size[0] * input_size[1] / 1e6
    scale = 0.5 if dtype in (torch.float16, torch.bfloat16) else 1.0
    return _ACTIVATION_MB_PER_MEGAPIXEL_FP32 * megapixels * batch * scale


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
    """

    def __init__(
        self,
        model: BiRefNet,
        variant: Variant,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        checkpoint: str = "",
        memory_check: bool = True,
    ) -> None:
        self.model = model
        self.variant = variant
        self.device = device
        self.dtype = dtype
        self.checkpoint = checkpoint
        self.memory_check = memory_check and device.type == "cuda"
        self.backend = "eager"
        self.tensorrt_reason = "TensorRT backend not selected"
        mean = torch.tensor(variant.mean, device=device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(variant.std, device=device).view(1, 3, 1, 1) * 255.0
        self._mean, self._std = mean, std
        self.warmed_up = False

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: SegmenterSettings) -> Segmenter:
        """Build the model for ``settings.variant`` and load its weights (may download)."""
        variant = get_variant(settings.variant)
        device = resolve_device(settings.device)
        dtype = _DTYPES.get(settings.dtype)
        if dtype is None:
            raise ValueError(f"unknown dtype {settings.dtype!r}; use one of {', '.join(_DTYPES)}")
        if device.type == "cpu" and dtype is not torch.float32:
            logger.warning("%s is slow or unsupported on CPU (deform_conv2d); using float32", settings.dtype)
            dtype = torch.float32
        if device.type == "cpu" and settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        config = with_patch_order(variant.config, settings.patch_order)
        model = create_model(config)
        checkpoint, report = _load_weights(model, variant, settings)
        logger.info("BiRefNet %s weights: %s", variant.name, report.summary() if report else "generated")
        model = model.to(device=device, dtype=dtype).eval()
        return cls(model, variant, device, dtype, checkpoint, settings.memory_check)

    # -- properties ---------------------------------------------------------------------------

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
            gpu_memory_free_mb=self.gpu_memory_free_mb(),
            checkpoint_path=self.checkpoint,
            checkpoint_present=not self.checkpoint or Path(self.checkpoint).is_file(),
            input_size=self.input_size,
        )

    # -- inference ----------------------------------------------------------------------------

    def check_memory(self, batch: int) -> None:
        """Raise :class:`GpuMemoryExhaustedError` when the GPU cannot hold a batch of this size."""
        free = self.gpu_memory_free_mb()
        if not self.memory_check or free is None:
            return
        # Memory already cached by torch is reusable: count it as free.
        reusable = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        available = free + reusable / 2**20
        required = estimate_batch_memory_mb(self.input_size, batch, self.dtype)
        if available < required:
            raise GpuMemoryExhaustedError(
                gpu_memory_required_mb=round(required),
                gpu_memory_available_mb=round(available),
                suggested_action="Retry in 30 seconds",
                retry_after_seconds=30,
            )

    def _normalise(self, batch: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(batch)
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        x = pixels.permute(0, 3, 1, 2).float()
        return ((x - self._mean) / self._std).to(self.dtype)

    def forward_alpha(self, batch: np.ndarray) -> np.ndarray:
        """``[B, h, w, 3]`` uint8 → ``[B, h, w]`` uint8 alpha. Splits the batch on GPU out-of-memory."""
        try:
            with torch.inference_mode():
                alpha = logits_to_alpha(self.model(self._normalise(batch)))
            return alpha.cpu().numpy()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                free = self.gpu_memory_free_mb() or 0.0
                raise GpuMemoryExhaustedError(
                    gpu_memory_required_mb=round(estimate_batch_memory_mb(self.input_size, 1, self.dtype)),
                    gpu_memory_available_mb=round(free),
                    suggested_action="Retry in 30 seconds",
                    retry_after_seconds=30,
                ) from exc
            half = len(batch) // 2
            logger.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch), half,
                           len(batch) - half)
            return np.concatenate([self.forward_alpha(batch[:half]), self.forward_alpha(batch[half:])])

    def segment(self, images: Sequence[np.ndarray]) -> list[Matte]:
        """Segment a batch: ``[h, w, 3]`` uint8 images at :attr:`input_size` → one Matte each."""
        expected = (*self.input_size, 3)
        for image in images:
            if image.shape != expected:
                raise InferenceError(f"model input must be {expected}, got {image.shape}")
        self.check_memory(len(images))
        start = time.perf_counter()
        alphas = self.forward_alpha(stack_images(images))
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        return [Matte(alpha=a, model_name=self.model_name, inference_ms=elapsed_ms) for a in alphas]

    def warm_up(self, batch_size: int = 1) -> None:
        """Run one forward pass so that kernels, allocators and caches are ready."""
        h, w = self.input_size
        self.forward_alpha(np.zeros((batch_size, h, w, 3), dtype=np.uint8))
        self.warmed_up = True


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
