"""The shipped Serve configs: valid for Serve and for AppArgs, and sized for a 2-core machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import DeploymentSchema, RayActorOptionsSchema, ServeDeploySchema

from serve_app.args import AppArgs, ConcurrencyRule, RateLimitArgs, RateRule
from serve_app.batching import BatchConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "serve_config.yaml", ROOT / "configs" / "offline.yaml", ROOT / "configs" / "production.yaml"]
STAGES = {"Ingress", "Preprocess", "Inference", "Postprocess", "Telemetry", "RateLimiter"}


def load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return yaml.safe_load(handle)  # type: ignore[no-any-return]


def kuberay_manifest() -> dict[str, dict[str, Any]]:
    """The manifest's objects by kind (the RayService and the model cache's claim)."""
    with (ROOT / "configs" / "kuberay-rayservice.yaml").open() as handle:
        return {document["kind"]: document for document in yaml.safe_load_all(handle)}


def kuberay_serve_config() -> dict[str, Any]:
    return yaml.safe_load(kuberay_manifest()["RayService"]["spec"]["serveConfigV2"])  # type: ignore[no-any-return]


def all_configs() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, load(path)) for path in CONFIGS] + [("kuberay", kuberay_serve_config())]


@pytest.mark.parametrize(("name", "config"), all_configs())
def test_config_is_a_valid_serve_config_with_valid_args(name: str, config: dict[str, Any]) -> None:
    schema = ServeDeploySchema.model_validate(config)
    (application,) = schema.applications
    assert application.import_path == "serve_app.app:build_app"
    args = AppArgs.model_validate(application.args)
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert set(deployments) <= STAGES
    assert ("RateLimiter" in deployments) == args.rate_limit.enabled
    assert schema.http_options.request_timeout_s is not None
    assert schema.http_options.request_timeout_s > args.ingress.timeout_s


@pytest.mark.parametrize(("name", "config"), all_configs())
def test_deployment_keys_are_ones_serve_knows(name: str, config: dict[str, Any]) -> None:
    # Ray's schema drops unknown keys here silently: a typo would leave Serve's default in force.
    for deployment in config["applications"][0]["deployments"]:
        assert set(deployment) <= set(DeploymentSchema.model_fields), deployment["name"]
        assert set(deployment.get("autoscaling_config", {})) <= set(AutoscalingConfig.model_fields)
        assert set(deployment.get("ray_actor_options", {})) <= set(RayActorOptionsSchema.model_fields)


@pytest.mark.parametrize(("name", "config"), all_configs())
def test_ingress_lets_requests_finish_and_tells_overloaded_clients_when_to_retry(
        name: str, config: dict[str, Any]) -> None:
    application = config["applications"][0]
    ingress = next(d for d in application["deployments"] if d["name"] == "Ingress")
    # Serve's default is 20 s; a scale-down or rollout would cut requests still within their 30 s.
    assert ingress["graceful_shutdown_timeout_s"] > AppArgs.model_validate(application["args"]).ingress.timeout_s
    assert ingress["backpressure_config"]["retry_after_s"] > 0


def test_kuberay_manifest_shares_the_model_cache_and_requires_keys_from_a_secret() -> None:
    manifest = kuberay_manifest()
    cluster = manifest["RayService"]["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    claim = manifest["PersistentVolumeClaim"]
    gpu_pod = next(g["template"]["spec"] for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu-inference")
    mounted = {v["persistentVolumeClaim"]["claimName"] for v in gpu_pod["volumes"] if "persistentVolumeClaim" in v}
    assert mounted == {claim["metadata"]["name"]}
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every GPU pod mounts it, on any node
    assert gpu_pod["securityContext"]["fsGroup"] == 100  # the image's ray user is in group users

    args = AppArgs.model_validate(kuberay_serve_config()["applications"][0]["args"])
    assert args.api_keys.required and args.api_keys.env_var
    for pod in pods:  # the app is built on whichever node Ray picks
        (container,) = pod["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert "secretKeyRef" in env[args.api_keys.env_var]["valueFrom"]


@pytest.mark.parametrize(("name", "config"), all_configs())
def test_inference_batches_can_fill(name: str, config: dict[str, Any]) -> None:
    inference = next(d for d in config["applications"][0]["deployments"] if d["name"] == "Inference")
    batch = BatchConfig.model_validate(inference["user_config"])
    assert inference["max_ongoing_requests"] >= 2 * batch.max_batch_size
    assert inference["autoscaling_config"]["target_ongoing_requests"] <= inference["max_ongoing_requests"]
    # The builder owns Inference's ray_actor_options (it decides num_gpus); a block here replaces them.
    assert "ray_actor_options" not in inference


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_fits_two_cores_at_minimum_replicas(path: Path) -> None:
    config = load(path)
    application = config["applications"][0]
    args = AppArgs.model_validate(application["args"])
    total = args.inference.num_cpus
    for deployment in application["deployments"]:
        if deployment["name"] == "Inference":
            continue
        replicas = deployment.get("num_replicas") or deployment["autoscaling_config"]["min_replicas"]
        total += replicas * deployment["ray_actor_options"]["num_cpus"]
    assert total <= 2.0
    assert config["http_options"]["host"] == "127.0.0.1"


def test_offline_config_fits_two_cores_at_maximum_replicas() -> None:
    application = load(ROOT / "configs" / "offline.yaml")["applications"][0]
    args = AppArgs.model_validate(application["args"])
    total = 0.0
    for deployment in application["deployments"]:
        replicas = deployment.get("num_replicas") or deployment["autoscaling_config"]["max_replicas"]
        inference = deployment["name"] == "Inference"
        total += replicas * (args.inference.num_cpus if inference else deployment["ray_actor_options"]["num_cpus"])
    assert total <= 2.0, f"{total:.2f} CPUs at max_replicas: an added replica could never be placed"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_singletons_have_one_replica(path: Path) -> None:
    for deployment in load(path)["applications"][0]["deployments"]:
        if deployment["name"] in {"Telemetry", "RateLimiter"}:
            assert deployment["num_replicas"] == 1


def test_offline_config_needs_no_network_and_no_rate_limit() -> None:
    args = AppArgs.model_validate(load(ROOT / "configs" / "offline.yaml")["applications"][0]["args"])
    assert args.model.variant == "demo" and args.model.allow_download is False
    assert args.rate_limit.enabled is False


def test_production_config_has_the_spec_limits() -> None:
    args = AppArgs.model_validate(load(ROOT / "serve_config.yaml")["applications"][0]["args"])
    assert args.model.variant == "general" and args.model.device == "auto"
    assert args.rate_limit.enabled
    spec = {RateRule(limit=30, period_s=60), RateRule(limit=3, period_s=1), ConcurrencyRule(concurrent=3)}
    assert set(args.rate_limit.tiers["free"]) == spec
    assert args.rate_limit.tiers == RateLimitArgs().tiers  # the file spells out the defaults
    assert args.upload.max_file_bytes == 10 * 1024 * 1024
    assert args.ingress.timeout_s == 30


def test_unknown_keys_are_rejected_with_their_name() -> None:
    with pytest.raises(ValidationError, match="varient"):
        AppArgs.model_validate({"model": {"varient": "demo"}})
    with pytest.raises(ValidationError, match="timeout"):
        AppArgs.model_validate({"timeout": 30})


@pytest.mark.parametrize(("args", "message"), [
    ({"model": {"batch_sizes": [0, 1]}}, "greater than or equal to 1"),
    ({"model": {"batch_sizes": [1, 1, 2]}}, "distinct"),
    ({"upload": {"min_side": 5000}}, "min_side <= max_short_side"),
    ({"upload": {"max_short_side": 8000}}, "max_short_side <= max_long_side"),
])
def test_inconsistent_sizes_fail_the_deploy(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AppArgs.model_validate(args)


def test_rate_limit_tiers_must_exist() -> None:
    with pytest.raises(ValidationError, match="unknown tiers"):
        AppArgs.model_validate({"api_keys": {"hashes": {"0" * 64: "platinum"}}})
    with pytest.raises(ValidationError, match="default_tier"):
        AppArgs.model_validate({"rate_limit": {"default_tier": "gold"}})


@pytest.mark.parametrize("origin", ["https://app.example.com/", "app.example.com", "ftp://files.example", ""])
def test_cors_origins_must_be_what_an_origin_header_carries(origin: str) -> None:
    with pytest.raises(ValidationError, match="cors_allow_origins"):
        AppArgs.model_validate({"ingress": {"cors_allow_origins": [origin]}})


def test_cors_origins_accept_hosts_ports_and_any() -> None:
    origins = ["https://app.example.com", "http://localhost:3000", "*"]
    assert AppArgs.model_validate({"ingress": {"cors_allow_origins": origins}}).ingress.cors_allow_origins == tuple(
        origins
    )
