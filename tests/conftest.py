"""Shared pytest hooks: tests marked ``needs_cuda`` are skipped on machines without a CUDA GPU."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any("needs_cuda" in item.keywords for item in items):
        return
    import torch  # only when a GPU test was collected: torch takes seconds to import

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)
