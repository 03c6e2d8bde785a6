"""Dynamic batching of the Inference stage: the ``user_config`` knobs and the pure halves of a
batch (gather the model inputs, hand each caller its own result)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.datatypes import Matte, PreparedImage
from serve_app.records import Segmentation


class BatchConfig(BaseModel):
    """Inference's ``user_config``, applied by ``reconfigure()`` without restarting the replica.

    Keep ``max_ongoing_requests`` of the deployment at least twice ``max_batch_size``, or batches
    never fill (Serve only warns).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=4, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0, le=10)


def gather_model_inputs(batch: Sequence[PreparedImage], input_size: tuple[int, int]) -> list[np.ndarray]:
    """The ``[h, w, 3]`` uint8 model inputs of a batch, checked against the model's input size.

    Raises:
        ValueError: an input was resized for another model (a config mismatch between the
            Preprocess and Inference stages); the ingress answers it with a generic 500.
    """
    height, width = input_size
    inputs = []
    for prepared in batch:
        array = prepared.model_input
        if array.dtype != np.uint8 or array.shape != (height, width, 3):
            raise ValueError(f"model input {array.shape} {array.dtype} does not match {(height, width, 3)} uint8")
        inputs.append(array)
    return inputs


def split_mattes(mattes: Sequence[Matte], expected: int, *, tensorrt_enabled: bool) -> list[Segmentation]:
    """One :class:`Segmentation` per caller, in the order of the batch.

    Raises:
        ValueError: the model returned a different number of mattes than it was given images.
    """
    if len(mattes) != expected:
        raise ValueError(f"the model returned {len(mattes)} mattes for {expected} images")
    return [Segmentation(matte=matte, tensorrt_enabled=tensorrt_enabled, batch_size=expected) for matte in mattes]
