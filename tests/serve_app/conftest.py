"""One Ray Serve instance for every HTTP test module in this package (session scope).

Three applications run side by side, deployed from config dicts the way ``serve run`` deploys a file:

* ``birefnet`` at ``/``: ``configs/offline.yaml`` (demo BiRefNet) with rate-limited test keys,
  faster model reports and its replicas' ``TMPDIR`` pointed at a folder the tests watch;
* ``faulty`` at ``/faulty``: the same graph around a scripted segmenter (``fakes.py``) whose
  weights appear only when the test writes them, with a 2 s deadline and a one-slot queue, so
  timeouts, GPU memory errors, unexpected errors, back-pressure and the missing-weights → ready
  transition happen on cue;
* ``secured`` at ``/secured``: the scripted segmenter behind required API keys, one read from a
  key file and one from an environment variable (both holding SHA-256 digests), open to browser
  pages from ``CORS_ORIGIN``.

Test modules take the ``service`` fixture and use ``service.base`` / ``service.remove(...)``; the
helpers below (``PREFIX``, ``poll``, ``flat_jpeg``...) are imported from here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

from serve_app.api_keys import hash_api_key
from tests import imagegen

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/api/background-removal"
LIMITED_KEY = "limited-key"
SINGLE_KEY = "single-request-key"  # one request open at a time
# The ``secured`` app's keys: one listed in its key file, one in the environment variable it names.
FILE_KEY = "file-key-3c1d9a"
ENV_KEY = "env-key-77b0e2"
KEYS_ENV_VAR = "BIREFNET_TEST_API_KEYS"
# The ``secured`` app lets browser pages from this origin call it (ingress.cors_allow_origins).
CORS_ORIGIN = "http://localhost:3000"
READY_TIMEOUT_S = 120.0


@dataclass
class Service:
    base: str  # http://127.0.0.1:<port>
    faulty: str  # base + /faulty
    secured: str  # base + /secured: API keys required (FILE_KEY, ENV_KEY)
    scratch: Path  # TMPDIR of the main app's replicas: must stay empty
    main_ready_seen: list[int] = field(default_factory=list)
    faulty_before_weights: dict[str, requests.Response] = field(default_factory=dict)
    faulty_after_weights: dict[str, requests.Response] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of ``base``, for tests that speak HTTP over a raw socket."""
        host, _, port = self.base.removeprefix("http://").partition(":")
        return host, int(port)

    def remove(
        self,
        data: bytes,
        *,
        base: str | None = None,
        name: str = "portrait.jpg",
        content_type: str = "image/jpeg",
        headers: dict[str, str] | None = None,
        **fields: str,
    ) -> requests.Response:
        files = {"image": (name, data, content_type)}
        return requests.post(
            f"{base or self.base}{PREFIX}/remove", files=files, data=fields, headers=headers, timeout=60
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deploy_config(port: int, weights: Path, scratch: Path, key_file: Path) -> dict[str, Any]:
    offline = yaml.safe_load((ROOT / "configs" / "offline.yaml").read_text())
    main = offline["applications"][0]
    # Python's tempfile (and anything built on it) writes under TMPDIR; the tests watch it stay empty.
    main["runtime_env"] = {"env_vars": {"TMPDIR": str(scratch)}}
    main["args"]["inference"].update(report_interval_s=1, reload_interval_s=1)
    main["args"]["rate_limit"] = {
        "enabled": True,
        "default_tier": "free",
        "tiers": {
            "free": [{"limit": 100000, "period_s": 60}],
            "tiny": [{"limit": 3, "period_s": 60}],
            "single": [{"limit": 100000, "period_s": 60}, {"concurrent": 1}],
        },
        "open_request_ttl_s": 3,  # renewed every second while open
    }
    main["args"]["api_keys"] = {"hashes": {hash_api_key(LIMITED_KEY): "tiny", hash_api_key(SINGLE_KEY): "single"}}
    main["deployments"].append({"name": "RateLimiter", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.05}})
    sliver = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.05}}
    faulty = {
        "name": "faulty",
        "route_prefix": "/faulty",
        "import_path": "serve_app.app:build_app",
        "args": {
            "model": {
                "variant": "demo",
                "weights": str(weights),
                "allow_download": False,
                "segmenter_factory": "tests.serve_app.fakes:build_fake_segmenter",
            },
            "ingress": {"timeout_s": 2.0, "overloaded_retry_after_s": 3},
            "inference": {"num_cpus": 0.05, "warm_up": False, "report_interval_s": 0.5, "reload_interval_s": 0.5},
            "rate_limit": {"enabled": False},
        },
        "deployments": [
            {"name": "Ingress", **sliver},
            {"name": "Preprocess", **sliver},
            {
                "name": "Inference",
                "num_replicas": 1,
                "max_ongoing_requests": 1,
                "max_queued_requests": 1,
                "user_config": {"max_batch_size": 1, "batch_wait_timeout_s": 0},
            },
            {"name": "Postprocess", **sliver},
            {"name": "Telemetry", **sliver},
        ],
    }
    secured = {
        "name": "secured",
        "route_prefix": "/secured",
        "import_path": "serve_app.app:build_app",
        "args": {
            "model": {"variant": "demo", "segmenter_factory": "tests.serve_app.fakes:build_fake_segmenter"},
            "ingress": {"cors_allow_origins": [CORS_ORIGIN]},
            "inference": {"num_cpus": 0.05, "warm_up": False, "report_interval_s": 1},
            "rate_limit": {"enabled": False},
            "api_keys": {"required": True, "file": str(key_file), "env_var": KEYS_ENV_VAR},
        },
        "deployments": [
            {"name": name, **sliver} for name in ("Ingress", "Preprocess", "Inference", "Postprocess", "Telemetry")
        ],
    }
    handle_client = {  # a user's own Serve app calling the service's handle; no HTTP route
        "name": "handle-client",
        "route_prefix": None,
        "import_path": "tests.serve_app.handle_client:build_handle_client",
        "args": {"target_app": "birefnet"},
    }
    return {
        "http_options": {"host": "127.0.0.1", "port": port, "request_timeout_s": 60},
        "logging_config": {"log_level": "WARNING", "enable_access_log": False},
        "applications": [main, faulty, secured, handle_client],
    }


def poll(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise TimeoutError(f"{what} did not happen within {timeout_s:g}s")


def get_status(url: str) -> int:
    try:
        return requests.get(url, timeout=10).status_code
    except requests.RequestException:  # refused while Serve starts, or slow under load
        return 0


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # Token auth would write ~/.ray/auth_token and switch later CLI use on this machine to token
    # mode; this cluster is in-process and bound to 127.0.0.1, so it runs without.
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "PYTHONPATH", KEYS_ENV_VAR)}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))
    # Inherited by the Ray processes, among them the one that builds the apps and reads the keys.
    os.environ[KEYS_ENV_VAR] = f"# the environment's entries\n{hash_api_key(ENV_KEY)}"
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    weights = tmp_path_factory.mktemp("weights") / "fake-birefnet.safetensors"
    scratch = tmp_path_factory.mktemp("replica-tmp")
    key_file = tmp_path_factory.mktemp("keys") / "api_keys"
    key_file.write_text(f"# sha256 of the key, tier\n{hash_api_key(FILE_KEY)} free\n")
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 60})
        config = ServeDeploySchema.model_validate(deploy_config(port, weights, scratch, key_file))
        # What `serve run <config>` does: a config deploy, so the YAML's deployments: apply.
        _get_global_client().deploy_apps(config, _blocking=False)
        base = f"http://127.0.0.1:{port}"
        service = Service(base=base, faulty=f"{base}/faulty", secured=f"{base}/secured", scratch=scratch)

        def main_ready() -> bool:
            service.main_ready_seen.append(get_status(f"{service.base}{PREFIX}/ready"))
            return service.main_ready_seen[-1] == 200

        def faulty_reports_missing_weights() -> bool:
            try:
                response = requests.get(f"{service.faulty}{PREFIX}/health", timeout=10)
            except requests.RequestException:
                return False
            is_json = response.headers.get("content-type") == "application/json"
            return is_json and response.json().get("error") == "Model checkpoint not found"

        poll(faulty_reports_missing_weights, READY_TIMEOUT_S, "faulty app reporting missing weights")
        for endpoint in ("health", "ready"):
            service.faulty_before_weights[endpoint] = requests.get(f"{service.faulty}{PREFIX}/{endpoint}", timeout=10)
        service.faulty_before_weights["remove"] = service.remove(flat_jpeg((128, 128, 128)), base=service.faulty)
        weights.write_bytes(b"weights")
        poll(lambda: get_status(f"{service.faulty}{PREFIX}/ready") == 200, 30, "faulty app ready after weights")
        for endpoint in ("health", "ready"):
            service.faulty_after_weights[endpoint] = requests.get(f"{service.faulty}{PREFIX}/{endpoint}", timeout=10)
        poll(main_ready, READY_TIMEOUT_S, "main app ready")
        poll(lambda: get_status(f"{service.secured}{PREFIX}/ready") == 200, 30, "secured app ready")
        yield service
    finally:
        serve.shutdown()
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def flat_jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (96, 128)) -> bytes:
    return imagegen.jpeg_bytes(np.full((*size, 3), colour, np.uint8), quality=95)
