"""The builder: its device decision (never ask for a GPU the cluster does not have) and the default app."""

from __future__ import annotations

import pytest

from serve_app.app import inference_actor_options, replica_device, resolve_device, upload_limits
from serve_app.args import InferenceArgs, UploadArgs


@pytest.mark.parametrize(
    ("requested", "gpus", "device"), [("auto", 0, "cpu"), ("auto", 2, "cuda"), ("cpu", 4, "cpu"), ("cuda", 1, "cuda")]
)
def test_device_resolution(requested: str, gpus: float, device: str) -> None:
    assert resolve_device(requested, gpus) == device


def test_explicit_cuda_is_trusted_for_autoscaled_gpu_nodes(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_device("cuda", 0) == "cuda"
    assert "no GPU yet" in caplog.text


def test_inference_asks_for_a_gpu_only_on_cuda() -> None:
    settings = InferenceArgs(num_cpus=0.5, num_gpus=1)
    assert inference_actor_options("cuda", settings) == {"num_cpus": 0.5, "num_gpus": 1}
    assert inference_actor_options("cpu", settings) == {"num_cpus": 0.5, "num_gpus": 0.0}


def test_upload_limits_follow_the_args() -> None:
    limits = upload_limits(UploadArgs(max_file_mb=5, max_megapixels=12.5))
    assert limits.max_file_bytes == 5 * 1024 * 1024 and limits.max_pixels == 12_500_000
    assert upload_limits(UploadArgs(max_jpeg_scans=50)).max_jpeg_scans == 50


def test_replicas_keep_auto_where_it_chose_a_gpu() -> None:
    # A replica given a GPU that does not answer then falls back to the CPU instead of failing.
    assert replica_device("auto", resolve_device("auto", 1.0)) == "auto"
    assert replica_device("auto", resolve_device("auto", 0.0)) == "cpu"
    assert replica_device("cuda", "cuda") == "cuda" and replica_device("cpu", "cpu") == "cpu"


def test_the_default_app_is_built_when_read_not_on_import() -> None:
    # The config's build task imports serve_app.app for build_app; it must not build a second,
    # default app (and log "Serving BiRefNet 'general'") on the way. A fresh interpreter: imported once.
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "import serve_app.app as module\n"
        "print('-- imported')\n"
        "print(type(module.app).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=120, check=True)
    on_import, _, on_read = result.stdout.partition("-- imported")
    assert "Serving BiRefNet" not in on_import
    assert "Serving BiRefNet 'general'" in on_read and on_read.strip().endswith("Application")
