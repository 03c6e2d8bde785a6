"""The container files: the config the entrypoint derives, and the Dockerfile's references.

No Docker engine runs on the development machines, so the image itself is not built here; these
tests pin what the build and the start depend on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from scripts.container_config import container_config
from serve_app import API_PREFIX
from serve_app.args import AppArgs

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


def test_entrypoint_runs_serve_on_the_derived_config(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "serve"
    stub.parent.mkdir()
    stub.write_text("#!/usr/bin/env bash\necho \"serve $*\"\ncat \"$2\"\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TMPDIR": str(tmp_path), "MODELS_DIR": "/data"}
    result = subprocess.run(["bash", "scripts/container_entrypoint.sh", "configs/offline.yaml"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, _, derived_text = result.stdout.partition("\n")
    assert first == f"serve run {tmp_path / 'birefnet-serve-config.yaml'}"
    derived = yaml.safe_load(derived_text)
    assert derived["http_options"]["host"] == "0.0.0.0"
    assert derived["applications"][0]["args"]["model"]["variant"] == "demo"
    assert derived["applications"][0]["args"]["model"]["engine_cache_dir"] == "/data/engines"


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = [src for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", DOCKERFILE, re.M) for src in line.split()[:-1]]
    assert {"pyproject.toml", "README.md", "pipelines", "serve_app", "scripts", "serve_config.yaml"} <= set(sources)
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


def test_compose_file_maps_the_port_and_keeps_the_models() -> None:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["birefnet"]
    assert service["ports"] == ["55433:55433"] and "models:/models" in service["volumes"]
    assert (REPO / service["command"][0]).is_file()
