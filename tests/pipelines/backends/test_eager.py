from __future__ import annotations

import pytest
import torch

from pipelines.backends.eager import EagerBackend, Float32ModulatedDeformConv, deform_convs_in_float32
from pipelines.model.birefnet import ModulatedDeformConv
from tests.pipelines.model.tiny import tiny_model_with_statistics


def _input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


def test_half_precision_swaps_every_deform_conv_and_keeps_the_state_dict_keys() -> None:
    model = tiny_model_with_statistics()
    keys = list(model.state_dict())
    count = sum(isinstance(m, ModulatedDeformConv) for m in model.modules())
    assert deform_convs_in_float32(model) == count > 0
    assert all(isinstance(m, Float32ModulatedDeformConv) for m in model.modules() if isinstance(m, ModulatedDeformConv))
    assert list(model.state_dict()) == keys
    assert deform_convs_in_float32(model) == 0  # idempotent


def test_float32_eager_leaves_the_model_alone() -> None:
    model = tiny_model_with_statistics()
    EagerBackend(model, torch.float32)
    assert not any(isinstance(m, Float32ModulatedDeformConv) for m in model.modules())


def test_bfloat16_model_runs_with_float32_deform_convs_and_agrees_with_float32() -> None:
    # torchvision has no bfloat16 deform_conv2d kernel on the CPU: without the swap this raises.
    model = tiny_model_with_statistics()
    x = _input()
    reference = EagerBackend(model, torch.float32)(x)
    half = EagerBackend(model.to(torch.bfloat16), torch.bfloat16)(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16 and half.shape == reference.shape
    probabilities = torch.sigmoid(reference), torch.sigmoid(half.float())
    assert float((probabilities[0] - probabilities[1]).abs().max()) < 0.1


def test_bfloat16_deform_conv_fails_without_the_swap() -> None:
    module = ModulatedDeformConv(4, 4, 3).to(torch.bfloat16)
    with pytest.raises(RuntimeError):
        module(torch.randn(1, 4, 8, 8, dtype=torch.bfloat16))
    assert Float32ModulatedDeformConv.from_module(module)(torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)).dtype == (
        torch.bfloat16
    )
