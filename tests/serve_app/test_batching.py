"""Gathering a batch for the segmenter and handing each caller its own matte."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.datatypes import DecodedImage, ImageFormat, Matte, PreparedImage
from serve_app.batching import BatchConfig, gather_model_inputs, split_mattes


def prepared(height: int = 8, width: int = 8, dtype: type = np.uint8) -> PreparedImage:
    image = DecodedImage(np.zeros((20, 30, 3), np.uint8), None, ImageFormat.PNG)
    return PreparedImage(image=image, model_input=np.zeros((height, width, 3), dtype))


def test_gather_keeps_the_batch_order() -> None:
    first, second = prepared(), prepared()
    inputs = gather_model_inputs([first, second], (8, 8))
    assert inputs[0] is first.model_input and inputs[1] is second.model_input


@pytest.mark.parametrize("bad", [prepared(8, 9), prepared(dtype=np.float32)])
def test_gather_rejects_inputs_for_another_model(bad: PreparedImage) -> None:
    with pytest.raises(ValueError, match="does not match"):
        gather_model_inputs([prepared(), bad], (8, 8))


def test_split_gives_one_segmentation_per_caller() -> None:
    mattes = [Matte(np.full((8, 8), value, np.uint8), "BiRefNet-demo", 12.0) for value in (0, 255)]
    results = split_mattes(mattes, 2, tensorrt_enabled=False)
    assert [int(r.matte.alpha[0, 0]) for r in results] == [0, 255]
    assert all(r.batch_size == 2 and r.tensorrt_enabled is False for r in results)


def test_split_rejects_a_short_answer() -> None:
    with pytest.raises(ValueError, match="1 mattes for 2 images"):
        split_mattes([Matte(np.zeros((8, 8), np.uint8), "m")], 2, tensorrt_enabled=False)


def test_batch_config_forbids_unknown_keys() -> None:
    assert BatchConfig.model_validate({"max_batch_size": 8}).batch_wait_timeout_s == 0.01
    with pytest.raises(ValidationError, match="max_batch"):
        BatchConfig.model_validate({"max_batch": 8})
