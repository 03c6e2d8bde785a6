"""Decoding every supported input class to upright RGB uint8, and refusing every hostile one."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.datatypes import ImageFormat
from pipelines.decode import apply_orientation, decode_image, read_webp_size
from pipelines.errors import (
    BackgroundRemovalError,
    CorruptImageError,
    ImageBombError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidFormatError,
)
from pipelines.validate import UploadLimits
from tests import imagegen

WIDTH, HEIGHT = 160, 96


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return imagegen.photo_like_rgb(WIDTH, HEIGHT, seed=3)


@pytest.fixture(scope="module")
def soft_alpha() -> np.ndarray:
    return imagegen.subject_alpha(WIDTH, HEIGHT)


def _max_difference(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first.astype(np.int16) - second.astype(np.int16)).max())


def _assert_rgb(decoded_rgb: np.ndarray, height: int, width: int) -> None:
    assert decoded_rgb.shape == (height, width, 3)
    assert decoded_rgb.dtype == np.uint8


def test_decode_baseline_jpeg_matches_pillow(photo: np.ndarray) -> None:
    data = imagegen.jpeg_bytes(photo)
    decoded = decode_image(data)
    _assert_rgb(decoded.rgb, HEIGHT, WIDTH)
    assert decoded.alpha is None
    assert decoded.source_format is ImageFormat.JPEG
    assert _max_difference(decoded.rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) <= 2


def test_decode_progressive_jpeg(photo: np.ndarray) -> None:
    data = imagegen.jpeg_bytes(photo, progressive=True)
    decoded = decode_image(data)
    _assert_rgb(decoded.rgb, HEIGHT, WIDTH)
    assert _max_difference(decoded.rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) <= 2


def test_decode_grey_jpeg_expands_to_rgb(photo: np.ndarray) -> None:
    decoded = decode_image(imagegen.jpeg_bytes(photo[..., 1]))
    _assert_rgb(decoded.rgb, HEIGHT, WIDTH)
    assert np.array_equal(decoded.rgb[..., 0], decoded.rgb[..., 2])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_exif_orientation_like_pillow(orientation: int) -> None:
    gradient = imagegen.gradient_rgb(WIDTH, HEIGHT)
    data = imagegen.jpeg_bytes(gradient, quality=95, orientation=orientation)
    decoded = decode_image(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert decoded.rgb.shape == expected.shape
    assert _max_difference(decoded.rgb, expected) <= 2


def test_decode_exif_rotated_jpeg_has_oriented_size() -> None:
    decoded = decode_image(imagegen.jpeg_bytes(imagegen.gradient_rgb(WIDTH, HEIGHT), orientation=6))
    assert (decoded.width, decoded.height) == (HEIGHT, WIDTH)
    # Rotated 90° clockwise: the stored bottom-left (green) corner is now top-left.
    assert decoded.rgb[0, 0, 1] > 200 and decoded.rgb[0, 0, 0] < 50


@pytest.mark.parametrize("format_name", ["JPEG", "PNG", "WEBP"])
def test_decode_ignores_a_malformed_exif_block(photo: np.ndarray, format_name: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format_name, exif=b"Exif\x00\x00" + b"\xde\xad\xbe\xef" * 10, lossless=True)
    decoded = decode_image(buffer.getvalue())
    _assert_rgb(decoded.rgb, HEIGHT, WIDTH)  # as stored: no orientation to apply


def test_decode_jpeg_with_stray_bytes_before_a_marker_like_viewers(photo: np.ndarray) -> None:
    data = imagegen.jpeg_bytes(photo)
    table = data.index(b"\xff\xdb")
    damaged = data[:table] + b"\x00\x00" + data[table:]  # libjpeg: "2 extraneous bytes before marker 0xdb"
    decoded = decode_image(damaged)
    assert _max_difference(decoded.rgb, np.asarray(Image.open(io.BytesIO(damaged)).convert("RGB"))) <= 2
    assert _max_difference(decoded.rgb, decode_image(data).rgb) <= 2


@pytest.mark.parametrize("format_name", ["JPEG", "PNG", "WEBP"])
def test_decode_keeps_an_rgb_colour_profile(photo: np.ndarray, format_name: str) -> None:
    profile = imagegen.rgb_icc_profile()
    data = imagegen.encode_with_pillow(Image.fromarray(photo), format_name, icc_profile=profile)
    assert decode_image(data).icc_profile == profile
    assert decode_image(imagegen.encode_with_pillow(Image.fromarray(photo), format_name)).icc_profile is None


def test_decode_drops_a_profile_too_large_for_the_output_png(photo: np.ndarray) -> None:
    # Pillow will not open a PNG whose iCCP chunk inflates past 1 MiB: the cut-out would be unreadable.
    small = imagegen.rgb_icc_profile()
    padded = (len(small) + 2_000_000).to_bytes(4, "big") + small[4:] + bytes(2_000_000)
    data = imagegen.encode_with_pillow(Image.fromarray(photo), "JPEG", icc_profile=padded)
    assert decode_image(data).icc_profile is None


def test_decode_drops_a_profile_that_cannot_describe_rgb(photo: np.ndarray) -> None:
    grey_profile = imagegen.rgb_icc_profile(b"GRAY")
    grey = imagegen.encode_with_pillow(Image.fromarray(photo[..., 0]), "JPEG", icc_profile=grey_profile)
    assert decode_image(grey).icc_profile is None
    cmyk = imagegen.cmyk_jpeg_bytes(photo, icc_profile=imagegen.swapped_cmyk_icc_profile())
    assert decode_image(cmyk).icc_profile is None  # converted to sRGB instead


def test_decode_cmyk_jpeg_without_profile_uses_naive_conversion(photo: np.ndarray) -> None:
    decoded = decode_image(imagegen.cmyk_jpeg_bytes(photo))
    _assert_rgb(decoded.rgb, HEIGHT, WIDTH)
    assert np.abs(decoded.rgb.astype(np.int16) - photo).mean() < 3


def test_decode_cmyk_jpeg_honours_embedded_icc_profile() -> None:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:] = (0, 255, 255)  # full cyan ink, no other ink
    data = imagegen.cmyk_jpeg_bytes(rgb, icc_profile=imagegen.swapped_cmyk_icc_profile())
    decoded = decode_image(data)
    # The test profile renders cyan ink as red; the naive conversion would give cyan.
    assert _max_difference(decoded.rgb[32, 32], np.array([255, 0, 0], np.uint8)) <= 12


def test_decode_png_rgb_is_exact(photo: np.ndarray) -> None:
    decoded = decode_image(imagegen.png_bytes(photo))
    assert np.array_equal(decoded.rgb, photo)
    assert decoded.source_format is ImageFormat.PNG


def test_decode_16bit_grey_png_scales_instead_of_saturating() -> None:
    ramp = np.tile(np.linspace(0, 65535, WIDTH).astype(np.uint16), (HEIGHT, 1))
    decoded = decode_image(imagegen.png_bytes(ramp))
    assert np.array_equal(decoded.rgb[..., 0], (ramp >> 8).astype(np.uint8))
    assert int(decoded.rgb[0, WIDTH // 2, 0]) in (127, 128)


def test_decode_16bit_grey_png_keeps_its_transparent_colour() -> None:
    ramp = np.tile(np.linspace(0, 65535, WIDTH).astype(np.uint16), (HEIGHT, 1))
    ramp[:, : WIDTH // 2] = 1234
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG", transparency=1234)
    decoded = decode_image(buffer.getvalue())
    assert decoded.alpha is not None
    assert decoded.alpha[:, : WIDTH // 2].max() == 0 and decoded.alpha[:, WIDTH // 2 :].min() == 255
    assert np.array_equal(decoded.rgb[:, WIDTH // 2 :, 0], (ramp[:, WIDTH // 2 :] >> 8).astype(np.uint8))


@pytest.mark.parametrize("bit_depth", [1, 2, 4, 8])
def test_decode_low_bit_grey_png_keeps_its_transparent_colour(bit_depth: int) -> None:
    # tRNS holds the key at the file's depth; the samples come out scaled to 8 bits (4-bit 14 → 238).
    top = (1 << bit_depth) - 1
    key = top - 1 if bit_depth > 1 else 0
    samples = np.tile(np.arange(WIDTH) * (top + 1) // WIDTH, (HEIGHT, 1))
    samples[samples == key] = top
    samples[10:30, 40:90] = key  # a transparent hole
    decoded = decode_image(imagegen.grey_png_with_key(samples, bit_depth, key))
    expected_alpha = np.where(samples == key, 0, 255)
    assert decoded.alpha is not None and np.array_equal(decoded.alpha, expected_alpha)
    assert np.array_equal(decoded.rgb[..., 0], samples * (255 // top))


def test_decode_16bit_rgb_png_scales_instead_of_saturating(photo: np.ndarray) -> None:
    decoded = decode_image(imagegen.png16_rgb_bytes(photo.astype(np.uint16) * 257))
    assert np.array_equal(decoded.rgb, photo)


def test_decode_rgb_png_keeps_its_transparent_colour(photo: np.ndarray) -> None:
    rgb = photo.copy()
    rgb[:, :10] = (1, 2, 3)
    decoded = decode_image(imagegen.png_bytes(rgb, transparency=(1, 2, 3)))
    assert decoded.alpha is not None
    assert decoded.alpha[:, :10].max() == 0 and (decoded.alpha == 0).sum() == (rgb == (1, 2, 3)).all(-1).sum()
    assert np.array_equal(decoded.rgb, rgb)


def test_decode_16bit_rgb_png_compares_its_transparent_colour_at_16_bits(photo: np.ndarray) -> None:
    rgb16 = photo.astype(np.uint16) * 257
    rgb16[:, :10] = (0x0102, 0x0304, 0x0506)
    rgb16[:, 10:20] = (0x0100, 0x0300, 0x0500)  # the same high bytes: must stay opaque
    key = b"".join(v.to_bytes(2, "big") for v in (0x0102, 0x0304, 0x0506))
    decoded = decode_image(imagegen.with_png_chunk(imagegen.png16_rgb_bytes(rgb16), b"tRNS", key))
    assert decoded.alpha is not None
    assert decoded.alpha[:, :10].max() == 0 and decoded.alpha[:, 10:].min() == 255
    assert np.array_equal(decoded.rgb, (rgb16 >> 8).astype(np.uint8))


def test_decode_animated_rgb_png_keys_its_first_frame() -> None:
    key = (7, 8, 9)
    first = np.full((80, 100, 3), 100, np.uint8)
    first[:20, :20] = key
    later = np.full((80, 100, 3), 100, np.uint8)
    later[-20:, -20:] = key
    data = imagegen.encode_with_pillow(
        Image.fromarray(first), "PNG", save_all=True, append_images=[Image.fromarray(later)] * 2,
        transparency=key, default_image=True,
    )
    decoded = decode_image(data)
    assert decoded.animated and np.array_equal(decoded.rgb, first)
    assert decoded.alpha is not None
    assert decoded.alpha[:20, :20].max() == 0 and decoded.alpha[-20:, -20:].min() == 255


def test_decode_palette_png_with_transparency_keeps_alpha() -> None:
    decoded = decode_image(imagegen.palette_png_with_transparency(128, 64))
    assert decoded.alpha is not None
    assert decoded.alpha[:, :64].min() == 255 and decoded.alpha[:, 64:].max() == 0
    assert tuple(decoded.rgb[10, 10]) == (255, 0, 0)


def test_decode_rgba_png_returns_straight_rgb_and_alpha(photo: np.ndarray, soft_alpha: np.ndarray) -> None:
    decoded = decode_image(imagegen.png_bytes(np.dstack([photo, soft_alpha])))
    assert np.array_equal(decoded.rgb, photo)
    assert decoded.alpha is not None and np.array_equal(decoded.alpha, soft_alpha)


def test_decode_grey_alpha_png_keeps_alpha(photo: np.ndarray, soft_alpha: np.ndarray) -> None:
    decoded = decode_image(imagegen.png_bytes(np.dstack([photo[..., 0], soft_alpha])))
    assert np.array_equal(decoded.rgb[..., 2], photo[..., 0])
    assert decoded.alpha is not None and np.array_equal(decoded.alpha, soft_alpha)


def test_decode_fully_opaque_rgba_drops_alpha(photo: np.ndarray) -> None:
    opaque = np.full((HEIGHT, WIDTH), 255, np.uint8)
    assert decode_image(imagegen.png_bytes(np.dstack([photo, opaque]))).alpha is None


def test_decode_webp_lossless_rgba(photo: np.ndarray, soft_alpha: np.ndarray) -> None:
    decoded = decode_image(imagegen.webp_bytes(np.dstack([photo, soft_alpha])))
    assert decoded.source_format is ImageFormat.WEBP
    assert decoded.alpha is not None and np.array_equal(decoded.alpha, soft_alpha)
    visible = soft_alpha > 0
    assert np.array_equal(decoded.rgb[visible], photo[visible])


def test_decode_webp_lossy(photo: np.ndarray) -> None:
    decoded = decode_image(imagegen.webp_bytes(photo, lossless=False))
    _assert_rgb(decoded.rgb, HEIGHT, WIDTH)
    assert np.abs(decoded.rgb.astype(np.int16) - photo).mean() < 12


def test_decode_bmp(photo: np.ndarray) -> None:
    decoded = decode_image(imagegen.bmp_bytes(photo))
    assert decoded.source_format is ImageFormat.BMP
    assert np.array_equal(decoded.rgb, photo)


def test_decode_palette_bmp_expands_grey(photo: np.ndarray) -> None:
    decoded = decode_image(imagegen.bmp_bytes(photo[..., 0]))
    assert np.array_equal(decoded.rgb[..., 1], photo[..., 0])


@pytest.mark.parametrize("format_name", ["WEBP", "PNG"])
def test_decode_animated_uses_first_frame(photo: np.ndarray, format_name: str) -> None:
    data = imagegen.animated_bytes([photo, 255 - photo, photo // 2], format_name)
    decoded = decode_image(data)
    assert decoded.animated is True
    assert _max_difference(decoded.rgb, photo) <= 1


def test_decode_still_image_is_not_animated(photo: np.ndarray) -> None:
    assert decode_image(imagegen.webp_bytes(photo)).animated is False


def test_decode_rejects_real_bomb_png() -> None:
    data = imagegen.bomb_png(16_000)
    with pytest.raises(ImageBombError) as caught:
        decode_image(data)
    fields = caught.value.fields
    assert caught.value.status_code == 400
    assert fields["file_size_bytes"] == len(data)
    assert fields["decompressed_size_bytes"] == 16_000 * 16_000 * 4
    assert fields["ratio"] > 1000


def test_decode_rejects_flat_12mp_png_at_default_ratio_as_spec_says() -> None:
    with pytest.raises(ImageBombError):
        decode_image(imagegen.flat_png(4000, 3000))


def test_decode_accepts_flat_12mp_png_with_raised_ratio() -> None:
    decoded = decode_image(imagegen.flat_png(4000, 3000), UploadLimits(max_bomb_ratio=100_000.0))
    assert (decoded.width, decoded.height) == (4000, 3000)


def test_decode_rejects_dimensions_beyond_pillow_limit_as_typed_error() -> None:
    # 20000×20000 = 400 MP, over Pillow's own DecompressionBombError threshold; bogus IDAT.
    data = imagegen.handmade_png(20_000, 20_000, 8, 2, bytes(200_000))
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data, UploadLimits(max_bomb_ratio=1e9))
    assert caught.value.fields["width"] == 20_000


def test_decode_rejects_webp_with_huge_canvas_before_opening_it() -> None:
    header = b"VP8X" + (10).to_bytes(4, "little") + bytes(4) + (16382).to_bytes(3, "little") * 2
    data = b"RIFF" + (4 + len(header) + 1000).to_bytes(4, "little") + b"WEBP" + header + bytes(1000)
    assert read_webp_size(data) == (16383, 16383)
    with pytest.raises(ImageBombError):
        decode_image(data)


def test_decode_refuses_a_jpeg_scan_flood_before_decoding(photo: np.ndarray) -> None:
    flood = imagegen.jpeg_with_repeated_scan(imagegen.jpeg_bytes(photo, progressive=True), 20_000)
    with pytest.raises(ImageBombError, match="scans"):
        decode_image(flood)


def test_decode_still_decodes_a_jpeg_with_many_scans_under_the_cap(photo: np.ndarray) -> None:
    # The repeated empty scans break the progression (libjpeg warns, some pixels change), but the
    # file is a JPEG libjpeg decodes, and under the cap it is not refused.
    decoded = decode_image(imagegen.jpeg_with_repeated_scan(imagegen.jpeg_bytes(photo, progressive=True), 300))
    assert decoded.rgb.shape == (HEIGHT, WIDTH, 3)


def test_decode_rejects_too_small_image() -> None:
    with pytest.raises(ImageTooSmallError) as caught:
        decode_image(imagegen.png_bytes(imagegen.photo_like_rgb(63, 200)))
    assert (caught.value.fields["width"], caught.value.fields["height"]) == (63, 200)


def test_decode_checks_8k_limit_on_header() -> None:
    data = imagegen.handmade_png(7681, 64, 8, 0, bytes(1000))
    with pytest.raises(ImageTooLargeError):
        decode_image(data, UploadLimits(max_bomb_ratio=1e9))


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_decode_rejects_truncated_png(photo: np.ndarray, keep: float) -> None:
    with pytest.raises(CorruptImageError) as caught:
        decode_image(imagegen.truncated(imagegen.png_bytes(photo), keep))
    assert caught.value.status_code == 400
    assert caught.value.error_code == "CORRUPT_IMAGE"


@pytest.mark.parametrize("progressive", [False, True])
def test_decode_rejects_truncated_jpeg(photo: np.ndarray, progressive: bool) -> None:
    with pytest.raises(CorruptImageError):
        decode_image(imagegen.truncated(imagegen.jpeg_bytes(photo, progressive=progressive), 0.6))


def test_decode_rejects_truncated_webp(photo: np.ndarray) -> None:
    with pytest.raises(CorruptImageError):
        decode_image(imagegen.truncated(imagegen.webp_bytes(photo), 0.6))


def test_decode_rejects_truncated_bmp(photo: np.ndarray) -> None:
    with pytest.raises(CorruptImageError):
        decode_image(imagegen.truncated(imagegen.bmp_bytes(photo), 0.6))


def test_decode_rejects_jpeg_magic_followed_by_pdf() -> None:
    polyglot = b"\xff\xd8\xff\xe0" + imagegen.minimal_pdf()
    with pytest.raises(CorruptImageError):
        decode_image(polyglot)


def test_decode_reads_png_with_zip_appended_as_png(photo: np.ndarray) -> None:
    polyglot = imagegen.png_bytes(photo) + imagegen.minimal_zip()
    assert np.array_equal(decode_image(polyglot).rgb, photo)


def test_decode_rejects_gif_even_when_named_png() -> None:
    with pytest.raises(InvalidFormatError) as caught:
        decode_image(imagegen.minimal_gif())
    assert caught.value.fields["received_format"] == "GIF"


def test_decode_error_messages_carry_no_internal_detail(photo: np.ndarray) -> None:
    with pytest.raises(BackgroundRemovalError) as caught:
        decode_image(imagegen.truncated(imagegen.png_bytes(photo)))
    text = str(caught.value.to_body())
    assert "/" not in text and "Traceback" not in text and "PIL" not in text


def test_apply_orientation_leaves_unknown_values_alone(photo: np.ndarray) -> None:
    assert apply_orientation(photo, 9) is photo
    assert apply_orientation(photo, None) is photo
