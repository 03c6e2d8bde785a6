"""Eager PyTorch backend: the model as it is, in float32, float16 or bfloat16.

Half-precision models (``model.half()`` / ``.to(torch.bfloat16)``) keep the deformable
convolution in float32: torchvision's ``deform_conv2d`` has no bfloat16 kernel on CPU, and its
sampling offsets lose sub-pixel precision in float16. Under CUDA autocast torchvision does the same
(its autocast kernel runs the op in float32); here the swap is explicit, so that a cast model
works without autocast and compiled graphs see the same arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.backends.base import BackendSpec, estimate_activation_mb
from pipelines.model.birefnet import ModulatedDeformConv

HALF_DTYPES = (torch.float16, torch.bfloat16)


class Float32ModulatedDeformConv(ModulatedDeformConv):
    """:class:`ModulatedDeformConv` whose sampling runs in float32 whatever the model's dtype.

    The offset and modulator convs run in the model's dtype; their outputs, the input and the
    weight are cast to float32 for the sampling and the result back. Same submodules, so the
    same state-dict keys.
    """

    @classmethod
    def from_module(cls, module: ModulatedDeformConv) -> Float32ModulatedDeformConv:
        wrapped = cls.__new__(cls)
        nn.Module.__init__(wrapped)
        wrapped.padding = module.padding
        wrapped.sampling = module.sampling
        wrapped.offset_conv = module.offset_conv
        wrapped.modulator_conv = module.modulator_conv
        wrapped.regular_conv = module.regular_conv
        return wrapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x).float()
        modulator = 2.0 * torch.sigmoid(self.modulator_conv(x).float())
        weight = self.regular_conv.weight.float()
        return self.sample(x.float(), offset, modulator, weight).to(x.dtype)


def deform_convs_in_float32(model: nn.Module) -> int:
    """Swap every :class:`ModulatedDeformConv` of ``model`` (in place) for the float32 version.

    Returns how many were swapped; already swapped modules are left alone.
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, ModulatedDeformConv) and not isinstance(module, Float32ModulatedDeformConv)
    ]
    for name, module in targets:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attribute, Float32ModulatedDeformConv.from_module(module))
    return len(targets)


def prepare_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Eval mode, and float32 deformable convs when ``dtype`` is a half type."""
    model.eval()
    if dtype in HALF_DTYPES:
        deform_convs_in_float32(model)
    return model


class EagerBackend:
    """The model called directly under ``inference_mode``; any batch size."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        self.model = prepare_model(model, dtype)
        self._dtype = dtype

    @classmethod
    def build(cls, model: nn.Module, spec: BackendSpec) -> EagerBackend:
        return cls(model, spec.dtype)

    @property
    def name(self) -> str:
        return "eager"

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)

    def estimate_memory_mb(self, input_size: tuple[int, int], batch: int) -> float:
        return estimate_activation_mb(input_size, batch, self._dtype)

    def describe(self) -> str:
        return f"eager {str(self._dtype).replace('torch.', '')}"
