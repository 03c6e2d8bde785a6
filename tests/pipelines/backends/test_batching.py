from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.backends.batching import PinnedStaging, padded_batch_size, plan_chunks


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (8, 8)])
def test_padded_batch_size_is_the_nearest_compiled_size_above(n: int, expected: int) -> None:
    assert padded_batch_size(n, (1, 2, 4, 8)) == expected


def test_padded_batch_size_without_compiled_sizes_is_the_batch_itself() -> None:
    assert padded_batch_size(7, ()) == 7


def test_padded_batch_size_rejects_batches_above_the_largest_size() -> None:
    with pytest.raises(ValueError, match="largest compiled batch size 4"):
        padded_batch_size(5, (1, 2, 4))


def test_padded_batch_size_rejects_empty_batches() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        padded_batch_size(0, (1, 2))


def test_plan_chunks_fills_the_largest_size_then_pads_the_rest() -> None:
    assert plan_chunks(11, (1, 2, 4, 8)) == [(8, 8), (3, 4)]
    assert plan_chunks(16, (1, 2, 4, 8)) == [(8, 8), (8, 8)]
    assert plan_chunks(3, (1, 2, 4)) == [(3, 4)]


def test_plan_chunks_without_compiled_sizes_is_one_unpadded_chunk() -> None:
    assert plan_chunks(13, ()) == [(13, 13)]


def test_plan_chunks_covers_every_image_once() -> None:
    for n in range(1, 40):
        chunks = plan_chunks(n, (1, 2, 4, 8, 16))
        assert sum(count for count, _ in chunks) == n
        assert all(count <= padded for count, padded in chunks)


def test_staging_pads_with_zero_rows_and_keeps_the_images() -> None:
    staging = PinnedStaging(pin=False)
    images = np.full((3, 4, 5, 3), 7, dtype=np.uint8)
    out = staging.upload(images, torch.device("cpu"), padded=4)
    assert out.shape == (4, 4, 5, 3) and out.dtype == torch.uint8
    assert int(out[:3].min()) == 7 and int(out[3].max()) == 0


def test_staging_reuses_its_buffer_for_smaller_batches() -> None:
    staging = PinnedStaging(pin=False)
    staging.upload(np.zeros((4, 2, 2, 3), np.uint8), torch.device("cpu"))
    first = staging._buffer
    out = staging.upload(np.ones((2, 2, 2, 3), np.uint8), torch.device("cpu"))
    assert staging._buffer is first and staging.capacity == 4
    assert int(out.min()) == 1 and out.shape[0] == 2


def test_staging_refuses_to_pad_below_the_batch() -> None:
    with pytest.raises(ValueError, match="cannot pad"):
        PinnedStaging(pin=False).upload(np.zeros((3, 2, 2, 3), np.uint8), torch.device("cpu"), padded=2)
