"""A scripted segmenter for the Serve tests, injected through ``model.segmenter_factory``.

It answers by the colour of the image, so a test picks the failure it wants over real HTTP:
red sleeps past the deadline, blue fails the GPU memory pre-check, green raises an unexpected
error, anything else gets a matte of its bright pixels. Like a segmenter with CUDA graphs, it
refuses calls from any thread but the one that built it. Its weights "exist" once the file named in
``settings.weights`` does, which lets a test watch the missing-weights → ready transition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.datatypes import Matte
from pipelines.errors import GpuMemoryExhaustedError
from pipelines.segmenter import input_size_for
from pipelines.weights import WeightsNotFoundError

SLOW_S = 4.0
SECRET = "CUDA error: out of memory (error code 2) at /opt/secret/kernel.cu:347"


@dataclass(frozen=True)
class FakeInfo:
    model_name: str = "BiRefNet-fake"
    device: str = "cpu"
    dtype: str = "float32"
    backend: str = "scripted"
    tensorrt_enabled: bool = False
    tensorrt_reason: str = "TensorRT backend not selected (backend: scripted)"
    backend_fallbacks: tuple[tuple[str, str], ...] = ()
    gpu_memory_free_mb: float | None = None
    checkpoint_path: str = ""
    checkpoint_present: bool = True


def colour_of(image: np.ndarray) -> str:
    red, green, blue = image.reshape(-1, 3).mean(axis=0)
    if red > 200 and green < 60 and blue < 60:
        return "red"
    if blue > 200 and red < 60 and green < 60:
        return "blue"
    if green > 200 and red < 60 and blue < 60:
        return "green"
    return "other"


class ScriptedSegmenter:
    def __init__(self, input_size: tuple[int, int], checkpoint: str):
        self.input_size = input_size
        self.model_name = "BiRefNet-fake"
        self._checkpoint = checkpoint
        self._thread = threading.current_thread()

    def segment(self, images: Sequence[np.ndarray]) -> list[Matte]:
        if threading.current_thread() is not self._thread:
            raise RuntimeError(f"called from thread {threading.current_thread().name}, built on {self._thread.name}")
        mattes = []
        for image in images:
            colour = colour_of(image)
            if colour == "red":
                time.sleep(SLOW_S)
            elif colour == "blue":
                raise GpuMemoryExhaustedError(gpu_memory_required_mb=1200, gpu_memory_available_mb=847)
            elif colour == "green":
                raise RuntimeError(SECRET)
            alpha = np.where(image.mean(axis=-1) > 128, 255, 0).astype(np.uint8)
            mattes.append(Matte(alpha=alpha, model_name=self.model_name, inference_ms=1.0))
        return mattes

    def warm_up(self) -> None:
        pass

    def info(self) -> FakeInfo:
        return FakeInfo(checkpoint_path=self._checkpoint)


def build_fake_segmenter(settings: Any) -> ScriptedSegmenter:
    """The ``segmenter_factory`` of the test app: fails like the real one while weights are missing."""
    if settings.weights is not None and not Path(settings.weights).exists():
        raise WeightsNotFoundError(f"Model checkpoint {settings.weights} missing")
    return ScriptedSegmenter(input_size_for(settings.variant), settings.weights or "")


WARM_UP_FAULTS_ENV = "BIREFNET_WARM_UP_FAULTS"


class WarmUpFaultSegmenter:
    """The real segmenter, except that ``warm_up`` raises while a fault budget remains.

    The budget is an integer in the file named by ``BIREFNET_WARM_UP_FAULTS`` (set through the
    app's ``runtime_env`` by ``scripts/chaos_test.py``); each failed warm-up spends one.
    """

    def __init__(self, inner: Any, budget_file: Path):
        self._inner = inner
        self._budget_file = budget_file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def warm_up(self) -> None:
        budget = int(self._budget_file.read_text() or 0) if self._budget_file.exists() else 0
        if budget > 0:
            self._budget_file.write_text(str(budget - 1))
            raise RuntimeError("scripted warm-up failure")
        self._inner.warm_up()


def build_segmenter_with_warm_up_faults(settings: Any) -> Any:
    """``segmenter_factory`` for chaos runs: the real segmenter with scripted warm-up failures."""
    import os

    from pipelines.segmenter import Segmenter

    return WarmUpFaultSegmenter(Segmenter.from_settings(settings), Path(os.environ[WARM_UP_FAULTS_ENV]))
