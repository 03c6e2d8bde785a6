"""The container files: the config the entrypoint derives, and the Dockerfile's references.

No Docker engine runs on the development machines, so the image itself is not built here; these
tests pin what the build and the start depend on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from scripts.container_config import ENVIRONMENT, container_config
from serve_app import API_PREFIX
from serve_app.args import AppArgs, ConcurrencyRule, RateRule
from serve_app.batching import BatchConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ["serve_config.yaml", "configs/offline.yaml", "configs/production.yaml"]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / name).read_text())
    return config


@pytest.mark.parametrize("name", CONFIGS)
def test_container_config_listens_everywhere_and_caches_on_the_volume(name: str) -> None:
    original = load(name)
    derived = container_config(original, "/models/")
    assert derived["http_options"]["host"] == "0.0.0.0"
    assert derived["http_options"]["port"] == original["http_options"]["port"] == 55433
    ServeDeploySchema.model_validate(derived)
    for app in derived["applications"]:
        assert AppArgs.model_validate(app["args"]).model.engine_cache_dir == "/models/engines"
    assert original == load(name), "the input config was changed"


def test_container_config_keeps_a_chosen_engine_cache() -> None:
    config = load("configs/offline.yaml")
    config["applications"][0]["args"]["model"]["engine_cache_dir"] = "/fast-disk/engines"
    derived = container_config(config, "/models")
    assert derived["applications"][0]["args"]["model"]["engine_cache_dir"] == "/fast-disk/engines"


SPEC_ENVIRONMENT = {  # spec §9.2's .env, with values other than the configs' own
    "BIREFNET_MODEL_PATH": "/models/BiRefNet-general.pth",
    "BIREFNET_USE_TENSORRT": "true",
    "BIREFNET_DEVICE": "cuda",
    "BIREFNET_BATCH_SIZE": "12",
    "BIREFNET_CUDNN_BENCHMARK": "false",
    "BIREFNET_MAX_IMAGE_SIZE_MB": "20",
    "BIREFNET_MAX_MEGAPIXELS": "25",
    "BIREFNET_PROCESSING_TIMEOUT_SEC": "90",
    "BIREFNET_RATE_LIMIT_PER_MINUTE": "100",
    "BIREFNET_RATE_LIMIT_PER_SECOND": "5",
    "LOG_LEVEL": "debug",
}


@pytest.mark.parametrize("name", CONFIGS)
def test_spec_environment_variables_override_the_config(name: str) -> None:
    assert set(SPEC_ENVIRONMENT) == set(ENVIRONMENT)
    derived = container_config(load(name), "/models", SPEC_ENVIRONMENT)
    ServeDeploySchema.model_validate(derived)
    assert derived["logging_config"]["log_level"] == "DEBUG"
    assert derived["http_options"]["request_timeout_s"] > 90  # Serve's 408 must not pre-empt the 504
    app = derived["applications"][0]
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    assert ingress["graceful_shutdown_timeout_s"] > 90  # a stopping replica lets its requests finish
    args = AppArgs.model_validate(app["args"])
    assert args.model.weights == "/models/BiRefNet-general.pth" and args.model.device == "cuda"
    assert args.model.backend == "tensorrt" and args.model.cudnn_benchmark is False
    assert (args.upload.max_file_mb, args.upload.max_megapixels, args.ingress.timeout_s) == (20, 25, 90)
    assert args.rate_limit.enabled
    tier = args.rate_limit.tiers[args.rate_limit.default_tier]
    assert {rule.period_s: rule.limit for rule in tier if isinstance(rule, RateRule)} == {60: 100, 1: 5}
    assert [rule.concurrent for rule in tier if isinstance(rule, ConcurrencyRule)] == [3]  # the spec's cap stays
    inference = next(d for d in app["deployments"] if d["name"] == "Inference")
    assert BatchConfig.model_validate(inference["user_config"]).max_batch_size == 12
    assert inference["max_ongoing_requests"] >= 24
    assert inference["autoscaling_config"]["target_ongoing_requests"] == 12  # about one batch per replica
    assert max(args.model.batch_sizes) == 12  # tensorrt: a full batch is one engine call, not three


def test_batch_size_leaves_eager_batch_sizes_alone() -> None:
    derived = container_config(load("serve_config.yaml"), "/models", {"BIREFNET_BATCH_SIZE": "12"})
    assert "batch_sizes" not in derived["applications"][0]["args"]["model"]


def test_without_the_environment_only_host_and_cache_change() -> None:
    original = load("serve_config.yaml")
    derived = container_config(original, "/models", {"HOME": "/home/ray", "BIREFNET_NUM_WORKERS": "4"})
    derived["http_options"]["host"] = original["http_options"]["host"]
    del derived["applications"][0]["args"]["model"]["engine_cache_dir"]
    assert derived == original


def _inference_replicas(config: dict[str, Any]) -> tuple[int, int]:
    inference = next(d for d in config["applications"][0]["deployments"] if d["name"] == "Inference")
    return inference["autoscaling_config"]["min_replicas"], inference["autoscaling_config"]["max_replicas"]


@pytest.mark.parametrize(("gpus", "environ", "replicas"), [
    (1, {}, (1, 1)),                         # serve_config.yaml allows 2; a second would wait forever
    (4, {}, (1, 2)),                         # enough GPUs: the config's own range
    (0, {}, (1, 2)),                         # none counted (no nvidia-smi): no cap
    (None, {}, (1, 2)),
    (1, {"BIREFNET_DEVICE": "cpu"}, (1, 2)),  # CPU replicas ask for no GPU
])
def test_inference_gets_at_most_one_replica_per_visible_gpu(
        gpus: int | None, environ: dict[str, str], replicas: tuple[int, int]) -> None:
    config = load("serve_config.yaml")
    assert _inference_replicas(config) == (1, 2)
    derived = container_config(config, "/models", environ, gpus)
    ServeDeploySchema.model_validate(derived)
    assert _inference_replicas(derived) == replicas


def test_entrypoint_counts_the_gpus_nvidia_smi_lists(tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    result = run_entrypoint(tmp_path / "two", gpus=2)
    assert result.returncode == 0, result.stderr
    assert "Inference replicas at most 2 (one per GPU)" in result.stderr
    (tmp_path / "none").mkdir()
    result = run_entrypoint(tmp_path / "none")  # no nvidia-smi on this machine: no cap
    assert result.returncode == 0 and "Inference replicas" not in result.stderr


def test_use_tensorrt_false_turns_a_configured_tensorrt_off_only() -> None:
    config = load("configs/offline.yaml")
    config["applications"][0]["args"]["model"]["backend"] = "tensorrt"
    derived = container_config(config, "/models", {"BIREFNET_USE_TENSORRT": "0"})
    assert derived["applications"][0]["args"]["model"]["backend"] == "eager"
    config["applications"][0]["args"]["model"]["backend"] = "compile"
    derived = container_config(config, "/models", {"BIREFNET_USE_TENSORRT": "false"})
    assert derived["applications"][0]["args"]["model"]["backend"] == "compile"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("BIREFNET_BATCH_SIZE", "eight", "expected a whole number"),
    ("BIREFNET_MAX_MEGAPIXELS", "-1", "must be a positive"),
    ("BIREFNET_PROCESSING_TIMEOUT_SEC", "nan", "finite number"),
    ("BIREFNET_MAX_IMAGE_SIZE_MB", "inf", "finite number"),
    ("BIREFNET_DEVICE", "tpu", "auto, cpu, cuda"),
    ("BIREFNET_USE_TENSORRT", "maybe", "true or false"),
    ("LOG_LEVEL", "loud", "debug, info"),
])
def test_a_bad_environment_value_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"{variable}='{value}': .*{message}"):
        container_config(load("serve_config.yaml"), "/models", {variable: value})


def run_entrypoint(tmp_path: Path, gpus: int | None = None, **environ: str) -> subprocess.CompletedProcess[str]:
    """The entrypoint on the offline config, with a ``serve`` that prints its arguments and config,
    and an ``nvidia-smi`` that lists ``gpus`` GPUs when given (this machine has none)."""
    stub = tmp_path / "bin" / "serve"
    stub.parent.mkdir()
    stub.write_text("#!/usr/bin/env bash\necho \"serve $*\"\ncat \"$2\"\n")
    stub.chmod(0o755)
    if gpus is not None:
        smi = stub.parent / "nvidia-smi"
        lines = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n" for i in range(gpus))
        smi.write_text(f"#!/usr/bin/env bash\n{lines}")
        smi.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TMPDIR": str(tmp_path), **environ}
    return subprocess.run(["bash", "scripts/container_entrypoint.sh", "configs/offline.yaml"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_entrypoint_runs_serve_on_the_derived_config(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, MODELS_DIR="/data", BIREFNET_DEVICE="cpu", BIREFNET_PIN_MEMORY="true")
    assert result.returncode == 0, result.stderr
    first, _, derived_text = result.stdout.partition("\n")
    assert first == f"serve run {tmp_path / 'birefnet-serve-config.yaml'}"
    derived = yaml.safe_load(derived_text)
    assert derived["http_options"]["host"] == "0.0.0.0"
    assert derived["applications"][0]["args"]["model"]["variant"] == "demo"
    assert derived["applications"][0]["args"]["model"]["engine_cache_dir"] == "/data/engines"
    assert derived["applications"][0]["args"]["model"]["device"] == "cpu"
    assert "from the environment: BIREFNET_DEVICE" in result.stderr
    assert "ignored: BIREFNET_PIN_MEMORY" in result.stderr


def test_entrypoint_stops_on_a_bad_environment_value(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, BIREFNET_BATCH_SIZE="lots")
    assert result.returncode == 2 and "BIREFNET_BATCH_SIZE='lots'" in result.stderr
    assert "serve run" not in result.stdout


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = [src for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", DOCKERFILE, re.M) for src in line.split()[:-1]]
    expected = {"pyproject.toml", "README.md", "LICENSE", "pipelines", "serve_app", "scripts", "serve_config.yaml"}
    assert expected <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert source not in ignored, source


def test_dockerfile_pins_match_the_project() -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    pins = re.findall(r'"(torch(?:vision)?==[\d.]+)"', install)
    assert len(pins) == 2 and all(f'"{pin}"' in DOCKERFILE for pin in pins)
    ray_pin = re.search(r'"ray\[serve\]==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert ray_pin and f"FROM rayproject/ray:{ray_pin.group(1)}-py311-gpu" in DOCKERFILE


def test_dockerfile_port_healthcheck_and_default_config_match_the_service() -> None:
    assert re.search(r"^EXPOSE 55433$", DOCKERFILE, re.M)
    assert f"http://127.0.0.1:55433{API_PREFIX}/ready" in DOCKERFILE
    assert 'ENTRYPOINT ["bash", "scripts/container_entrypoint.sh"]' in DOCKERFILE
    assert 'CMD ["serve_config.yaml"]' in DOCKERFILE


def test_a_container_stop_drains_serve_before_it_is_killed() -> None:
    # serve run shuts Serve down on SIGINT only (KeyboardInterrupt); SIGTERM exits without draining.
    assert re.search(r"^STOPSIGNAL SIGINT$", DOCKERFILE, re.M)
    assert re.search(r'^exec serve run "\$DERIVED"$', (REPO / "scripts" / "container_entrypoint.sh").read_text(), re.M)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grace = compose["services"]["birefnet"]["stop_grace_period"]
    longest = max(d.get("graceful_shutdown_timeout_s", 20)
                  for d in load("serve_config.yaml")["applications"][0]["deployments"])
    assert int(grace.rstrip("s")) > longest


def test_compose_file_maps_the_port_and_keeps_the_models() -> None:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["birefnet"]
    assert service["ports"] == ["55433:55433"] and "models:/models" in service["volumes"]
    assert (REPO / service["command"][0]).is_file()


def test_install_refuses_to_start_without_room_for_the_environment(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    # More free space than any disk has; PYTHON=false so that nothing is installed if the check is missed.
    env = {**os.environ, "BIREFNET_INSTALL_FREE_GB": str(10**9), "PYTHON": "false"}
    result = subprocess.run(["bash", "scripts/install.sh"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"needs about {10**9} GB free" in result.stderr and "BIREFNET_INSTALL_FREE_GB" in result.stderr
    assert not (tmp_path / ".venv").exists()
