from __future__ import annotations

import pytest
import torch

from scripts.bench_resize import CANDIDATES, captured_resizes, interpolation_matrix
from tests.pipelines.model.tiny import tiny_model_with_statistics


@pytest.mark.parametrize(("source", "target"), [((64, 48), (8, 8)), ((5, 7), (16, 9)), ((9, 9), (1, 3))])
def test_candidates_resize_as_the_network_does(source: tuple[int, int], target: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *source, dtype=torch.float64)
    reference = CANDIDATES["nchw"](x, target)
    for name in ("channels_last", "matmul"):
        torch.testing.assert_close(CANDIDATES[name](x, target), reference, rtol=0, atol=1e-12, msg=name)


def test_interpolation_rows_are_two_tap_weights_summing_to_one() -> None:
    matrix = interpolation_matrix(10, 4, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(matrix.sum(dim=1), torch.ones(4, dtype=torch.float64))
    assert ((matrix != 0).sum(dim=1) <= 2).all()
    assert matrix[0, 0] == 1 and matrix[-1, -1] == 1  # align_corners: the corners map to the corners


def test_captured_resizes_are_the_forward_passes_resizes() -> None:
    calls = captured_resizes(tiny_model_with_statistics().eval(), torch.randn(2, 3, 64, 64))
    assert len(calls) == 12  # input, 4 half-resolution features, 3 to the coarsest level, 4 decoder
    assert calls[0] == ((2, 3, 64, 64), (32, 32))  # the half-resolution input
    assert calls[-1][1] == (64, 64)  # the decoder's last level back to the input size
