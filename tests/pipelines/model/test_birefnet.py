from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from pipelines.model.birefnet import (
    SWIN_L,
    SWIN_T,
    BiRefNet,
    BiRefNetConfig,
    DeformSampling,
    PatchOrder,
    create_model,
    deform_conv2d_by_sampling,
    relative_position_index,
    stack_patches,
    with_patch_order,
)
from pipelines.model.deterministic import deterministic_input, deterministic_state_dict
from tests.pipelines.model.tiny import REFERENCE_DIR, TINY, manifest_entries


@pytest.mark.parametrize(("variant", "backbone"), [("general", SWIN_L), ("lite", SWIN_T)])
def test_state_dict_matches_official_manifest(variant: str, backbone) -> None:
    entries = manifest_entries(variant)
    with torch.device("meta"):
        model = BiRefNet(BiRefNetConfig(backbone=backbone))
    ours = [(k, list(t.shape), str(t.dtype).replace("torch.", "")) for k, t in model.state_dict().items()]
    assert ours == [(k, list(s), d) for k, s, d in entries]


def test_parameter_count_matches_official_general() -> None:
    with torch.device("meta"):
        model = BiRefNet(BiRefNetConfig(backbone=SWIN_L))
    assert sum(p.numel() for p in model.parameters()) == 220_176_498


def test_forward_returns_logits_at_input_size(tiny_model: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        out = tiny_model(x)
    assert out.shape == (2, 1, 64, 96)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(64, 80), (50, 64), (32, 33)])
def test_forward_rejects_sizes_not_multiple_of_32(tiny_model: torch.nn.Module, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_model(torch.zeros(1, 3, *size))


def test_forward_rejects_non_rgb_input(tiny_model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny_model(torch.zeros(1, 4, 64, 64))


def test_batch_elements_are_independent(tiny_model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        together = tiny_model(torch.cat([a, b]))
        alone = tiny_model(b)
    torch.testing.assert_close(together[1:], alone, rtol=1e-4, atol=1e-5)


def test_float64_model_runs_in_float64(tiny_model: torch.nn.Module) -> None:
    model = tiny_model.double()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("batch", [1, 2])
def test_attention_masks_have_a_unit_last_stride(
    tiny_model: torch.nn.Module, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CUDA's fused attention kernels (cuDNN, memory-efficient) take a mask only when its last
    # stride is 1; any other mask sends the call to the math kernel, which for half inputs computes
    # float32 scores. The CPU's kernels accept either, so the masks themselves are checked here.
    masks: list[torch.Tensor] = []
    attention = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        masks.append(attn_mask)
        return attention(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.inference_mode():
        tiny_model(torch.randn(batch, 3, 128, 128))
    heads = {mask.shape[1] for mask in masks}
    windows = {mask.shape[0] for mask in masks}
    assert max(heads) > 1 and len(windows) > 1  # multi-head stages, shifted windows and plain ones
    assert [mask.stride(-1) for mask in masks] == [1] * len(masks)


def test_relative_position_index_is_standard_swin_index() -> None:
    index = relative_position_index(3)
    # query (0,0) vs key (2,2): (0-2+2)*5 + (0-2+2) = 0; key (0,0) vs query (2,2): 4*5+4 = 24
    assert index[0, 8] == 0 and index[8, 0] == 24 and index[4, 4] == 12
    assert index.dtype == torch.int64


def test_stack_patches_current_order_is_colour_major() -> None:
    x = torch.arange(3 * 4 * 6, dtype=torch.float32).view(1, 3, 4, 6)
    out = stack_patches(x, (2, 3), PatchOrder.CURRENT)  # grid 2x2
    gh, gw = 2, 2
    for c in range(3):
        for gy in range(gh):
            for gx in range(gw):
                ch = c * gh * gw + gy * gw + gx
                torch.testing.assert_close(out[0, ch], x[0, c, gy * 2:(gy + 1) * 2, gx * 3:(gx + 1) * 3])


def test_stack_patches_legacy_order_is_patch_major_column_first() -> None:
    x = torch.arange(3 * 4 * 6, dtype=torch.float32).view(1, 3, 4, 6)
    out = stack_patches(x, (2, 3), PatchOrder.LEGACY)
    for c in range(3):
        for gy in range(2):
            for gx in range(2):
                ch = (gx * 2 + gy) * 3 + c
                torch.testing.assert_close(out[0, ch], x[0, c, gy * 2:(gy + 1) * 2, gx * 3:(gx + 1) * 3])


def test_patch_order_flag_changes_the_output(tiny_model: torch.nn.Module) -> None:
    legacy = create_model(with_patch_order(TINY, "legacy"))
    legacy.load_state_dict(tiny_model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert not torch.allclose(legacy(x), tiny_model(x))


@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_deform_conv_by_sampling_equals_torchvision_with_gradients(kernel_size: int) -> None:
    """Offsets of a few pixels push taps past every border, where both sample zeros."""
    torch.manual_seed(kernel_size)
    taps = kernel_size * kernel_size
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64, requires_grad=True)
    offset = (3 * torch.randn(2, 2 * taps, 9, 11, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(2, taps, 9, 11, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 5, kernel_size, kernel_size, dtype=torch.float64, requires_grad=True)
    inputs = (x, offset, mask, weight)

    expected = deform_conv2d(x, offset, weight, padding=kernel_size // 2, mask=mask)
    ours = deform_conv2d_by_sampling(x, offset, weight, kernel_size // 2, mask)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    upstream = torch.randn_like(expected)
    for got, want in zip(torch.autograd.grad(ours, inputs, upstream), torch.autograd.grad(expected, inputs, upstream),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_grid_sample_deform_sampling_gives_the_same_model_output(tiny_model: torch.nn.Module) -> None:
    sampled = create_model(replace(TINY, deform_sampling=DeformSampling.GRID_SAMPLE))
    sampled.load_state_dict(tiny_model.state_dict())
    sampled.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(sampled(x), tiny_model(x), rtol=0, atol=1e-4)


def test_float64_equivalence_lite_288x416() -> None:
    """Our network equals the official one on the deterministic lite 288×416 case (≤ 1e-9)."""
    reference_path = REFERENCE_DIR / "lite_reference_288x416.npz"
    entries = manifest_entries("lite")
    reference = np.load(reference_path)
    model = create_model(BiRefNetConfig(backbone=SWIN_T))
    model.load_state_dict(deterministic_state_dict([(k, s) for k, s, _ in entries]))
    model = model.double()
    x = deterministic_input(288, 416)
    assert np.array_equal(x[0].numpy(), reference["input"])
    with torch.inference_mode():
        mask = torch.sigmoid(model(x.double()))[0, 0].numpy()
    assert np.abs(mask - reference["mask_f64"]).max() <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lite", "general"])
def test_float64_equivalence_512(variant: str) -> None:
    from scripts.check_equivalence import run

    result = run(variant, "512", "float64", REFERENCE_DIR, threads=2)
    assert result["max_abs_mask_diff"] <= 1e-9
