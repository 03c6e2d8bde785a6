"""A corpus of hostile and unusual ``POST /remove`` requests, each with its documented answer.

Every :class:`HostileCase` is a complete HTTP request body (multipart framing written by hand, so
duplicated, misnamed, oversized and malformed forms are possible) plus the status and
``error_code`` that ``docs/api.md`` promises for it; accepted inputs expect 200 and the size of the
RGBA PNG that comes back. ``tests/serve_app/test_hostile_http.py`` sends them all to one service.

Categories: decompression bombs (PNG, WebP, JPEG, and headers claiming huge sizes over a few bytes
of data), truncated and corrupt files of each format, polyglots, formats the service does not take
(PDF, GIF, TIFF, SVG, HEIC, AVIF, ZIP, HTML, an executable, text), size edges (0 bytes, 11 MB, 32 px,
beyond 8K), unusual but valid images (CMYK, 16-bit, EXIF-rotated, alpha, palette, grey, progressive,
animated) and malformed forms. Generation is deterministic and takes about a second.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tests import imagegen

BOUNDARY = "hostile-corpus-boundary-7f3a"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
_MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class Part:
    """One multipart part: ``name``, optional ``filename`` and part ``content_type``, and data."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class HostileCase:
    """One request and its documented answer.

    Attributes:
        name: a short identifier (the test id).
        body: the raw request body.
        content_type: the request's ``Content-Type`` header.
        status: the documented HTTP status.
        error_code: the documented ``error_code`` (None for 200).
        output_size: for 200, the ``(width, height)`` of the returned PNG.
        fields: for errors, body fields that must be present with these values.
    """

    name: str
    body: bytes
    content_type: str
    status: int
    error_code: str | None = None
    output_size: tuple[int, int] | None = None
    fields: dict[str, object] = field(default_factory=dict)


def multipart(parts: Sequence[Part], boundary: str = BOUNDARY) -> bytes:
    """A ``multipart/form-data`` body with exactly these parts, in this order."""
    chunks = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if part.content_type is not None:
            head += f"Content-Type: {part.content_type}\r\n"
        chunks.append(head.encode("utf-8") + b"\r\n" + part.data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def image_form(data: bytes, filename: str = "upload.bin", content_type: str = "application/octet-stream") -> bytes:
    return multipart([Part("image", data, filename, content_type)])


# -- hand-made headers ------------------------------------------------------------------------


def jpeg_header_only(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 claiming ``width``×``height`` (3 components), a DHT-less SOS, EOI."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sos = b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return (
        b"\xff\xd8"
        + b"\xff\xc0"
        + struct.pack(">H", len(sof) + 2)
        + sof
        + b"\xff\xda"
        + struct.pack(">H", len(sos) + 2)
        + sos
        + bytes(64)
        + b"\xff\xd9"
    )


def webp_vp8l_header_only(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims ``width``×``height`` (≤ 16384) over garbage data."""
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + struct.pack("<I", bits) + bytes(32)
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp_header_only(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming ``width``×``height`` followed by 64 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = bytes(64)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def png_with_bad_crc(data: bytes) -> bytes:
    """``data`` (a PNG) with the CRC of its first IDAT chunk flipped."""
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    crc_at = at + 4 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at : crc_at + 4]) + data[crc_at + 4 :]


def png_with_garbage_idat(width: int, height: int) -> bytes:
    """A valid-looking PNG header over an IDAT that is not a zlib stream."""
    return imagegen.handmade_png(width, height, 8, 2, b"this is not deflate data" * 8)


def overwrite(data: bytes, start: int, stop: int, seed: int = 0) -> bytes:
    """``data`` with bytes ``[start, stop)`` replaced by noise."""
    noise = np.random.default_rng(seed).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    return data[:start] + noise + data[stop:]


def corrupt_middle(data: bytes, seed: int = 0) -> bytes:
    """``data`` with its middle third overwritten by noise (headers intact)."""
    return overwrite(data, len(data) // 3, 2 * len(data) // 3, seed)


def flat_webp(side: int) -> bytes:
    return imagegen.webp_bytes(np.full((side, side, 3), 200, np.uint8), lossless=True)


def exif_rotated_jpeg(width: int, height: int) -> bytes:
    """A ``width``×``height`` JPEG whose EXIF orientation 6 makes it ``height``×``width`` upright."""
    return imagegen.jpeg_bytes(imagegen.photo_like_rgb(width, height, seed=11), orientation=6)


def grey_png(width: int, height: int) -> bytes:
    return imagegen.png_bytes(imagegen.photo_like_rgb(width, height, seed=5)[..., 0])


def sixteen_bit_png(width: int, height: int) -> bytes:
    rgb16 = imagegen.photo_like_rgb(width, height, seed=6).astype(np.uint16) * 257
    return imagegen.png16_rgb_bytes(rgb16)


def avif_header() -> bytes:
    return struct.pack(">I", 28) + b"ftypavif" + struct.pack(">I", 0) + b"mif1avifmiaf" + bytes(64)


def elf_header() -> bytes:
    return b"\x7fELF\x02\x01\x01" + bytes(57)


def zip_with_jpeg_name(jpeg: bytes) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", jpeg)
    return buffer.getvalue()


# -- the corpus -------------------------------------------------------------------------------


def _photo(width: int, height: int, seed: int = 1) -> np.ndarray:
    return imagegen.photo_like_rgb(width, height, seed=seed)


def _accepted(name: str, data: bytes, size: tuple[int, int]) -> HostileCase:
    return HostileCase(name, image_form(data), FORM_TYPE, 200, None, size)


def _refused(name: str, data: bytes, status: int, code: str, **fields: object) -> HostileCase:
    return HostileCase(name, image_form(data), FORM_TYPE, status, code, fields=dict(fields))


def _form(
    name: str, parts: Sequence[Part], status: int, code: str | None, size: tuple[int, int] | None = None
) -> HostileCase:
    return HostileCase(name, multipart(parts), FORM_TYPE, status, code, size)


def image_cases() -> list[HostileCase]:
    """Hostile or unusual image bytes in a well-formed form."""
    photo = _photo(160, 120)
    jpeg, png, webp, bmp = (
        imagegen.jpeg_bytes(photo),
        imagegen.png_bytes(photo),
        imagegen.webp_bytes(photo, lossless=False),
        imagegen.bmp_bytes(photo),
    )
    alpha = np.dstack([photo, imagegen.subject_alpha(160, 120)])
    animated_gif = imagegen.animated_bytes([_photo(96, 96), _photo(96, 96, seed=2)], "GIF")
    return [
        # decompression bombs, real and claimed
        _refused("bomb-png-16000px-1bit", imagegen.bomb_png(), 400, "IMAGE_BOMB"),
        _refused("bomb-webp-flat-3000px", flat_webp(3000), 400, "IMAGE_BOMB"),
        _refused("bomb-jpeg-8k-header-tiny-data", jpeg_header_only(7680, 4320), 400, "IMAGE_BOMB"),
        _refused(
            "header-png-65535px-tiny-idat",
            imagegen.handmade_png(65535, 65535, 8, 2, zlib.compress(b"\0" * 64)),
            400,
            "IMAGE_BOMB",
        ),
        _refused("header-jpeg-65500px-no-data", jpeg_header_only(65500, 65500), 400, "IMAGE_BOMB"),
        _refused("header-webp-16384px-no-data", webp_vp8l_header_only(16384, 16384), 400, "IMAGE_BOMB"),
        _refused("header-bmp-30000px-no-data", bmp_header_only(30000, 30000), 400, "IMAGE_BOMB"),
        # truncated and corrupt, each format
        _refused("truncated-jpeg", imagegen.truncated(jpeg, 0.3), 400, "CORRUPT_IMAGE"),
        _refused("truncated-png", imagegen.truncated(png, 0.5), 400, "CORRUPT_IMAGE"),
        _refused("truncated-webp", imagegen.truncated(webp, 0.5), 400, "CORRUPT_IMAGE"),
        _refused("truncated-bmp", imagegen.truncated(bmp, 0.5), 400, "CORRUPT_IMAGE"),
        _refused("truncated-header-only-jpeg", jpeg[:4], 400, "CORRUPT_IMAGE"),
        _refused("corrupt-jpeg-middle", corrupt_middle(jpeg), 400, "CORRUPT_IMAGE"),
        _refused("corrupt-png-idat-not-zlib", png_with_garbage_idat(128, 128), 400, "CORRUPT_IMAGE"),
        _refused("corrupt-webp-frame-header", overwrite(webp, 20, 40), 400, "CORRUPT_IMAGE"),
        _refused("corrupt-bmp-compression-field", bmp[:30] + struct.pack("<I", 7) + bmp[34:], 400, "CORRUPT_IMAGE"),
        # damage a decoder recovers from: garbage pixels come back, never an error or a crash
        _accepted("damaged-png-bad-crc", png_with_bad_crc(png), (160, 120)),
        _accepted("damaged-webp-middle", corrupt_middle(webp), (160, 120)),
        # polyglots: the magic bytes decide, the rest must decode as that format
        _accepted("polyglot-jpeg-then-zip", jpeg + imagegen.minimal_zip(), (160, 120)),
        _accepted("polyglot-png-then-html", png + b"<html><script>alert(1)</script></html>", (160, 120)),
        _refused("polyglot-jpeg-magic-then-pdf", b"\xff\xd8\xff\xe0" + imagegen.minimal_pdf(), 400, "CORRUPT_IMAGE"),
        _refused("polyglot-gif-then-zip", imagegen.minimal_gif() + imagegen.minimal_zip(), 400, "INVALID_FORMAT"),
        _refused("polyglot-zip-holding-a-jpeg", zip_with_jpeg_name(jpeg), 400, "INVALID_FORMAT"),
        # formats the service does not take
        _refused("pdf", imagegen.minimal_pdf(), 400, "INVALID_FORMAT", received_format="PDF"),
        _refused("gif", imagegen.minimal_gif(), 400, "INVALID_FORMAT", received_format="GIF"),
        _refused("gif-animated", animated_gif, 400, "INVALID_FORMAT", received_format="GIF"),
        _refused("tiff", imagegen.minimal_tiff(), 400, "INVALID_FORMAT", received_format="TIFF"),
        _refused("svg", imagegen.minimal_svg(), 400, "INVALID_FORMAT", received_format="SVG"),
        _refused("heic", imagegen.minimal_heic_header(), 400, "INVALID_FORMAT", received_format="HEIC"),
        _refused("avif", avif_header(), 400, "INVALID_FORMAT", received_format="AVIF"),
        _refused("zip", imagegen.minimal_zip(), 400, "INVALID_FORMAT", received_format="ZIP"),
        _refused("html", b"<!DOCTYPE html><html><body>hi</body></html>", 400, "INVALID_FORMAT"),
        _refused("elf-executable", elf_header(), 400, "INVALID_FORMAT"),
        _refused("text", b"just some text, not an image\n", 400, "INVALID_FORMAT", received_format="TEXT"),
        _refused("random-bytes", np.random.default_rng(3).bytes(4096), 400, "INVALID_FORMAT"),
        # size edges
        _form("empty-0-bytes", [Part("image", b"", "empty.jpg", "image/jpeg")], 400, "INVALID_REQUEST"),
        _refused("file-11-mb", b"\xff\xd8\xff" + bytes(11 * _MEBIBYTE), 413, "FILE_TOO_LARGE", max_size_mb=10),
        _refused("tiny-32px", imagegen.jpeg_bytes(_photo(32, 32)), 400, "IMAGE_TOO_SMALL"),
        _refused("tiny-1x1-png", imagegen.png_bytes(np.zeros((1, 1, 3), np.uint8)), 400, "IMAGE_TOO_SMALL"),
        _refused("thin-4000x40", imagegen.png_bytes(_photo(4000, 40)), 400, "IMAGE_TOO_SMALL"),
        _refused(
            "beyond-8k-7700px",
            imagegen.png_bytes(np.random.default_rng(0).integers(0, 256, (80, 7700, 3), dtype=np.uint8)),
            400,
            "IMAGE_TOO_LARGE",
            width=7700,
        ),
        # unusual but valid
        _accepted("cmyk-jpeg", imagegen.cmyk_jpeg_bytes(_photo(128, 96)), (128, 96)),
        _accepted("sixteen-bit-png", sixteen_bit_png(128, 96), (128, 96)),
        _accepted("exif-rotated-jpeg", exif_rotated_jpeg(160, 96), (96, 160)),
        _accepted("alpha-png", imagegen.png_bytes(alpha), (160, 120)),
        _accepted("alpha-webp", imagegen.webp_bytes(alpha), (160, 120)),
        _accepted("palette-png-transparent", imagegen.palette_png_with_transparency(96, 80), (96, 80)),
        _accepted("grey-png", grey_png(128, 96), (128, 96)),
        _accepted("progressive-jpeg", imagegen.jpeg_bytes(photo, progressive=True), (160, 120)),
        _accepted("animated-png-first-frame", imagegen.animated_bytes([photo, photo[::-1].copy()], "PNG"), (160, 120)),
        _accepted("bmp", bmp, (160, 120)),
        _accepted("min-64px", imagegen.jpeg_bytes(_photo(64, 64)), (64, 64)),
        _accepted("large-3000x2000-photo", imagegen.jpeg_bytes(_photo(3000, 2000, seed=9), quality=80), (3000, 2000)),
    ]


def form_cases() -> list[HostileCase]:
    """A valid image in a malformed, misnamed, duplicated or oversized form."""
    jpeg = imagegen.jpeg_bytes(_photo(96, 80, seed=2))
    image = Part("image", jpeg, "photo.jpg", "image/jpeg")
    return [
        _form("form-field-missing", [Part("smoothing", b"true")], 400, "INVALID_REQUEST"),
        _form("form-field-duplicated", [image, image], 400, "INVALID_REQUEST"),
        _form("form-wrong-field-name", [Part("file", jpeg, "photo.jpg", "image/jpeg")], 400, "INVALID_REQUEST"),
        _form("form-image-not-a-file", [Part("image", jpeg)], 200, None, (96, 80)),
        _form("form-huge-text-field", [image, Part("smoothing", b"t" * 200_000)], 400, "INVALID_REQUEST"),
        _form("form-bad-flag", [image, Part("return_base64", b"maybe")], 400, "INVALID_REQUEST"),
        _form("form-too-many-parts", [image] + [Part(f"x{i}", b"1") for i in range(20)], 400, "INVALID_REQUEST"),
        _form("form-unknown-extra-field", [image, Part("colour", b"red")], 200, None, (96, 80)),
        _form(
            "form-path-traversal-filename",
            [Part("image", jpeg, "../../etc/passwd.jpg", "image/jpeg")],
            200,
            None,
            (96, 80),
        ),
        _form(
            "form-type-lies-png-as-pdf",
            [Part("image", imagegen.png_bytes(_photo(96, 80)), "a.pdf", "application/pdf")],
            200,
            None,
            (96, 80),
        ),
        HostileCase("body-raw-jpeg", jpeg, "image/jpeg", 400, "INVALID_REQUEST"),
        HostileCase(
            "body-urlencoded", b"image=" + b"A" * 1000, "application/x-www-form-urlencoded", 400, "INVALID_REQUEST"
        ),
        HostileCase("body-json", b'{"image": "aGVsbG8="}', "application/json", 400, "INVALID_REQUEST"),
        HostileCase("multipart-without-boundary", multipart([image]), "multipart/form-data", 400, "INVALID_REQUEST"),
        HostileCase("multipart-wrong-boundary", multipart([image], "other"), FORM_TYPE, 400, "INVALID_REQUEST"),
        HostileCase("multipart-unterminated", multipart([image])[:-40], FORM_TYPE, 400, "INVALID_REQUEST"),
        HostileCase("multipart-garbage", np.random.default_rng(4).bytes(2048), FORM_TYPE, 400, "INVALID_REQUEST"),
    ]


def corpus() -> list[HostileCase]:
    """Every case, images first."""
    cases = image_cases() + form_cases()
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise ValueError("duplicate case names")
    return cases
