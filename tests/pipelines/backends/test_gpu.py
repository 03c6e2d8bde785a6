"""GPU-only checks of the backends (skipped without CUDA; run by scripts/gpu_check.sh)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.backends import BackendSpec, build_backend
from pipelines.backends.agreement import alpha_agreement, reference_equivalence, tf32_disabled
from pipelines.backends.compiled import CompiledBackend
from pipelines.backends.eager import EagerBackend
from pipelines.model.birefnet import create_model
from pipelines.model.deterministic import deterministic_state_dict
from pipelines.model.variants import get_variant
from pipelines.segmenter import Segmenter, SegmenterSettings, logits_to_alpha
from scripts.profile_gpu import sdpa_choices
from tests.pipelines.backends.fakes import cuda_math_restored

pytestmark = pytest.mark.needs_cuda

_REPO = Path(__file__).resolve().parents[3]
REFERENCE_CANDIDATES = (_REPO / "shared" / "reference", _REPO.parent / "shared" / "reference", _REPO / ".ref")
CUDA = torch.device("cuda")


def _model(variant: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    model = create_model(get_variant(variant).config)
    model.load_state_dict(deterministic_state_dict([(k, tuple(t.shape)) for k, t in model.state_dict().items()]))
    return model.to(CUDA, dtype)


def _inputs(batch: int, size: tuple[int, int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, 3, *size), generator=generator).to(CUDA)


def _alpha(backend: EagerBackend | CompiledBackend, x: torch.Tensor) -> np.ndarray:
    return logits_to_alpha(backend(x.to(backend.dtype))).cpu().numpy()


@pytest.mark.parametrize(("dtype", "min_iou"), [(torch.float16, 0.99), (torch.bfloat16, 0.97)])
def test_half_precision_agrees_with_float32_on_lite(dtype: torch.dtype, min_iou: float) -> None:
    # bfloat16 keeps 8 mantissa bits to float16's 11: on the CPU the same case gives 0.992 / 0.999.
    # The deterministic weights' logits stay within about ±3, so 5 % of pixels sit within 3/255 of
    # the threshold and a one-level rounding flips them: bfloat16's bound leaves room for CUDA's
    # kernels to round twice as far as the CPU's. (The goal's 0.995 is for float16 and real weights.)
    x = _inputs(2, (512, 512))
    with tf32_disabled():
        reference = _alpha(EagerBackend(_model("lite")), x)
    half = _alpha(EagerBackend(_model("lite", dtype), dtype), x)
    agreement = alpha_agreement(reference, half)
    assert agreement.mean_iou >= min_iou, agreement


@pytest.mark.parametrize("batch", [1, 2])
def test_window_attention_runs_on_a_fused_kernel(batch: int) -> None:
    # The math kernel is the fallback when no fused one takes the call (it computes float32 scores
    # for half inputs): with a strided bias every attention call of a batch-1 forward fell back.
    with torch.inference_mode():
        choices = sdpa_choices(_model("lite", torch.float16), _inputs(batch, (256, 256)).half())
    assert sum(choices.values()) > 0 and "MATH" not in choices, choices


@pytest.mark.skipif(importlib.util.find_spec("torch_tensorrt") is None, reason="torch_tensorrt not installed")
def test_tensorrt_engine_is_built_then_loaded_from_the_cache(tmp_path: Path) -> None:
    spec = BackendSpec(variant="demo", input_size=get_variant("demo").input_size, device=CUDA, batch_sizes=(1,),
                       engine_cache_dir=tmp_path, weights_id="deterministic")
    first = build_backend(_model("demo"), "tensorrt", spec)
    assert first.backend.name == "tensorrt", first.failures
    assert len(list(tmp_path.glob("*.ep"))) == 1
    second = build_backend(_model("demo"), "tensorrt", spec)
    x = _inputs(1, spec.input_size)
    agreement = alpha_agreement(_alpha(EagerBackend(_model("demo")), x),
                                logits_to_alpha(second.backend(x)).cpu().numpy())
    assert agreement.max_abs_alpha <= 2 / 255, agreement


def test_float32_equivalence_on_gpu_with_tf32_off() -> None:
    reference_dir = next((d for d in REFERENCE_CANDIDATES if (d / "lite_reference_288x416.npz").is_file()), None)
    if reference_dir is None:
        pytest.skip("reference data not found (shared/reference, ../shared/reference or .ref)")
    result = reference_equivalence("lite", "288x416", reference_dir, CUDA)
    assert result.passed, result


def test_segmenter_on_cuda_uses_pinned_staging_and_reports_memory() -> None:
    segmenter = Segmenter(_model("demo"), get_variant("demo"), CUDA)  # type: ignore[arg-type]
    images = [np.full((*segmenter.input_size, 3), 90 * i, np.uint8) for i in range(3)]
    mattes = segmenter.segment(images)
    assert len(mattes) == 3 and segmenter._staging._buffer is not None
    assert segmenter._staging._buffer.is_pinned()
    assert segmenter.info().gpu_memory_free_mb is not None


@pytest.fixture
def generated_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_settings on deterministic weights: the bundled demo file needs safetensors."""
    monkeypatch.setattr("pipelines.weights.bundled_weights", lambda variant: None)


@pytest.mark.usefixtures("generated_weights")
@pytest.mark.parametrize("tf32", [True, False])
def test_segmenter_from_settings_sets_the_cuda_math_flags(tf32: bool) -> None:
    with cuda_math_restored():
        Segmenter.from_settings(SegmenterSettings(variant="demo", device="cuda", tf32=tf32, cudnn_benchmark=True))
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
        assert torch.backends.cudnn.benchmark is True


@pytest.mark.usefixtures("generated_weights")
def test_compiled_segmenter_with_cuda_graphs_agrees_with_eager_and_never_recompiles() -> None:
    # Last: the one cold compile of this file (one graph, batch 2), while the pre-warm shares the CPU.
    # Both in full float32 (tf32=False in both settings, so the flags never change between compile
    # and call: Dynamo guards on them): with TF32, cuDNN's choice of algorithm alone moves alphas.
    with cuda_math_restored():
        compiled = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cuda", backend="compile",
                                                             compile_mode="reduce-overhead", batch_sizes=(2,),
                                                             tf32=False))
        assert compiled.backend == "compile", compiled.backend_fallbacks
        compiled.warm_up()
        eager = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cuda", tf32=False))
        generator = np.random.default_rng(0)
        images = [generator.integers(0, 256, (*compiled.input_size, 3), dtype=np.uint8) for _ in range(3)]
        with torch._dynamo.config.patch(error_on_recompile=True):
            served = [m.alpha for m in compiled.segment(images)]  # 2 + 1 padded to 2, CUDA-graph replays
            again = [m.alpha for m in compiled.segment(images[:2])]
        expected = [m.alpha for m in eager.segment(images)]
    for alpha, reference in zip(served + again, expected + expected[:2], strict=True):
        assert np.abs(alpha.astype(int) - reference.astype(int)).max() <= 2
