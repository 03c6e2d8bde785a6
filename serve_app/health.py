"""What ``/health`` and ``/ready`` answer, as pure functions of the reports Telemetry holds.

``/health`` (spec §3.1, §4.3) describes the model replicas and recent latency; ``/ready`` says
whether every Inference replica has loaded its weights and run its warm-up.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.errors import ModelNotReadyError
from serve_app.records import ModelReport, ModelState, RequestSample

SERVICE_NAME = "BiRefNet Background Removal"
API_VERSION = "1.0.0"
# Off the request path and failing open (see Ingress._admit): its absence does not stop serving.
_OPTIONAL_DEPLOYMENTS = frozenset({"RateLimiter"})


@dataclass(frozen=True)
class LatencySummary:
    """``performance_metrics`` of ``/health``: latency of successful requests, count of all."""

    avg_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    requests_last_hour: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


class LatencyWindow:
    """Request samples of the last ``window_s`` seconds, at most ``max_samples`` of them."""

    def __init__(self, window_s: float = 3600.0, max_samples: int = 100_000):
        self._window_s = window_s
        self._samples: deque[RequestSample] = deque(maxlen=max_samples)

    def add(self, sample: RequestSample) -> None:
        self._samples.append(sample)

    def summary(self, now: float) -> LatencySummary:
        cutoff = now - self._window_s
        while self._samples and self._samples[0].finished_at < cutoff:
            self._samples.popleft()
        # Samples from several ingress replicas arrive nearly, not strictly, in time order.
        recent = [sample for sample in self._samples if sample.finished_at >= cutoff]
        latencies = sorted(sample.latency_ms for sample in recent if sample.succeeded)
        average = sum(latencies) / len(latencies) if latencies else 0.0
        return LatencySummary(
            avg_latency_ms=round(average, 1),
            p95_latency_ms=round(percentile(latencies, 0.95), 1),
            p99_latency_ms=round(percentile(latencies, 0.99), 1),
            requests_last_hour=len(recent),
        )


def fresh_reports(reports: Sequence[ModelReport], now: float, stale_after_s: float) -> list[ModelReport]:
    """Reports of replicas that are still alive (reported within ``stale_after_s``), by replica id."""
    return sorted((r for r in reports if now - r.reported_at <= stale_after_s), key=lambda r: r.replica)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of a probe endpoint: status code and JSON body."""

    status_code: int
    body: dict[str, Any]


def assess_health(reports: Sequence[ModelReport], latency: LatencySummary) -> Answer:
    """``/health``: 200 healthy (all replicas on CUDA with the configured backend) or degraded (CPU,
    a backend that fell back, or some replica not ready), 503 unhealthy (no replica ready) with the
    spec's ``error``/``detail``.

    Args:
        reports: fresh reports, one per live Inference replica.
        latency: request statistics across all ingress replicas.
    """
    ready = [r for r in reports if r.state is ModelState.READY]
    if not ready:
        failed = [r for r in reports if r.state is ModelState.FAILED and r.error is not None]
        if failed and failed[0].error is not None:
            error, detail = failed[0].error
        elif reports:
            error, detail = "Model is loading", "The inference replicas are loading weights and warming up"
        else:
            error, detail = "Model not loaded", "No inference replica has reported yet"
        return Answer(503, {"status": "unhealthy", "error": error, "detail": detail})
    primary = ready[0]
    all_gpu = all(r.device == "cuda" for r in ready)
    fallbacks = {name: reason for r in ready for name, reason in r.backend_fallbacks}
    status = "healthy" if all_gpu and len(ready) == len(reports) and not fallbacks else "degraded"
    without_tensorrt = [r for r in ready if not r.tensorrt_enabled]
    body: dict[str, Any] = {
        "status": status,
        "service": SERVICE_NAME,
        "version": API_VERSION,
        "model": primary.model_name,
        "device": "cuda" if all_gpu else "cpu",
        "tensorrt_enabled": not without_tensorrt,
        "tensorrt_reason": (without_tensorrt or ready)[0].tensorrt_reason,
        "backend": _joined(r.backend for r in ready),
        "dtype": _joined(r.dtype for r in ready),
        "backend_fallbacks": fallbacks,
        "gpu_memory_free_mb": _least_free_gpu_memory(ready),
        "model_files_status": {
            "checkpoint": all(r.checkpoint_present for r in ready),
            # The architecture config is code (one entry per variant), present once a model loads.
            "config": True,
            "tensorrt_engine": not without_tensorrt,
        },
        "performance_metrics": latency.to_dict(),
        "model_replicas": {"ready": len(ready), "total": len(reports)},
    }
    return Answer(200, body)


def _joined(values: Iterable[str]) -> str:
    """One value when the replicas agree, else the distinct ones: ``eager,tensorrt``."""
    return ",".join(sorted(set(values)))


def _least_free_gpu_memory(reports: Sequence[ModelReport]) -> float | None:
    free = [r.gpu_memory_free_mb for r in reports if r.gpu_memory_free_mb is not None]
    return round(min(free), 1) if free else None


def assess_readiness(reports: Sequence[ModelReport], running: Mapping[str, int]) -> Answer:
    """``/ready``: 200 while the app can serve: every deployment on the request path has a running
    replica and at least one Inference replica has loaded weights and warmed up; 503 otherwise.

    A running Inference replica has loaded already: Serve counts a replica as running only after
    its constructor (load and warm-up) returned. So one replica being replaced (a crash, a rolling
    update) or added by the autoscaler does not take a serving service out of its load balancer,
    nor does a replica whose weights went missing (it reports ``failed``; ``/health`` lists it).

    Args:
        reports: fresh reports, one per live Inference replica.
        running: running (constructed, so routable) replicas per deployment name, from
            :func:`running_replicas`.
    """
    down = sorted(
        name for name, count in running.items() if count < 1 and name not in _OPTIONAL_DEPLOYMENTS
    )
    if down:
        return _not_ready(f"No running replica yet: {', '.join(down)}")
    if not reports:
        return _not_ready("No inference replica has reported yet")
    ready = [r for r in reports if r.state is ModelState.READY]
    if not ready:
        failed = [r for r in reports if r.state is ModelState.FAILED]
        reason = failed[0].error[0] if failed and failed[0].error else "model loading"
        return _not_ready(f"No inference replica is ready yet ({reason})")
    return Answer(200, {"ready": True, "model_replicas": len(ready)})


def running_replicas(status: Any, app_name: str) -> dict[str, int]:
    """Running (constructed, so routable) replicas per deployment of ``app_name``, from a
    ``serve.status()`` result; ``{"application": 0}`` while the application does not exist."""
    application = status.applications.get(app_name)
    if application is None:
        return {"application": 0}
    return {
        name: sum(count for state, count in deployment.replica_states.items() if state == "RUNNING")
        for name, deployment in application.deployments.items()
    }


class RecentAnswer:
    """The answer of an async computation, reused for ``ttl_s``; callers that arrive while it runs
    wait for it rather than starting their own. ``/ready`` asks Serve's controller for the replica
    counts, a remote call that probes from every load balancer would otherwise repeat at their rate."""

    def __init__(self, compute: Callable[[], Awaitable[Answer]], ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._compute = compute
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._answer: tuple[float, Answer] | None = None

    async def get(self) -> Answer:
        async with self._lock:
            if self._answer is None or self._clock() - self._answer[0] >= self._ttl_s:
                answer = await self._compute()
                self._answer = (self._clock(), answer)
            return self._answer[1]


def _not_ready(detail: str) -> Answer:
    error = ModelNotReadyError(detail)
    return Answer(error.status_code, {"ready": False, **error.to_body()})
