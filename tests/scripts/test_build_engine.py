"""The engine build script's argument checks and its reading of a Serve config, with an injected builder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.segmenter import SegmenterSettings
from scripts import build_engine
from serve_app.args import AppArgs
from serve_app.model import segmenter_settings

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeBuild:
    """Records the settings it is asked to build and reports that backend as built."""

    settings: list[SegmenterSettings] = field(default_factory=list)

    def __call__(self, settings: SegmenterSettings) -> Any:
        self.settings.append(settings)
        info = type("Info", (), {"variant": settings.variant, "device": settings.device, "dtype": settings.dtype,
                                 "backend": settings.backend, "tensorrt_enabled": False, "tensorrt_reason": "-"})
        backend = type("Backend", (), {"describe": lambda self: settings.backend})()
        return type("Segmenter", (), {"warm_up": lambda self: None, "info": lambda self: info,
                                      "inference_backend": backend})()


def _no_gpu() -> bool:
    return False


def _run(argv: list[str], build: FakeBuild) -> int:
    return build_engine.main(argv, build=build, cuda_available=_no_gpu)


def _write_config(path: Path, applications: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"applications": applications}))
    return path


TUNED_MODEL = {
    "variant": "demo", "device": "auto", "dtype": "float16", "backend": "compile", "compile_mode": "reduce-overhead",
    "batch_sizes": [8, 1, 2], "engine_cache_dir": "/models/engines", "patch_order": "legacy",
    "deform_sampling": "torchvision", "tf32": False, "cudnn_benchmark": False, "allow_download": False,
}


def test_unsorted_batch_sizes_are_sorted() -> None:
    build = FakeBuild()
    assert _run(["--variant", "demo", "--device", "cpu", "--backend", "eager", "--batch-sizes", "4,2"], build) == 0
    assert build.settings[0].batch_sizes == (2, 4)


@pytest.mark.parametrize("sizes", ["2,2", "0,1", "1,x", ","])
def test_repeated_non_positive_or_non_numeric_batch_sizes_are_usage_errors(
    sizes: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(["--variant", "demo", "--device", "cpu", "--batch-sizes", sizes], FakeBuild())
    assert exit_info.value.code == 2
    assert "argument --batch-sizes" in capsys.readouterr().err


def test_a_missing_checkpoint_with_no_download_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = FakeBuild()
    missing = tmp_path / "missing.safetensors"
    assert _run(["--variant", "lite", "--device", "cpu", "--weights", str(missing), "--no-download"], build) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(missing) in err[0]
    assert build.settings == []


def test_cuda_without_a_gpu_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    build = FakeBuild()
    assert _run(["--variant", "demo", "--device", "cuda"], build) == 2
    assert build.settings == []
    assert capsys.readouterr().err.splitlines() == [
        "error: device cuda needs a CUDA GPU and none is usable here (--device cpu builds for the CPU)"
    ]


def test_without_a_config_the_dtype_is_the_service_default_float32() -> None:
    build = FakeBuild()
    assert _run(["--variant", "demo", "--device", "cpu"], build) == 0
    assert build.settings[0].dtype == "float32" == AppArgs().model.dtype
    assert build.settings[0].backend == "tensorrt"


def test_a_config_application_gives_exactly_the_settings_its_replicas_build(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "serve.yaml", [
        {"name": "other", "args": {"model": {"variant": "lite"}}},
        {"name": "tuned", "args": {"model": TUNED_MODEL, "upload": {"max_file_mb": 5}}},
    ])
    build = FakeBuild()
    assert _run(["--config", str(config), "--app", "tuned"], build) == 0
    expected = segmenter_settings(AppArgs.model_validate({"model": TUNED_MODEL}).model, "cpu")
    assert build.settings == [expected]
    assert expected.batch_sizes == (1, 2, 8) and expected.patch_order == "legacy" and not expected.tf32


def test_explicit_flags_override_the_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _write_config(tmp_path / "serve.yaml", [{"name": "tuned", "args": {"model": TUNED_MODEL}}])
    build = FakeBuild()
    assert _run(["--config", str(config), "--dtype", "float32", "--batch-sizes", "2,1"], build) == 0
    settings = build.settings[0]
    assert (settings.dtype, settings.batch_sizes) == ("float32", (1, 2))
    assert (settings.backend, settings.compile_mode, settings.deform_sampling) == ("compile", "reduce-overhead",
                                                                                   "torchvision")
    assert "--dtype overrides" in caplog.text and "--batch-sizes overrides" in caplog.text


def test_the_shipped_serve_config_builds_the_service_default() -> None:
    build = FakeBuild()
    assert _run(["--config", str(REPO / "serve_config.yaml")], build) == 0
    settings = build.settings[0]
    assert (settings.variant, settings.dtype, settings.backend, settings.device) == ("general", "float16", "eager",
                                                                                     "cpu")


def test_the_kuberay_manifest_builds_what_its_gpu_replicas_build() -> None:
    # The manifest holds the RayService and the model cache's claim: two YAML documents.
    build = FakeBuild()
    assert _run(["--config", str(REPO / "configs" / "kuberay-rayservice.yaml"), "--device", "cpu"], build) == 0
    settings = build.settings[0]
    assert (settings.variant, settings.dtype, settings.engine_cache_dir) == ("general", "float16", "/models/engines")


@pytest.mark.parametrize(
    ("applications", "argv_tail", "message"),
    [
        ([{"name": "a"}, {"name": "b"}], [], "has applications ['a', 'b']; choose one with --app"),
        ([{"name": "a"}], ["--app", "b"], "has no application 'b'; it has ['a']"),
        ([{"name": "a", "args": {"model": {"colour": "red"}}}], [], "model.colour: Extra inputs are not permitted"),
        ([{"name": "a", "args": {"model": {"variant": "nope"}}}], [], "unknown BiRefNet variant 'nope'"),
    ],
)
def test_config_problems_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], applications: list[dict[str, Any]], argv_tail: list[str],
    message: str,
) -> None:
    config = _write_config(tmp_path / "serve.yaml", applications)
    assert _run(["--config", str(config), "--device", "cpu", *argv_tail], FakeBuild()) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_missing_config_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--config", str(tmp_path / "absent.yaml")], FakeBuild()) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "absent.yaml" in err[0]


def test_the_demo_model_builds_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--variant", "demo", "--device", "cpu", "--backend", "eager", "--batch-sizes", "2,1"]
    assert build_engine.main(argv) == 0
    assert "variant=demo device=cpu dtype=float32 backend=eager" in capsys.readouterr().out
