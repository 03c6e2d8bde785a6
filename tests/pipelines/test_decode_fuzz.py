"""Property: whatever the bytes, decoding either succeeds or raises one of our typed errors."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.decode import decode_image
from pipelines.errors import BackgroundRemovalError
from tests import imagegen

_PHOTO = imagegen.photo_like_rgb(72, 64, seed=7)
_ALPHA = imagegen.subject_alpha(72, 64)
SEEDS = [
    imagegen.jpeg_bytes(_PHOTO),
    imagegen.jpeg_bytes(_PHOTO, progressive=True, orientation=6),
    imagegen.png_bytes(np.dstack([_PHOTO, _ALPHA])),
    imagegen.png_bytes(_PHOTO[..., 0].astype(np.uint16) * 257),
    imagegen.palette_png_with_transparency(64, 64),
    imagegen.webp_bytes(np.dstack([_PHOTO, _ALPHA])),
    imagegen.webp_bytes(_PHOTO, lossless=False),
    imagegen.bmp_bytes(_PHOTO),
    imagegen.animated_bytes([_PHOTO, 255 - _PHOTO], "PNG"),
]

FUZZ_SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def _decode_or_typed_error(data: bytes) -> None:
    try:
        decoded = decode_image(data)
    except BackgroundRemovalError as error:
        assert 400 <= error.status_code < 500
        return
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3


@FUZZ_SETTINGS
@given(st.binary(max_size=2048))
def test_decode_random_bytes_only_raise_typed_errors(data: bytes) -> None:
    _decode_or_typed_error(data)


@FUZZ_SETTINGS
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.floats(0.05, 1.0),
)
def test_decode_mutated_images_only_raise_typed_errors(seed: bytes, edits: list[tuple[float, int]], cut: float) -> None:
    mutated = bytearray(seed[: max(16, int(len(seed) * cut))])
    for position, value in edits:
        mutated[int(position * len(mutated))] = value
    _decode_or_typed_error(bytes(mutated))
