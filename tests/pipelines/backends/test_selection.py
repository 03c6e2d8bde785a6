from __future__ import annotations

import logging
from types import ModuleType

import pytest
import torch

from pipelines.backends import BackendSpec, BackendUnavailableError, build_backend, fallback_chain
from pipelines.backends.eager import EagerBackend
from pipelines.backends.selection import DEFAULT_BUILDERS, Builder
from pipelines.model.variants import get_variant
from pipelines.segmenter import Segmenter
from tests.pipelines.backends.fakes import MeanModel


def _missing(name: str) -> ModuleType:
    raise ImportError(f"No module named {name!r}")


def _spec(**overrides: object) -> BackendSpec:
    fields: dict[str, object] = {"variant": "demo", "input_size": (64, 64), "importer": _missing}
    fields.update(overrides)
    return BackendSpec(**fields)  # type: ignore[arg-type]


def _failing(message: str) -> Builder:
    def build(model: torch.nn.Module, spec: BackendSpec) -> EagerBackend:
        raise RuntimeError(message)

    return build


def test_fallback_chain_starts_at_the_requested_backend() -> None:
    assert fallback_chain("tensorrt") == ("tensorrt", "compile", "eager")
    assert fallback_chain("compile") == ("compile", "eager")
    assert fallback_chain("eager") == ("eager",)


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="tensorrt, compile, eager"):
        fallback_chain("onnx")


def test_missing_tensorrt_falls_back_with_the_import_error_as_reason(caplog: pytest.LogCaptureFixture) -> None:
    builders = {**DEFAULT_BUILDERS, "compile": _failing("no compiler here")}
    with caplog.at_level(logging.WARNING, logger="pipelines.backends.selection"):
        choice = build_backend(MeanModel(), "tensorrt", _spec(), builders)
    assert choice.backend.name == "eager"
    assert [name for name, _ in choice.failures] == ["tensorrt", "compile"]
    assert "torch_tensorrt is not installed" in choice.tensorrt_reason
    assert len([r for r in caplog.records if "falling back" in r.message]) == 2  # one line per failure


def test_tensorrt_on_cpu_is_unavailable_even_when_importable() -> None:
    fake_trt = ModuleType("torch_tensorrt")
    spec = _spec(importer=lambda name: fake_trt)
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
        DEFAULT_BUILDERS["tensorrt"](MeanModel(), spec)


def test_a_backend_that_raises_at_build_time_yields_the_next_one() -> None:
    builders = {"tensorrt": DEFAULT_BUILDERS["tensorrt"], "compile": _failing("inductor exploded"),
                "eager": DEFAULT_BUILDERS["eager"]}
    choice = build_backend(MeanModel(), "compile", _spec(), builders)
    assert choice.backend.name == "eager"
    assert choice.failures == (("compile", "RuntimeError: inductor exploded"),)
    assert choice.tensorrt_reason == "TensorRT backend not selected (backend: compile)"


def test_eager_failure_is_not_swallowed() -> None:
    with pytest.raises(RuntimeError, match="broken"):
        build_backend(MeanModel(), "eager", _spec(), {"eager": _failing("broken")})


def test_segmenter_reports_tensorrt_disabled_with_the_reason() -> None:
    model = MeanModel()
    builders = {**DEFAULT_BUILDERS, "compile": _failing("no compiler here")}
    choice = build_backend(model, "tensorrt", _spec(), builders)
    segmenter = Segmenter(model, get_variant("demo"), torch.device("cpu"),  # type: ignore[arg-type]
                          backend=choice.backend, tensorrt_reason=choice.tensorrt_reason,
                          backend_fallbacks=choice.failures)
    info = segmenter.info()
    assert info.backend == "eager" and info.tensorrt_enabled is False
    assert "torch_tensorrt is not installed" in info.tensorrt_reason
    assert info.backend_fallbacks[1] == ("compile", "RuntimeError: no compiler here")


def test_batch_sizes_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        _spec(batch_sizes=(4, 2))
