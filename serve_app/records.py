"""Frozen records the deployments exchange on top of ``pipelines.datatypes``.

None of them import torch, so the Ingress and Telemetry replicas can unpickle them without loading
the model stack.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.datatypes import EncodedImage, Matte


@dataclass(frozen=True)
class Segmentation:
    """What Inference hands to Postprocess for one image.

    Attributes:
        matte: ``[h, w]`` uint8 alpha at model resolution.
        tensorrt_enabled: whether the replica ran a TensorRT engine.
        batch_size: how many images shared the forward pass.
    """

    matte: Matte
    tensorrt_enabled: bool
    batch_size: int


@dataclass(frozen=True)
class Cutout:
    """What Postprocess hands back to the ingress: the encoded result and what the headers need.

    Attributes:
        image: the RGBA PNG at the original size.
        first_frame_only: the upload was animated and only its first frame was used.
        model_name: e.g. ``BiRefNet-general``.
        tensorrt_enabled: whether inference ran a TensorRT engine.
        inference_ms: model time of the batch the image was part of.
    """

    image: EncodedImage
    first_frame_only: bool
    model_name: str
    tensorrt_enabled: bool
    inference_ms: float


@dataclass(frozen=True)
class ProcessingInfo:
    """``processing_info`` of the base64 response (spec §4.2), plus ``subject_found`` and
    ``foreground_refined``."""

    original_size: str
    output_size: str
    background_removed: bool
    edge_smoothing_applied: bool
    processing_time_ms: float
    model_version: str
    tensorrt_enabled: bool
    subject_found: bool
    foreground_refined: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RemovalResult:
    """Result of ``Ingress.remove_background`` for Python callers holding a DeploymentHandle.

    Attributes:
        png: RGBA PNG bytes at the original size (alpha 0 = background).
        filename: the download name the HTTP API would suggest, ``<stem>_nobg_<UTC time>.png``.
        processing_info: the same metadata as the HTTP base64 response.
        first_frame_only: the upload was animated and only its first frame was used.
    """

    png: bytes
    filename: str
    processing_info: ProcessingInfo
    first_frame_only: bool


class ModelState(str, enum.Enum):
    """Life cycle of one Inference replica."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelReport:
    """One Inference replica's state, pushed to Telemetry every ``report_interval_s``.

    Attributes:
        replica: the Serve replica id.
        state: loading, ready (weights loaded and warmed up) or failed (weights missing, or loading
            raised).
        reported_at: wall-clock seconds (``time.time()``) of the report.
        model_name, device, dtype, backend, tensorrt_enabled, tensorrt_reason, backend_fallbacks,
        gpu_memory_free_mb, checkpoint_path, checkpoint_present: from ``SegmenterInfo`` once
        loaded; best-effort before.
        error: ``(title, detail)`` of a failed load, shown by ``/health``.
    """

    replica: str
    state: ModelState
    reported_at: float
    model_name: str
    device: str
    dtype: str = "float32"
    backend: str = "eager"
    tensorrt_enabled: bool = False
    tensorrt_reason: str = ""
    backend_fallbacks: tuple[tuple[str, str], ...] = ()
    gpu_memory_free_mb: float | None = None
    checkpoint_path: str = ""
    checkpoint_present: bool = False
    error: tuple[str, str] | None = None


@dataclass(frozen=True)
class RequestSample:
    """One answered ``/remove`` call, for ``performance_metrics``.

    Attributes:
        finished_at: wall-clock seconds when the response was ready.
        latency_ms: server-side time from the request's arrival to its response.
        succeeded: False for error responses (they count as requests, not as latencies).
    """

    finished_at: float
    latency_ms: float
    succeeded: bool
