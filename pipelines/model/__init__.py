"""BiRefNet: the network, its released variants, and checkpoint loading."""

from pipelines.model.birefnet import (
    SWIN_L,
    SWIN_T,
    BiRefNet,
    BiRefNetConfig,
    CheckpointError,
    DeformSampling,
    PatchOrder,
    SwinConfig,
    checkpoint_filter_fn,
    create_model,
)

__all__ = [
    "SWIN_L",
    "SWIN_T",
    "BiRefNet",
    "BiRefNetConfig",
    "CheckpointError",
    "DeformSampling",
    "PatchOrder",
    "SwinConfig",
    "checkpoint_filter_fn",
    "create_model",
]
