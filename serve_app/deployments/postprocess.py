"""Postprocess: scale the matte, smooth its edges, compose RGBA and encode PNG on CPU
(``pipelines.postprocess``)."""

from __future__ import annotations

import time

from ray import serve

from pipelines.datatypes import PreparedImage, RemovalOptions
from pipelines.postprocess import Postprocessor
from serve_app.logs import configure_replica_logging
from serve_app.metrics import StageMetrics
from serve_app.records import Cutout, Segmentation


@serve.deployment(max_ongoing_requests=8, ray_actor_options={"num_cpus": 0.5})
class Postprocess:
    def __init__(self) -> None:
        configure_replica_logging()
        self._postprocessor = Postprocessor()
        self._metrics = StageMetrics("postprocess")

    def compose(self, prepared: PreparedImage, segmentation: Segmentation, options: RemovalOptions) -> Cutout:
        """The RGBA PNG at the original size and what the response headers need."""
        started = time.perf_counter()
        try:
            image = self._postprocessor.compose(prepared, segmentation.matte, options)
        finally:
            self._metrics.observe_ms((time.perf_counter() - started) * 1000.0)
        return Cutout(
            image=image,
            first_frame_only=prepared.image.animated,
            model_name=segmentation.matte.model_name,
            tensorrt_enabled=segmentation.tensorrt_enabled,
            inference_ms=segmentation.matte.inference_ms,
        )
