from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from pipelines.backends import BackendSpec, BackendUnavailableError
from pipelines.backends.compiled import CompiledBackend, uses_cuda_graphs
from tests.pipelines.backends.fakes import MeanModel


class RecordingCompiler:
    """Stands in for torch.compile: records its arguments and returns the model unchanged."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def __call__(self, model: torch.nn.Module, **kwargs: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        self.kwargs = kwargs
        return model


def _spec(**overrides: object) -> BackendSpec:
    fields: dict[str, object] = {"variant": "demo", "input_size": (32, 32), "batch_sizes": (1, 2, 4)}
    fields.update(overrides)
    return BackendSpec(**fields)  # type: ignore[arg-type]


def test_compile_uses_static_shapes_and_the_configured_mode() -> None:
    compiler = RecordingCompiler()
    CompiledBackend(MeanModel(), torch.float32, (1, 2), "max-autotune-no-cudagraphs", compiler)
    assert compiler.kwargs == {"mode": "max-autotune-no-cudagraphs", "dynamic": False, "fullgraph": False}


def test_build_warms_up_every_compiled_batch_size() -> None:
    model = MeanModel()
    backend = CompiledBackend.build(model, _spec(), compiler=RecordingCompiler())
    assert model.batches == [1, 2, 4]
    assert set(backend.compile_seconds) == {1, 2, 4}


def test_compiled_backend_rejects_a_batch_size_it_was_not_built_for() -> None:
    backend = CompiledBackend(MeanModel(), torch.float32, (1, 2, 4), compiler=RecordingCompiler())
    with pytest.raises(ValueError, match="was not compiled"):
        backend(torch.zeros(3, 3, 32, 32))


def test_compile_errors_become_backend_unavailable() -> None:
    def exploding(model: torch.nn.Module, **kwargs: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("inductor: unsupported op")

        return run

    with pytest.raises(BackendUnavailableError, match="torch.compile failed: RuntimeError"):
        CompiledBackend.build(MeanModel(), _spec(), compiler=exploding)


def test_unknown_compile_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown compile mode"):
        CompiledBackend(MeanModel(), torch.float32, (1,), "turbo", RecordingCompiler())


def test_cuda_graph_modes() -> None:
    assert uses_cuda_graphs("reduce-overhead") and not uses_cuda_graphs("max-autotune-no-cudagraphs")
