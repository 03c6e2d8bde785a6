"""Upload checks: size, magic bytes and header dimensions (spec §3.2, §3.3, §6.1)."""

from __future__ import annotations

import pytest
from PIL import Image

from pipelines.datatypes import ImageFormat
from pipelines.errors import (
    FileTooLargeError,
    ImageBombError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidFormatError,
)
from pipelines.validate import (
    UploadLimits,
    check_dimensions,
    check_jpeg_scans,
    check_upload,
    count_jpeg_scans,
    sniff_format,
)
from tests import imagegen

SMALL = imagegen.photo_like_rgb(96, 80)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (imagegen.jpeg_bytes(SMALL), ImageFormat.JPEG),
        (imagegen.png_bytes(SMALL), ImageFormat.PNG),
        (imagegen.webp_bytes(SMALL), ImageFormat.WEBP),
        (imagegen.bmp_bytes(SMALL), ImageFormat.BMP),
    ],
    ids=["jpeg", "png", "webp", "bmp"],
)
def test_check_upload_recognises_supported_formats_by_magic_bytes(data: bytes, expected: ImageFormat) -> None:
    assert check_upload(data) is expected


@pytest.mark.parametrize(
    ("data", "received"),
    [
        (imagegen.minimal_pdf(), "PDF"),
        (imagegen.minimal_gif(), "GIF"),
        (imagegen.minimal_tiff(), "TIFF"),
        (imagegen.minimal_svg(), "SVG"),
        (imagegen.minimal_heic_header(), "HEIC"),
        (imagegen.minimal_zip(), "ZIP"),
        (b"hello, this is plain text\n", "TEXT"),
        (b"", "EMPTY"),
        (bytes(range(256)) * 4, "UNKNOWN"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32), "UNKNOWN"),
        (b"BM this is text that starts like a bitmap", "TEXT"),
    ],
    ids=["pdf", "gif", "tiff", "svg", "heic", "zip", "text", "empty", "binary", "wav", "bm-text"],
)
def test_check_upload_rejects_unsupported_format_naming_it(data: bytes, received: str) -> None:
    with pytest.raises(InvalidFormatError) as caught:
        check_upload(data)
    error = caught.value
    assert error.status_code == 400
    assert error.error_code == "INVALID_FORMAT"
    assert error.fields["received_format"] == received
    assert error.fields["supported_formats"] == ["JPEG", "PNG", "WEBP", "BMP"]


def test_check_upload_rejects_file_over_ten_megabytes_with_413() -> None:
    data = imagegen.jpeg_bytes(SMALL) + bytes(10 * 1024 * 1024)
    with pytest.raises(FileTooLargeError) as caught:
        check_upload(data)
    body = caught.value.to_body()
    assert caught.value.status_code == 413
    assert body["error_code"] == "FILE_TOO_LARGE"
    assert body["file_size_mb"] == 10.1  # rounded up: over the limit, never shown equal to it
    assert body["max_size_mb"] == 10.0


def test_check_upload_accepts_exactly_ten_megabytes() -> None:
    data = imagegen.jpeg_bytes(SMALL)
    data += bytes(10 * 1024 * 1024 - len(data))
    assert check_upload(data) is ImageFormat.JPEG


def test_check_upload_checks_size_before_format() -> None:
    with pytest.raises(FileTooLargeError):
        check_upload(b"%PDF" + bytes(11 * 1024 * 1024))


def test_sniff_format_ignores_everything_but_the_bytes() -> None:
    # No content type or file name exists at this layer: a PNG is a PNG whatever it was called.
    assert sniff_format(imagegen.png_bytes(SMALL)) is ImageFormat.PNG


def test_check_dimensions_rejects_side_below_64() -> None:
    with pytest.raises(ImageTooSmallError) as caught:
        check_dimensions(63, 500, 10_000)
    assert caught.value.status_code == 400
    assert caught.value.error_code == "IMAGE_TOO_SMALL"
    assert caught.value.fields["width"] == 63
    assert caught.value.fields["limits"]["min_side"] == 64


@pytest.mark.parametrize(("width", "height"), [(7680, 4320), (4320, 7680), (64, 64)])
def test_check_dimensions_accepts_8k_in_either_orientation(width: int, height: int) -> None:
    check_dimensions(width, height, 5_000_000)


@pytest.mark.parametrize(("width", "height"), [(7681, 100), (100, 7681), (4321, 4321)])
def test_check_dimensions_rejects_beyond_8k(width: int, height: int) -> None:
    with pytest.raises(ImageTooLargeError) as caught:
        check_dimensions(width, height, 5_000_000)
    assert caught.value.error_code == "IMAGE_TOO_LARGE"
    assert (caught.value.fields["width"], caught.value.fields["height"]) == (width, height)
    assert caught.value.fields["limits"]["max_long_side"] == 7680


def test_check_dimensions_rejects_over_max_pixels() -> None:
    limits = UploadLimits(max_pixels=1_000_000)
    with pytest.raises(ImageTooLargeError) as caught:
        check_dimensions(1001, 1000, 1_000_000, limits)
    assert caught.value.fields["limits"]["max_pixels"] == 1_000_000


def test_check_dimensions_rejects_ratio_over_1000_as_bomb() -> None:
    with pytest.raises(ImageBombError) as caught:
        check_dimensions(1000, 1000, 3999)
    body = caught.value.to_body()
    assert caught.value.status_code == 400
    assert body["error_code"] == "IMAGE_BOMB"
    assert body["file_size_bytes"] == 3999
    assert body["decompressed_size_bytes"] == 4_000_000
    assert body["ratio"] == pytest.approx(1000.3, abs=0.05)


def test_check_dimensions_accepts_ratio_of_exactly_1000() -> None:
    check_dimensions(1000, 1000, 4000)


def test_check_dimensions_bomb_ratio_is_configurable() -> None:
    check_dimensions(1000, 1000, 3999, UploadLimits(max_bomb_ratio=2000.0))


def test_check_dimensions_reports_bomb_before_too_large() -> None:
    with pytest.raises(ImageBombError):
        check_dimensions(30_000, 30_000, 1_000)


def test_count_jpeg_scans_counts_baseline_and_progressive_scans() -> None:
    rgb = imagegen.photo_like_rgb(96, 64)
    assert count_jpeg_scans(imagegen.jpeg_bytes(rgb), stop_after=500) == 1
    assert 6 <= count_jpeg_scans(imagegen.jpeg_bytes(rgb, progressive=True), stop_after=500) <= 12


def test_count_jpeg_scans_skips_marker_bytes_inside_segments() -> None:
    # A comment full of start-of-scan byte pairs, as an EXIF thumbnail or ICC profile can hold.
    image = Image.fromarray(imagegen.photo_like_rgb(96, 64))
    data = imagegen.encode_with_pillow(image, "JPEG", comment=b"\xff\xda" * 2000)
    assert data.count(b"\xff\xda") > 2000
    assert count_jpeg_scans(data, stop_after=500) == 1


def test_count_jpeg_scans_stops_after_the_limit() -> None:
    flood = imagegen.jpeg_with_repeated_scan(imagegen.jpeg_bytes(imagegen.photo_like_rgb(96, 64)), 5000)
    assert count_jpeg_scans(flood, stop_after=500) == 501


def test_count_jpeg_scans_is_not_fooled_by_a_stray_ff00_before_the_scans() -> None:
    # libjpeg skips FF 00 between segments as stray bytes; read as a marker with a length, it would
    # hide the next 64 KB (and the scan flood in it) from the count.
    flood = imagegen.jpeg_with_repeated_scan(imagegen.jpeg_bytes(imagegen.photo_like_rgb(96, 64)), 2000)
    sos = flood.index(b"\xff\xda")
    hidden = flood[:sos] + b"\xff\x00" + min(len(flood) - sos, 0xFFFF).to_bytes(2, "big") + flood[sos:]
    assert count_jpeg_scans(hidden, stop_after=500) == 501


def test_check_jpeg_scans_refuses_a_scan_flood_as_bomb() -> None:
    jpeg = imagegen.jpeg_bytes(imagegen.photo_like_rgb(96, 64), progressive=True)
    check_jpeg_scans(imagegen.jpeg_with_repeated_scan(jpeg, 400))  # 400 + ~10: under the default 500
    with pytest.raises(ImageBombError) as caught:
        check_jpeg_scans(imagegen.jpeg_with_repeated_scan(jpeg, 600))
    assert caught.value.fields["max_jpeg_scans"] == 500
    with pytest.raises(ImageBombError):
        check_jpeg_scans(jpeg, UploadLimits(max_jpeg_scans=5))
