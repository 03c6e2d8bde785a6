"""bench_gpu's rows per batch size, and its agreement inputs padded to a compiled batch size, on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines import segmenter
from pipelines.backends import BackendSpec
from pipelines.backends.compiled import CompiledBackend
from scripts import bench_gpu

DEMO = ["--device", "cpu", "--variants", "demo", "--size", "64x64", "--dtypes", "float32"]


def test_agreement_runs_each_image_padded_to_the_smallest_compiled_batch() -> None:
    bench = bench_gpu.Bench(bench_gpu.parse_args(DEMO), torch.device("cpu"))
    batches: list[int] = []

    def recording_compiler(module: torch.nn.Module, **_options: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            batches.append(x.shape[0])
            return module(x)
        return run

    compiled = CompiledBackend(bench.model("demo", torch.float32), torch.float32, batch_sizes=(2, 4),
                               compiler=recording_compiler)
    inputs = bench_gpu.agreement_inputs(2, (64, 64))
    with torch.inference_mode():
        expected = bench.alphas(bench.model("demo", torch.float32), torch.float32, inputs)
        padded = bench.alphas(compiled, torch.float32, inputs)
    assert batches == [2, 2]  # batch 1 was not compiled: the backend would refuse it
    assert padded.shape == expected.shape == (2, 64, 64)
    np.testing.assert_allclose(padded, expected, atol=1e-5)


def _cells(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[1:]]


def test_per_batch_builds_and_measures_each_batch_size_as_its_own_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[int, ...]] = []
    real_eager = bench_gpu.DEFAULT_BUILDERS["eager"]

    def eager(model: torch.nn.Module, spec: BackendSpec) -> Any:
        built.append(spec.batch_sizes)
        return real_eager(model, spec)

    monkeypatch.setitem(bench_gpu.DEFAULT_BUILDERS, "eager", eager)
    table = tmp_path / "table.md"
    status = bench_gpu.main([*DEMO, "--backends", "eager", "--batches", "2,1", "--per-batch", "--latency-runs", "2",
                             "--throughput-runs", "1", "--warmup", "0", "--agreement-inputs", "1",
                             "--markdown", str(table)])
    assert status == 0
    assert built == [(1,), (2,)]  # smallest first, each built for its size alone
    first, second = _cells(table.read_text())
    assert first["b1 p50 ms"] != "—" and first["img/s b1"] != "—" and first["img/s b2"] == "—"
    assert second["b1 p50 ms"] == "—" and second["img/s b1"] == "—" and second["img/s b2"] != "—"
    assert first["IoU vs fp32"] == second["IoU vs fp32"] == "1.0000"


@pytest.mark.parametrize("native", [True, False])
def test_cpu_rows_run_the_half_dtypes_the_service_would(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(segmenter, "cpu_has_native_bfloat16", lambda: native)
    table = tmp_path / "table.md"
    args = [arg if arg != "float32" else "float32,float16,bfloat16" for arg in DEMO]
    assert bench_gpu.main([*args, "--backends", "eager", "--batches", "1", "--latency-runs", "1",
                           "--throughput-runs", "1", "--warmup", "0", "--agreement-inputs", "1",
                           "--markdown", str(table)]) == 0
    rows = {row["dtype"]: row for row in _cells(table.read_text())}
    assert rows["float32"]["b1 p50 ms"] != "—"
    assert rows["float16"]["b1 p50 ms"] == "—" and rows["float16"]["note"].startswith("skipped")
    bfloat16 = rows["bfloat16"]
    if native:
        assert bfloat16["b1 p50 ms"] != "—" and float(bfloat16["IoU vs fp32"]) > 0.9
    else:
        assert bfloat16["b1 p50 ms"] == "—" and bfloat16["note"].startswith("skipped")
