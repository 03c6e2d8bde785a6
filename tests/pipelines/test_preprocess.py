"""Model input: antialiased bilinear resize close to Pillow's, alpha composited on grey."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.datatypes import DecodedImage, ImageFormat
from pipelines.errors import CorruptImageError
from pipelines.preprocess import Preprocessor, composite_on_grey, model_view, resize_for_model
from tests import imagegen


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (640, 480), (300, 700)])
def test_resize_for_model_is_within_two_levels_of_pillow_bilinear(width: int, height: int) -> None:
    photo = imagegen.photo_like_rgb(width, height, seed=5)
    ours = resize_for_model(photo, (512, 384))
    pillow = np.asarray(Image.fromarray(photo).resize((384, 512), Image.Resampling.BILINEAR))
    assert ours.shape == (512, 384, 3) and ours.dtype == np.uint8
    assert int(np.abs(ours.astype(np.int16) - pillow).max()) <= 2


def test_resize_for_model_ignores_aspect_ratio() -> None:
    assert resize_for_model(imagegen.photo_like_rgb(200, 100), (1024, 1024)).shape == (1024, 1024, 3)


def test_resize_for_model_returns_input_size_unchanged() -> None:
    photo = imagegen.photo_like_rgb(128, 64)
    assert np.array_equal(resize_for_model(photo, (64, 128)), photo)


def test_composite_on_grey_rounds_like_float_reference() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    alpha = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    reference = np.round((rgb * (alpha[..., None] / 255.0)) + 128 * (1 - alpha[..., None] / 255.0))
    assert int(np.abs(composite_on_grey(rgb, alpha) - reference).max()) <= 1


def test_model_view_shows_transparent_pixels_as_grey() -> None:
    rgb = np.zeros((64, 64, 3), np.uint8)
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, :32] = 255
    view = model_view(DecodedImage(rgb=rgb, alpha=alpha, source_format=ImageFormat.PNG))
    assert view[:, :32].max() == 0 and view[:, 32:].min() == 128


def test_preprocessor_prepares_uint8_model_input_and_keeps_original() -> None:
    photo = imagegen.photo_like_rgb(320, 200)
    prepared = Preprocessor((256, 192)).prepare(imagegen.png_bytes(photo))
    assert prepared.model_input.shape == (256, 192, 3) and prepared.model_input.dtype == np.uint8
    assert np.array_equal(prepared.image.rgb, photo)


def test_preprocessor_composites_rgba_for_model_only() -> None:
    photo = np.full((96, 96, 3), 255, np.uint8)
    alpha = np.zeros((96, 96), np.uint8)
    prepared = Preprocessor((64, 64)).prepare(imagegen.png_bytes(np.dstack([photo, alpha])))
    assert int(prepared.model_input.max()) == 128
    assert int(prepared.image.rgb.min()) == 255


def test_preprocessor_raises_typed_error_on_corrupt_upload() -> None:
    with pytest.raises(CorruptImageError):
        Preprocessor((64, 64)).prepare(imagegen.truncated(imagegen.png_bytes(imagegen.photo_like_rgb(96, 96))))


def test_preprocessor_rejects_non_positive_size() -> None:
    with pytest.raises(ValueError):
        Preprocessor((0, 1024))
