from __future__ import annotations

import pytest
import torch

from tests.pipelines.model.tiny import tiny_model_with_statistics


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return tiny_model_with_statistics()
