from __future__ import annotations

import json

import pytest
import torch

from pipelines.model.deterministic import deterministic_state_dict
from tests.pipelines.model.tiny import REFERENCE_DIR, manifest_entries


def test_deterministic_weights_match_published_checksums() -> None:
    path = REFERENCE_DIR / "lite_detweights_checksums.json"
    if not path.is_file():
        pytest.skip("checksums not available")
    checksums = json.loads(path.read_text())
    entries = manifest_entries("lite")
    state = deterministic_state_dict([(k, s) for k, s, _ in entries])
    checked = 0
    for _index, key, total, abs_total, _first in checksums["entries"]:
        tensor = state[key].double()
        assert tensor.sum().item() == pytest.approx(total, rel=1e-9, abs=1e-9), key
        assert tensor.abs().sum().item() == pytest.approx(abs_total, rel=1e-9, abs=1e-9), key
        checked += 1
    assert checked == len(entries)


def test_first_entry_starts_with_documented_values() -> None:
    state = deterministic_state_dict([("bb.patch_embed.proj.weight", [96, 3, 4, 4])])
    first = state["bb.patch_embed.proj.weight"].flatten()[:4]
    expected = torch.tensor([0.0, 0.21631337702274323, 0.12296596169471741, -0.024754755198955536])
    torch.testing.assert_close(first, expected)
