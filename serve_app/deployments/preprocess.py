"""Preprocess: decode, validate and resize an upload on CPU (``pipelines.preprocess``)."""

from __future__ import annotations

import time

from ray import serve

from pipelines.datatypes import PreparedImage
from pipelines.preprocess import Preprocessor
from pipelines.validate import UploadLimits
from serve_app.logs import configure_replica_logging
from serve_app.metrics import StageMetrics


@serve.deployment(max_ongoing_requests=8, ray_actor_options={"num_cpus": 0.5})
class Preprocess:
    """Args: input_size: ``(h, w)`` of the served model; limits: the upload limits."""

    def __init__(self, input_size: tuple[int, int], limits: UploadLimits):
        configure_replica_logging()
        self._preprocessor = Preprocessor(input_size=input_size, limits=limits)
        self._metrics = StageMetrics("preprocess")

    def prepare(self, data: bytes) -> PreparedImage:
        """Decoded original plus the ``[h, w, 3]`` uint8 model input; raises the 400 errors."""
        started = time.perf_counter()
        try:
            return self._preprocessor.prepare(data)
        finally:
            self._metrics.observe_ms((time.perf_counter() - started) * 1000.0)
