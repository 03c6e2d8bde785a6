"""Inference: BiRefNet with dynamic batching (``pipelines.segmenter``).

The constructor loads the weights (downloading them on a first start) and runs a warm-up, so Serve
routes to a replica only once it can answer fast. Weights that are missing do not crash the
replica: it reports ``failed`` (``/health`` 503 with the reason), answers 503 MODEL_NOT_READY,
and tries again every ``reload_interval_s`` until the file appears.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from pipelines.datatypes import PreparedImage
from pipelines.errors import ModelNotReadyError
from pipelines.weights import WeightsNotFoundError, WeightsVerificationError
from serve_app.args import InferenceArgs, ModelArgs
from serve_app.batching import BatchConfig, gather_model_inputs, split_mattes
from serve_app.logs import configure_replica_logging
from serve_app.metrics import BatchMetrics, StageMetrics
from serve_app.model import ModelThread, SegmenterLike, resolve_factory, segmenter_settings
from serve_app.records import ModelReport, ModelState, Segmentation

logger = logging.getLogger("ray.serve")
_REPORT_TIMEOUT_S = 5.0


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 1})
class Inference:
    """Args: model: what to load; device: ``cpu``, ``cuda`` or ``auto`` (a GPU was assigned, CPU if it
    does not answer) from the builder;
    settings: warm-up and reporting; telemetry: handle of the Telemetry deployment."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self, model: ModelArgs, device: str, settings: InferenceArgs, telemetry: DeploymentHandle
    ) -> None:
        configure_replica_logging()
        self._model = model
        self._device = device
        self._settings = settings
        self._telemetry = telemetry
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._segmenter: SegmenterLike | None = None
        self._error: tuple[str, str] | None = None
        self._stage_metrics = StageMetrics("inference")
        self._batch_metrics = BatchMetrics()
        self._model_thread = ModelThread()
        await self._load()
        self._background = asyncio.get_running_loop().create_task(self._report_and_reload())

    def reconfigure(self, user_config: dict[str, object]) -> None:
        """Apply ``max_batch_size`` / ``batch_wait_timeout_s`` from the deployment's user_config."""
        config = BatchConfig.model_validate(user_config)
        self.segment.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]
        self.segment.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def segment(self, batch: list[PreparedImage]) -> list[Segmentation]:
        """One matte per prepared image; callers send one image and get one Segmentation.

        Raises:
            ModelNotReadyError: the weights are not loaded (503).
            GpuMemoryExhaustedError: not even one image fits in free GPU memory (503).
        """
        segmenter = self._segmenter
        if segmenter is None:
            # The title only: the detail names server paths, which go to the logs and /health.
            raise ModelNotReadyError(f"{self._error[0]}; the service retries loading it" if self._error else None)
        inputs = gather_model_inputs(batch, segmenter.input_size)
        started = time.perf_counter()
        try:
            # Off the event loop, so the next batch can gather while this one runs.
            mattes = await self._model_thread.run(segmenter.segment, inputs)
        finally:
            self._stage_metrics.observe_ms((time.perf_counter() - started) * 1000.0)
            self._batch_metrics.observe(len(batch))
        return split_mattes(mattes, len(batch), tensorrt_enabled=segmenter.info().tensorrt_enabled)

    def check_health(self) -> None:
        """Serve's liveness probe. A replica waiting for its weights is alive (it reports why)."""

    # -- loading and reporting ----------------------------------------------------------------

    async def _load(self) -> None:
        await self._report()
        try:
            self._segmenter = await self._model_thread.run(self._build)
            self._error = None
        except WeightsNotFoundError as exc:
            self._error = ("Model checkpoint not found", str(exc))
        except WeightsVerificationError as exc:
            self._error = ("Model checkpoint failed verification", str(exc))
        if self._error is not None:
            logger.warning("%s: %s; retrying every %gs", *self._error, self._settings.reload_interval_s)
        await self._report()

    def _build(self) -> SegmenterLike:
        factory = resolve_factory(self._model.segmenter_factory)
        logger.info("Loading BiRefNet variant %r on %s", self._model.variant, self._device)
        segmenter = factory(segmenter_settings(self._model, self._device))
        if self._settings.warm_up:
            segmenter.warm_up()
        logger.info("%s ready on %s", segmenter.model_name, self._device)
        return segmenter

    def _state_report(self) -> ModelReport:
        now = time.time()
        if self._segmenter is None:
            state = ModelState.FAILED if self._error else ModelState.LOADING
            return ModelReport(self._replica, state, now, self._model.variant, self._device, error=self._error)
        info = self._segmenter.info()
        return ModelReport(
            replica=self._replica,
            state=ModelState.READY,
            reported_at=now,
            model_name=info.model_name,
            device=info.device,
            dtype=info.dtype,
            backend=info.backend,
            tensorrt_enabled=info.tensorrt_enabled,
            tensorrt_reason=info.tensorrt_reason,
            backend_fallbacks=tuple(info.backend_fallbacks),
            gpu_memory_free_mb=info.gpu_memory_free_mb,
            checkpoint_path=info.checkpoint_path,
            checkpoint_present=info.checkpoint_present,
        )

    async def _report(self) -> None:
        try:
            await asyncio.wait_for(self._telemetry.record_model.remote(self._state_report()), _REPORT_TIMEOUT_S)
        except Exception:  # a lost report only delays /ready; the next one follows shortly
            logger.warning("Could not report model state to Telemetry", exc_info=True)

    async def _report_and_reload(self) -> None:
        next_reload = time.monotonic() + self._settings.reload_interval_s
        while True:
            await asyncio.sleep(self._settings.report_interval_s)
            if self._segmenter is None and time.monotonic() >= next_reload:
                await self._load()
                next_reload = time.monotonic() + self._settings.reload_interval_s
            else:
                await self._report()
