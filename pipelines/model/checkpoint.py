"""Reading checkpoint files and loading them strictly into a BiRefNet.

Formats: ``.safetensors`` (Hugging Face releases) and ``.pth``/``.pt``/``.bin`` (GitHub releases,
plain state dicts read with ``weights_only=True``). Key prefixes, dtypes and the architecture are
handled by :func:`pipelines.model.birefnet.checkpoint_filter_fn`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines.model.birefnet import BiRefNet, CheckpointError, checkpoint_filter_fn

logger = logging.getLogger(__name__)

_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


@dataclass(frozen=True)
class LoadReport:
    """What loading a checkpoint did, for logs and ``/health``."""

    path: str
    tensors: int
    training_only_tensors: int
    stripped_prefixes: tuple[str, ...]
    cast_from: tuple[str, ...]

    def summary(self) -> str:
        parts = [f"{self.tensors} tensors"]
        if self.training_only_tensors:
            parts.append(f"{self.training_only_tensors} of them training-only heads (kept, unused)")
        if self.stripped_prefixes:
            parts.append("stripped prefixes " + "+".join(self.stripped_prefixes))
        if self.cast_from:
            parts.append("cast from " + ",".join(self.cast_from))
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from disk onto the CPU without executing pickled code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix in _TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors come in many types
            raise CheckpointError(f"cannot read {path.name} as a weights-only PyTorch state dict: {exc}") from exc
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path.name} does not hold a state dict (found {type(obj).__name__})")
        return dict(obj)
    raise CheckpointError(f"unsupported checkpoint format {path.suffix!r}; use .safetensors or .pth")


def load_state_dict_into(model: BiRefNet, state_dict: Mapping[str, torch.Tensor], source: str = "") -> LoadReport:
    """Filter ``state_dict`` and load it with ``strict=True``."""
    filtered, report = checkpoint_filter_fn(state_dict, model)
    model.load_state_dict(filtered, strict=True)
    return LoadReport(
        path=source,
        tensors=len(filtered),
        training_only_tensors=report.training_only_keys,
        stripped_prefixes=report.stripped_prefixes,
        cast_from=report.cast_dtypes,
    )


def load_checkpoint(model: BiRefNet, path: str | Path) -> LoadReport:
    """Load a checkpoint file into ``model`` strictly; raise :class:`CheckpointError` if it does not fit."""
    report = load_state_dict_into(model, read_state_dict(path), source=str(path))
    logger.info("loaded %s: %s", Path(path).name, report.summary())
    return report
