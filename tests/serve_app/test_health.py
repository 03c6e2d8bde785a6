"""/health and /ready as functions of the model reports and request samples."""

from __future__ import annotations

from serve_app.health import (
    LatencyWindow,
    assess_health,
    assess_readiness,
    fresh_reports,
    percentile,
    running_replicas,
)
from serve_app.records import ModelReport, ModelState, RequestSample

NOW = 1_000_000.0
EMPTY = LatencyWindow().summary(NOW)


def report(
    replica: str = "r1", state: ModelState = ModelState.READY, device: str = "cpu", **fields: object
) -> ModelReport:
    defaults: dict[str, object] = {"model_name": "BiRefNet-general", "checkpoint_present": True}
    return ModelReport(replica, state, NOW, device=device, **{**defaults, **fields})  # type: ignore[arg-type]


def test_health_on_gpu_is_healthy_with_every_spec_field() -> None:
    answer = assess_health([report(device="cuda", gpu_memory_free_mb=12543.24, tensorrt_enabled=True)], EMPTY)
    assert answer.status_code == 200
    body = answer.body
    assert body["status"] == "healthy"
    assert body["service"] == "BiRefNet Background Removal" and body["version"] == "1.0.0"
    assert body["model"] == "BiRefNet-general" and body["device"] == "cuda"
    assert body["tensorrt_enabled"] is True and body["gpu_memory_free_mb"] == 12543.2
    assert body["model_files_status"] == {"checkpoint": True, "config": True, "tensorrt_engine": True}
    assert set(body["performance_metrics"]) == {
        "avg_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "requests_last_hour",
    }


def test_health_names_the_backend_and_why_tensorrt_is_off() -> None:
    reason = "torch_tensorrt is not installed (pip install -e '.[tensorrt]')"
    fell_back = report(device="cuda", backend="compile", dtype="float16", tensorrt_reason=reason,
                       backend_fallbacks=(("tensorrt", reason),))
    body = assess_health([fell_back], EMPTY).body
    assert body["status"] == "degraded"  # on CUDA, but not with the backend it was configured for
    assert body["tensorrt_enabled"] is False and body["tensorrt_reason"] == reason
    assert body["backend"] == "compile" and body["dtype"] == "float16"
    assert body["backend_fallbacks"] == {"tensorrt": reason}


def test_health_reports_each_backend_when_replicas_differ() -> None:
    trt = report("r1", device="cuda", backend="tensorrt", tensorrt_enabled=True, tensorrt_reason="engine x")
    eager = report("r2", device="cuda", backend="eager", tensorrt_reason="not selected")
    body = assess_health([trt, eager], EMPTY).body
    assert body["status"] == "healthy" and body["backend"] == "eager,tensorrt"
    assert body["tensorrt_enabled"] is False and body["tensorrt_reason"] == "not selected"
    assert body["model_files_status"]["tensorrt_engine"] is False


def test_health_on_cpu_is_degraded() -> None:
    answer = assess_health([report(device="cpu")], EMPTY)
    assert answer.status_code == 200
    assert answer.body["status"] == "degraded" and answer.body["device"] == "cpu"
    assert answer.body["gpu_memory_free_mb"] is None


def test_health_with_missing_weights_is_unhealthy_503() -> None:
    failed = report(state=ModelState.FAILED, error=("Model checkpoint not found", "/models/x.pth missing"))
    answer = assess_health([failed], EMPTY)
    assert answer.status_code == 503
    assert answer.body == {
        "status": "unhealthy",
        "error": "Model checkpoint not found",
        "detail": "/models/x.pth missing",
    }


def test_health_is_degraded_when_one_replica_of_two_failed() -> None:
    failed = report("r2", ModelState.FAILED, device="cuda", error=("Model checkpoint not found", "gone"))
    answer = assess_health([report("r1", device="cuda"), failed], EMPTY)
    assert answer.status_code == 200 and answer.body["status"] == "degraded"


def test_health_before_any_report_is_unhealthy() -> None:
    assert assess_health([], EMPTY).status_code == 503


def test_latency_window_summarises_successes_and_counts_all() -> None:
    window = LatencyWindow(window_s=3600)
    for index in range(100):
        window.add(RequestSample(NOW - 10, float(index + 1), succeeded=True))
    window.add(RequestSample(NOW - 10, 5000.0, succeeded=False))
    window.add(RequestSample(NOW - 4000, 1.0, succeeded=True))  # older than an hour
    summary = window.summary(NOW)
    assert summary.requests_last_hour == 101
    assert summary.avg_latency_ms == 50.5
    assert summary.p95_latency_ms == 95.0 and summary.p99_latency_ms == 99.0


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 0.95) == 0.0


def test_stale_reports_are_forgotten() -> None:
    old = ModelReport("old", ModelState.READY, NOW - 100, "m", "cpu")
    assert [r.replica for r in fresh_reports([old, report("new")], NOW, 31.0)] == ["new"]


def running(*names: str, replicas: int = 1) -> dict[str, int]:
    return {name: replicas for name in names}


def test_ready_when_every_replica_loaded() -> None:
    answer = assess_readiness([report("r1"), report("r2")], running("Inference", "Ingress"))
    assert answer.status_code == 200 and answer.body == {"ready": True, "model_replicas": 2}


def test_not_ready_while_a_request_path_deployment_has_no_running_replica() -> None:
    states = {**running("Inference"), **running("Preprocess", replicas=0)}
    answer = assess_readiness([report()], states)
    assert answer.status_code == 503
    assert answer.body["error_code"] == "MODEL_NOT_READY" and "Preprocess" in answer.body["detail"]


def test_replacing_one_of_several_replicas_keeps_the_service_ready() -> None:
    # A crashed Preprocess replica makes Serve call the deployment UNHEALTHY while its twin runs.
    states = {**running("Inference"), **running("Preprocess")}
    assert assess_readiness([report()], states).status_code == 200


def test_the_fail_open_rate_limiter_is_not_needed_to_serve() -> None:
    states = {**running("Inference"), **running("RateLimiter", replicas=0)}
    assert assess_readiness([report()], states).status_code == 200


def test_not_ready_while_no_replica_has_loaded() -> None:
    settled = running("Inference")
    assert assess_readiness([report(state=ModelState.LOADING)], settled).status_code == 503
    failed = report(state=ModelState.FAILED, error=("Model checkpoint not found", "x"))
    answer = assess_readiness([failed, report("r2", ModelState.LOADING)], settled)
    assert answer.status_code == 503 and "Model checkpoint not found" in answer.body["detail"]


def test_a_replica_added_or_failing_later_keeps_a_serving_service_ready() -> None:
    # The autoscaler's new replica reports loading from its constructor; a replica whose weights
    # went missing reports failed. The ready one still serves: the load balancer keeps the service.
    added = report("r2", ModelState.LOADING)
    failed = report("r3", ModelState.FAILED, error=("Model checkpoint not found", "x"))
    answer = assess_readiness([report("r1"), added, failed], running("Inference", replicas=2))
    assert answer.status_code == 200 and answer.body == {"ready": True, "model_replicas": 1}


def test_not_ready_without_reports() -> None:
    assert assess_readiness([], running("Inference")).status_code == 503


def test_running_replicas_counts_only_running_ones_from_serve_status() -> None:
    from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger
    from ray.serve.schema import (
        ApplicationStatus,
        ApplicationStatusOverview,
        DeploymentStatusOverview,
        ReplicaState,
        ServeStatus,
    )

    def deployment(**states: int) -> DeploymentStatusOverview:
        return DeploymentStatusOverview(
            status=DeploymentStatus.UPSCALING,
            status_trigger=DeploymentStatusTrigger.AUTOSCALING,
            replica_states={ReplicaState(state): n for state, n in states.items()},
            message="",
        )

    app = ApplicationStatusOverview(
        status=ApplicationStatus.RUNNING,
        message="",
        last_deployed_time_s=0.0,
        deployments={
            "Preprocess": deployment(RUNNING=1, STARTING=1),
            "Inference": deployment(STARTING=1, STOPPING=1),
            "Postprocess": deployment(RUNNING=2),
        },
    )
    status = ServeStatus(applications={"birefnet": app})
    assert running_replicas(status, "birefnet") == {"Preprocess": 1, "Inference": 0, "Postprocess": 2}
    assert running_replicas(status, "other") == {"application": 0}


def test_recent_answer_is_computed_once_for_concurrent_callers_and_again_after_its_ttl() -> None:
    import asyncio

    from serve_app.health import Answer, RecentAnswer

    now = [100.0]
    computed: list[float] = []

    async def compute() -> Answer:
        computed.append(now[0])
        await asyncio.sleep(0.01)  # the controller's round trip: callers arriving meanwhile wait for it
        return Answer(200, {"status": "ready", "assessed": len(computed)})

    async def probes() -> list[Answer]:
        recent = RecentAnswer(compute, ttl_s=1.0, clock=lambda: now[0])
        burst = await asyncio.gather(*(recent.get() for _ in range(32)))
        now[0] += 0.5
        within = await recent.get()
        now[0] += 0.6
        return [*burst, within, await recent.get()]

    answers = asyncio.run(probes())
    assert computed == [100.0, 101.1]
    assert [a.body["assessed"] for a in answers] == [1] * 33 + [2]
