from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.model.birefnet import BiRefNetConfig, SwinConfig, create_model

REFERENCE_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "reference"

# The real architecture, shrunk: every block and branch present, small widths and depths.
TINY = BiRefNetConfig(
    backbone=SwinConfig(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), window_size=4),
    decoder_width=8,
    aspp_width=8,
    gradient_width=4,
)


def manifest_entries(variant: str) -> list[tuple[str, list[int], str]]:
    path = REFERENCE_DIR / f"{variant}_state_dict_manifest.json"
    if not path.is_file():
        pytest.skip(f"reference manifest not found at {path}")
    return [tuple(e) for e in json.loads(path.read_text())["entries"]]  # type: ignore[misc]


def tiny_model_with_statistics() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(TINY)
    # Non-trivial BatchNorm statistics so that every branch matters.
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
    return model
