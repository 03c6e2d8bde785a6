"""The Segmenter with a compiled-style backend: padding to compiled sizes, chunking, OOM splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.errors import GpuMemoryExhaustedError
from pipelines.model.variants import get_variant
from pipelines.segmenter import (
    Segmenter,
    SegmenterSettings,
    configure_cuda_math,
    cudnn_benchmark_for,
    input_size_for,
)
from tests.pipelines.backends.fakes import ActivationWatchBackend, FixedSizeBackend, cuda_math_restored


def _segmenter(backend: FixedSizeBackend) -> Segmenter:
    return Segmenter(backend.model, get_variant("demo"), torch.device("cpu"), backend=backend)  # type: ignore[arg-type]


def _images(n: int) -> list[np.ndarray]:
    return [np.full((*input_size_for("demo"), 3), 30 * i, dtype=np.uint8) for i in range(n)]


def _alphas(segmenter: Segmenter, images: list[np.ndarray]) -> list[np.ndarray]:
    return [m.alpha for m in segmenter.segment(images)]


def test_batches_are_padded_to_the_nearest_compiled_size() -> None:
    backend = FixedSizeBackend((1, 2, 4))
    mattes = _segmenter(backend).segment(_images(3))
    assert backend.model.batches == [4] and len(mattes) == 3


def test_batches_above_the_largest_size_run_in_chunks_in_order() -> None:
    backend = FixedSizeBackend((1, 2, 4))
    alphas = _alphas(_segmenter(backend), _images(7))
    assert backend.model.batches == [4, 4]
    one_by_one = [_alphas(_segmenter(FixedSizeBackend((1,))), [image])[0] for image in _images(7)]
    for got, expected in zip(alphas, one_by_one, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_padding_does_not_change_the_results() -> None:
    padded = _alphas(_segmenter(FixedSizeBackend((4,))), _images(3))
    exact = _alphas(_segmenter(FixedSizeBackend((1, 2, 3))), _images(3))
    for a, b in zip(padded, exact, strict=True):
        np.testing.assert_array_equal(a, b)


def test_out_of_memory_splits_a_padded_batch_and_retries() -> None:
    backend = FixedSizeBackend((1, 2, 4), max_batch=2)
    mattes = _segmenter(backend).segment(_images(4))
    assert backend.model.batches == [2, 2] and len(mattes) == 4  # 4 failed before reaching the model


def test_out_of_memory_on_a_single_image_is_gpu_memory_exhausted() -> None:
    segmenter = _segmenter(FixedSizeBackend((1, 2, 4), max_batch=0))
    with pytest.raises(GpuMemoryExhaustedError) as info:
        segmenter.segment(_images(1))
    assert info.value.status_code == 503 and info.value.error_code == "GPU_MEMORY_EXHAUSTED"


def test_a_retry_after_out_of_memory_runs_with_the_failed_pass_released() -> None:
    backend = ActivationWatchBackend((1, 2, 4), max_batch=1)
    mattes = _segmenter(backend).segment(_images(4))
    assert len(mattes) == 4 and len(backend.alive_at_call) == 7  # 4 → 2 + 2 → 1 + 1 + 1 + 1
    assert backend.alive_at_call == [0] * 7, "a traceback kept a failed pass's tensors alive"


@pytest.mark.parametrize(("batch", "available_mb", "runs"), [
    (4, 4.0, [4]),             # fits whole
    (4, 2.5, [2, 2]),          # the largest compiled size that fits, one after another
    (3, 3.0, [2, 1]),          # 3 pads to 4 (4 MB): too much, so 2 + 1
    (2, 1.0, [1, 1]),
])
def test_memory_pre_check_runs_what_fits_in_chunks(batch: int, available_mb: float, runs: list[int]) -> None:
    backend = FixedSizeBackend((1, 2, 4))
    segmenter = _segmenter(backend)
    segmenter.available_memory_mb = lambda: available_mb  # type: ignore[method-assign]
    images = _images(batch)
    mattes = segmenter.segment(images)
    assert backend.model.batches == runs
    expected = _alphas(_segmenter(FixedSizeBackend()), images)
    np.testing.assert_array_equal(np.stack([m.alpha for m in mattes]), np.stack(expected))


def test_memory_pre_check_refuses_only_when_one_image_does_not_fit() -> None:
    backend = FixedSizeBackend((1, 2, 4))
    segmenter = _segmenter(backend)
    segmenter.available_memory_mb = lambda: 0.6  # type: ignore[method-assign]
    with pytest.raises(GpuMemoryExhaustedError) as info:
        segmenter.segment(_images(3))
    assert backend.model.batches == []
    assert info.value.fields["gpu_memory_required_mb"] == 1 and info.value.fields["gpu_memory_available_mb"] == 1


def test_memory_estimate_uses_the_padded_chunk() -> None:
    segmenter = _segmenter(FixedSizeBackend((1, 2, 4)))
    assert segmenter.required_memory_mb(3) == 4.0  # the fake estimates one MB per padded image
    assert segmenter.required_memory_mb(9) == 4.0  # chunks run one after another


def test_warm_up_runs_every_compiled_size() -> None:
    backend = FixedSizeBackend((1, 2, 4))
    segmenter = _segmenter(backend)
    segmenter.warm_up()
    assert backend.model.batches == [4, 2, 1] and segmenter.warmed_up


def test_settings_reject_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu", backend="onnx"))


def test_cuda_math_flags_are_set_and_a_cpu_segmenter_leaves_them() -> None:
    with cuda_math_restored():
        configure_cuda_math(tf32=True, cudnn_benchmark=False)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.benchmark
        configure_cuda_math(tf32=False, cudnn_benchmark=True)
        Segmenter.from_settings(SegmenterSettings(variant="demo", device="cpu", tf32=True, cudnn_benchmark=False))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark


@pytest.mark.parametrize(("setting", "backend", "expected"), [
    (None, "eager", False),  # dynamic batch sizes: no timing pass on live requests
    (None, "compile", True),
    (None, "tensorrt", True),
    (True, "eager", True),
    (False, "compile", False),
])
def test_cudnn_benchmark_defaults_to_the_fixed_shape_backends(setting: bool | None, backend: str,
                                                              expected: bool) -> None:
    assert cudnn_benchmark_for(setting, backend) is expected


def test_auto_device_without_a_gpu_is_the_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    segmenter = Segmenter.from_settings(SegmenterSettings(variant="demo", device="auto"))
    assert segmenter.device.type == "cpu" and segmenter.info().backend == "eager"
