from __future__ import annotations

import numpy as np
import pytest
import torch

import pipelines.segmenter as segmenter_module
from pipelines.errors import GpuMemoryExhaustedError, InferenceError
from pipelines.model import DeformSampling
from pipelines.model.birefnet import ModulatedDeformConv
from pipelines.model.variants import get_variant
from pipelines.segmenter import (
    Segmenter,
    SegmenterSettings,
    dtype_on_device,
    input_size_for,
    logits_to_alpha,
    resolve_deform_sampling,
    stack_images,
)
from pipelines.synthetic import EVALUATION_SEED, generate_scene


class ConstantModel(torch.nn.Module):
    """Predicts the same logit everywhere; fails like a GPU out of memory above ``max_batch``."""

    def __init__(self, logit: float = 0.0, max_batch: int = 64) -> None:
        super().__init__()
        self.logit = logit
        self.max_batch = max_batch
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.max_batch:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        # The logit depends on the mean brightness so that batch order is observable.
        return torch.full((x.shape[0], 1, *x.shape[2:]), self.logit) + x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)


def _segmenter(model: torch.nn.Module) -> Segmenter:
    return Segmenter(model, get_variant("demo"), torch.device("cpu"))  # type: ignore[arg-type]


def _images(n: int) -> list[np.ndarray]:
    return [np.full((*input_size_for("demo"), 3), 40 * i, dtype=np.uint8) for i in range(n)]


def test_logits_to_alpha_has_no_min_max_stretch() -> None:
    low = torch.full((1, 1, 4, 4), -6.0)
    alpha = logits_to_alpha(low)
    assert alpha.dtype == torch.uint8 and alpha.shape == (1, 4, 4)
    assert int(alpha.max()) <= 1  # an empty scene stays empty
    assert int(logits_to_alpha(torch.zeros(1, 1, 2, 2))[0, 0, 0]) == 128


def test_stack_images_rejects_mixed_sizes() -> None:
    with pytest.raises(ValueError, match="must all be"):
        stack_images([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])


def test_segment_returns_one_matte_per_image_at_model_size() -> None:
    segmenter = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu"))
    mattes = segmenter.segment(_images(2))
    assert len(mattes) == 2
    assert mattes[0].alpha.shape == input_size_for("demo") and mattes[0].alpha.dtype == np.uint8
    assert mattes[0].model_name == "BiRefNet-demo"


def test_segmenter_serves_at_a_configured_input_size() -> None:
    segmenter = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu", input_size=(128, 160)))
    assert segmenter.input_size == input_size_for("demo", (128, 160)) == (128, 160)
    (matte,) = segmenter.segment([np.full((128, 160, 3), 90, np.uint8)])
    assert matte.alpha.shape == (128, 160)
    with pytest.raises(ValueError, match="multiples of 32"):
        input_size_for("demo", (100, 160))


def test_segment_normalises_with_imagenet_statistics() -> None:
    model = ConstantModel()
    segmenter = _segmenter(model)
    mean_colour = np.empty((*input_size_for("demo"), 3), dtype=np.uint8)
    mean_colour[:] = (124, 116, 104)  # the ImageNet mean → normalised ≈ 0 → sigmoid ≈ 0.5
    assert abs(int(segmenter.segment([mean_colour])[0].alpha[0, 0]) - 128) <= 1
    white = np.full((*input_size_for("demo"), 3), 255, dtype=np.uint8)  # ≈ (2.25, 2.43, 2.64) → mean 2.44
    assert abs(int(segmenter.segment([white])[0].alpha[0, 0]) - 235) <= 1


def test_segment_rejects_wrong_input_size() -> None:
    with pytest.raises(InferenceError, match="model input must be"):
        _segmenter(ConstantModel()).segment([np.zeros((100, 100, 3), np.uint8)])


def test_out_of_memory_batch_is_split_and_order_kept() -> None:
    model = ConstantModel(max_batch=1)
    segmenter = _segmenter(model)
    reference = [_segmenter(ConstantModel()).segment([img])[0].alpha for img in _images(4)]
    mattes = segmenter.segment(_images(4))
    assert model.batches == [4, 2, 1, 1, 2, 1, 1]  # halved until each part fits
    for matte, expected in zip(mattes, reference, strict=True):
        np.testing.assert_array_equal(matte.alpha, expected)


def test_out_of_memory_on_single_image_is_gpu_memory_exhausted() -> None:
    segmenter = _segmenter(ConstantModel(max_batch=0))
    with pytest.raises(GpuMemoryExhaustedError) as info:
        segmenter.segment(_images(1))
    assert info.value.status_code == 503
    assert {"gpu_memory_required_mb", "gpu_memory_available_mb"} <= set(info.value.to_body())
    assert info.value.headers()["Retry-After"] == "30"


def test_other_runtime_errors_are_not_swallowed() -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _segmenter(Broken()).segment(_images(1))


def test_float16_on_cpu_falls_back_to_float32() -> None:
    segmenter = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu", dtype="float16"))
    assert segmenter.dtype == torch.float32 and segmenter.info().dtype == "float32"


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_bfloat16_on_cpu_runs_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(segmenter_module, "cpu_has_native_bfloat16", lambda: native)
    segmenter = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu", dtype="bfloat16"))
    assert segmenter.dtype == expected and segmenter.inference_backend.dtype == expected
    assert next(segmenter.model.parameters()).dtype == expected
    image = generate_scene(EVALUATION_SEED, segmenter.input_size).rgb
    assert segmenter.segment([image])[0].alpha.shape == segmenter.input_size


@pytest.mark.parametrize(("dtype", "device", "expected"), [
    (torch.float32, "cpu", torch.float32),
    (torch.float16, "cpu", torch.float32),
    (torch.float16, "cuda", torch.float16),
    (torch.bfloat16, "cuda", torch.bfloat16),
])
def test_dtype_on_device(dtype: torch.dtype, device: str, expected: torch.dtype) -> None:
    assert dtype_on_device(dtype, torch.device(device)) is expected


def test_info_reports_cpu_and_no_tensorrt() -> None:
    info = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu")).info()
    assert info.device == "cpu" and info.tensorrt_enabled is False and info.gpu_memory_free_mb is None


@pytest.mark.parametrize(("device", "backend", "mode", "expected"), [
    ("cpu", "eager", "default", "grid_sample"),
    ("cuda", "eager", "default", "torchvision"),
    ("cuda", "compile", "default", "torchvision"),
    ("cuda", "compile", "max-autotune-no-cudagraphs", "torchvision"),
    ("cuda", "compile", "reduce-overhead", "grid_sample"),  # CUDA graphs
    ("cuda", "compile", "max-autotune", "grid_sample"),
    ("cuda", "tensorrt", "default", "grid_sample"),  # one engine instead of one per deform-free stretch
])
def test_deform_sampling_auto_is_torchvision_only_where_its_kernel_is_safe_and_useful(
    device: str, backend: str, mode: str, expected: str
) -> None:
    assert resolve_deform_sampling("auto", torch.device(device), backend, mode) is DeformSampling(expected)


def test_deform_sampling_named_is_kept_except_torchvision_under_cuda_graphs() -> None:
    assert resolve_deform_sampling("torchvision", torch.device("cpu")) is DeformSampling.TORCHVISION
    assert resolve_deform_sampling("torchvision", torch.device("cpu"), "compile", "reduce-overhead") is (
        DeformSampling.TORCHVISION)
    assert resolve_deform_sampling("torchvision", torch.device("cuda"), "tensorrt") is DeformSampling.TORCHVISION
    # its kernels ignore the CUDA-graph capture stream (pytorch/vision#9513)
    assert resolve_deform_sampling("torchvision", torch.device("cuda"), "compile", "reduce-overhead") is (
        DeformSampling.GRID_SAMPLE)
    assert resolve_deform_sampling("grid_sample", torch.device("cuda")) is DeformSampling.GRID_SAMPLE
    with pytest.raises(ValueError, match="unknown deform_sampling 'cuda'.*grid_sample"):
        resolve_deform_sampling("cuda", torch.device("cpu"))


def test_deform_sampling_setting_reaches_every_deformable_conv_and_keeps_the_mattes() -> None:
    mattes = {}
    for sampling in ("torchvision", "grid_sample"):
        segmenter = Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu", deform_sampling=sampling))
        convs = [m for m in segmenter.model.modules() if isinstance(m, ModulatedDeformConv)]
        assert convs and all(m.sampling is DeformSampling(sampling) for m in convs)
        mattes[sampling] = segmenter.segment(_images(3))
    for ours, theirs in zip(mattes["grid_sample"], mattes["torchvision"], strict=True):
        assert np.abs(ours.alpha.astype(int) - theirs.alpha.astype(int)).max() <= 1
