"""PNG encoding is lossless and fast; the data URL is what ``return_base64`` sends."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from pipelines.encode import encode_png, to_data_url
from pipelines.errors import InferenceError
from tests import imagegen


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (65, 67), (1, 1)])
def test_encode_png_round_trips_losslessly(width: int, height: int) -> None:
    rgb = imagegen.photo_like_rgb(max(width, 2), max(height, 2))[:height, :width]
    alpha = np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8)
    rgba = np.ascontiguousarray(np.dstack([rgb, alpha]))
    decoded = Image.open(io.BytesIO(encode_png(rgba)))
    assert decoded.format == "PNG" and decoded.mode == "RGBA"
    assert np.array_equal(np.asarray(decoded), rgba)


def test_encode_png_accepts_non_contiguous_input() -> None:
    rgba = np.zeros((64, 128, 4), np.uint8)[:, ::2]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgba)))), rgba)


def test_encode_png_embeds_an_icc_profile() -> None:
    rgba = np.dstack([imagegen.photo_like_rgb(96, 64), np.full((64, 96), 200, np.uint8)])
    profile = imagegen.rgb_icc_profile()
    data = encode_png(rgba, icc_profile=profile)
    Image.open(io.BytesIO(data)).verify()  # chunk order and CRCs
    decoded = Image.open(io.BytesIO(data))
    assert decoded.info["icc_profile"] == profile
    assert np.array_equal(np.asarray(decoded), rgba)
    assert "icc_profile" not in Image.open(io.BytesIO(encode_png(rgba))).info


def test_encode_png_rejects_rgb() -> None:
    with pytest.raises(InferenceError):
        encode_png(np.zeros((8, 8, 3), np.uint8))


def test_to_data_url_is_base64_png() -> None:
    png = encode_png(np.zeros((4, 4, 4), np.uint8))
    url = to_data_url(png)
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :]) == png
