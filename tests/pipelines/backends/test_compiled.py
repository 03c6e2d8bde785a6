from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines.backends import BackendSpec, BackendUnavailableError
from pipelines.backends.compiled import INDUCTOR_CACHE_ENV, CompiledBackend, use_compile_cache, uses_cuda_graphs
from pipelines.model.birefnet import DeformSampling, create_model
from pipelines.model.variants import get_variant
from pipelines.segmenter import Segmenter
from tests.pipelines.backends.fakes import MeanModel

REPO = Path(__file__).resolve().parents[3]


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


def test_serving_reuses_the_graphs_built_at_warm_up() -> None:
    traced: list[tuple[int, bool, bool]] = []

    def counting(graph: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
        x = next(t for t in inputs if isinstance(t, torch.Tensor) and t.dim() == 4)
        traced.append((x.shape[0], x.is_inference(), x.is_contiguous()))
        return graph.forward

    def compiler(model: torch.nn.Module, **kwargs: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return torch.compile(model, backend=counting, **kwargs)  # type: ignore[no-any-return]

    torch._dynamo.reset()
    variant = get_variant("demo")
    model = create_model(replace(variant.config, deform_sampling=DeformSampling.GRID_SAMPLE)).eval()
    backend = CompiledBackend.build(model, _spec(input_size=variant.input_size, batch_sizes=(1, 2)), compiler=compiler)
    assert [batch for batch, _, _ in traced] == [1, 2]
    segmenter = Segmenter(model, variant, torch.device("cpu"), backend=backend)
    segmenter.warm_up()
    segmenter.segment([np.full((*variant.input_size, 3), 90, np.uint8)] * 3)  # runs as 2 + 1
    backend(torch.zeros(2, 3, *variant.input_size).to(memory_format=torch.channels_last))
    assert [batch for batch, _, _ in traced] == [1, 2], f"recompiled: {traced}"
    torch._dynamo.reset()


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


def test_compile_cache_defaults_beside_the_engines(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert use_compile_cache(tmp_path / "engines", environ) == tmp_path / "engines" / "inductor"
    assert environ[INDUCTOR_CACHE_ENV] == str(tmp_path / "engines" / "inductor")


def test_compile_cache_chosen_by_the_user_wins(tmp_path: Path) -> None:
    environ = {INDUCTOR_CACHE_ENV: str(tmp_path / "mine")}
    assert use_compile_cache(tmp_path / "engines", environ) == tmp_path / "mine"
    assert environ == {INDUCTOR_CACHE_ENV: str(tmp_path / "mine")}


def test_build_points_inductor_at_the_engine_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, "")  # restored (unset) after the test
    backend = CompiledBackend.build(MeanModel(), _spec(engine_cache_dir=tmp_path), compiler=RecordingCompiler())
    assert os.environ[INDUCTOR_CACHE_ENV] == str(tmp_path / "inductor") and backend.cache_dir == tmp_path / "inductor"
    assert f"cache={tmp_path / 'inductor'}" in backend.describe()


_COMPILE_ONCE = """
import sys, torch
from pathlib import Path
from torch._dynamo.utils import counters
from pipelines.backends import BackendSpec
from pipelines.backends.compiled import CompiledBackend

model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
spec = BackendSpec(variant="tiny", input_size=(16, 16), batch_sizes=(1,), engine_cache_dir=Path(sys.argv[1]))
CompiledBackend.build(model, spec)
print(f"hit={counters['inductor']['fxgraph_cache_hit']} miss={counters['inductor']['fxgraph_cache_miss']}")
"""


def test_a_second_process_reuses_the_compiled_graph_from_the_engine_cache(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != INDUCTOR_CACHE_ENV}
    env["PYTHONPATH"] = str(REPO)

    def compile_in_a_new_process() -> str:
        result = subprocess.run([sys.executable, "-c", _COMPILE_ONCE, str(tmp_path)], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip().splitlines()[-1]

    assert compile_in_a_new_process() == "hit=0 miss=1"
    assert (tmp_path / "inductor").is_dir()
    assert compile_in_a_new_process() == "hit=1 miss=0"


def test_inductors_own_default_does_not_count_as_a_choice(tmp_path: Path) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    environ = {INDUCTOR_CACHE_ENV: default_cache_dir()}  # what importing torchvision leaves behind
    assert use_compile_cache(tmp_path, environ) == tmp_path / "inductor"
