"""Cheap upload checks: file size, magic bytes, header dimensions and the decompression-bomb ratio.

``check_upload`` looks only at the byte count and the first bytes, so the HTTP ingress can run it
before anything crosses a Ray boundary. ``check_dimensions`` runs in the preprocess stage once the
image header has been parsed (see ``pipelines.decode``), before any pixel is decoded.

The format is recognised by its magic bytes alone; a client's content type and file name are
advisory and never consulted here. Anything that is not JPEG, PNG, WebP or BMP is an
``InvalidFormatError`` whose ``received_format`` names what the bytes look like ("PDF", "GIF",
"TIFF", "SVG", "HEIC", "AVIF", "ZIP", "TEXT", "EMPTY" or "UNKNOWN").

Decompression-bomb rule (a deliberate decision): the spec's rule is kept as written, an image whose
``width · height · 4`` bytes exceed ``max_bomb_ratio`` times the upload size is an ``IMAGE_BOMB``.
With the default ratio of 1000 this also rejects some honest images: a flat-colour or synthetic
PNG compresses far better than 1000× (a 4000×3000 single-colour PNG is 42 KB: ratio 1136).
Photographs never come close (JPEG photos sit at 10–60×, PNG photos at 2–5×). The
threshold is therefore ``UploadLimits.max_bomb_ratio``, so a deployment that must accept flat
graphics raises it; the dimension and megapixel limits still bound the memory a single upload
can claim, whatever the ratio. The bomb check runs before the too-large check, so a tiny file that
claims enormous dimensions is reported as the bomb it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipelines.datatypes import ImageFormat
from pipelines.errors import (
    FileTooLargeError,
    ImageBombError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidFormatError,
)

_MEBIBYTE = 1024 * 1024

# DIB header sizes that a real BMP carries at offset 14 (core, info, v2, v3, OS/2 2.x, v4, v5).
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

# ISO base media (``ftyp``) brands of the HEIF family; AVIF is reported separately.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


@dataclass(frozen=True)
class UploadLimits:
    """Limits every upload must meet (spec §3.2, §6.1).

    Attributes:
        max_file_bytes: largest accepted upload in bytes (10 MiB).
        min_side: smallest accepted width and height in pixels.
        max_long_side, max_short_side: 8K in either orientation (7680 × 4320 or 4320 × 7680).
        max_pixels: largest accepted width · height.
        max_bomb_ratio: largest accepted ``width · height · 4 / file_size``; see the module docstring.
        max_jpeg_scans: most start-of-scan markers a JPEG may hold. libjpeg decodes every scan over
            the whole image, so a small, valid JPEG with thousands of (empty) scans costs minutes
            of CPU that no timeout can take back from a decoder thread. Progressive encoders write
            about 10; 500 is NVIDIA DALI's default cap for the same attack.
    """

    max_file_bytes: int = 10 * _MEBIBYTE
    min_side: int = 64
    max_long_side: int = 7680
    max_short_side: int = 4320
    max_pixels: int = 50_000_000
    max_bomb_ratio: float = 1000.0
    max_jpeg_scans: int = 500

    def describe(self) -> dict[str, int | float]:
        """The limits as the ``limits`` field of an error response."""
        return {
            "min_side": self.min_side,
            "max_long_side": self.max_long_side,
            "max_short_side": self.max_short_side,
            "max_pixels": self.max_pixels,
        }


DEFAULT_LIMITS = UploadLimits()


def sniff_format(data: bytes) -> ImageFormat:
    """The upload's format from its magic bytes.

    Raises:
        InvalidFormatError: the bytes are not JPEG, PNG, WebP or BMP; ``received_format`` says
            what they look like instead.
    """
    if data[:3] == b"\xff\xd8\xff":
        return ImageFormat.JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ImageFormat.PNG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if data[:2] == b"BM" and len(data) >= 26 and int.from_bytes(data[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return ImageFormat.BMP
    received = name_unsupported_format(data)
    raise InvalidFormatError(
        f"Unsupported file format ({received}). Please upload JPEG, PNG, WebP or BMP.",
        received_format=received,
    )


def name_unsupported_format(data: bytes) -> str:
    """A short name for what non-image bytes look like, for the ``received_format`` field."""
    if not data:
        return "EMPTY"
    head = data[:64]
    if head.startswith(b"%PDF"):
        return "PDF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIC_BRANDS:
            return "HEIC"
        return "UNKNOWN"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "ZIP"
    text = _as_text(data[:4096])
    if text is not None:
        lowered = text.lower()
        if "<svg" in lowered:
            return "SVG"
        return "TEXT"
    return "UNKNOWN"


def _as_text(prefix: bytes) -> str | None:
    try:
        text = prefix.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the prefix is still text.
        if error.start < len(prefix) - 3:
            return None
        text = prefix[: error.start].decode("utf-8")
    if not text:
        return None
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return text if printable >= 0.95 * len(text) else None


def file_too_large(size_bytes: int, max_file_bytes: int) -> FileTooLargeError:
    """The spec's 413 for an upload of ``size_bytes``. Its size rounds up, so a file one byte over
    10 MB reads 10.1, not the 10.0 of the limit it broke."""
    return FileTooLargeError(
        f"File size exceeds {max_file_bytes / _MEBIBYTE:g}MB limit",
        file_size_mb=math.ceil(size_bytes * 10 / _MEBIBYTE) / 10,
        max_size_mb=round(max_file_bytes / _MEBIBYTE, 1),
    )


def check_file_size(data: bytes, limits: UploadLimits = DEFAULT_LIMITS) -> None:
    """Raises FileTooLargeError (413) when the upload exceeds ``limits.max_file_bytes``."""
    if len(data) > limits.max_file_bytes:
        raise file_too_large(len(data), limits.max_file_bytes)


def check_upload(data: bytes, limits: UploadLimits = DEFAULT_LIMITS) -> ImageFormat:
    """The ingress check: size first, then magic bytes. Touches at most the first 4 KB of ``data``.

    Raises:
        FileTooLargeError: over ``limits.max_file_bytes`` (413).
        InvalidFormatError: not JPEG, PNG, WebP or BMP (400).
    """
    check_file_size(data, limits)
    return sniff_format(data)


def check_dimensions(width: int, height: int, file_size: int, limits: UploadLimits = DEFAULT_LIMITS) -> None:
    """Checks header dimensions before any pixel is decoded.

    Order: too small, then the bomb ratio, then the 8K / megapixel limits. The 8K limit is
    orientation-agnostic: the long side is compared with ``max_long_side`` and the short side with
    ``max_short_side``.

    Raises:
        ImageTooSmallError, ImageBombError, ImageTooLargeError (all 400).
    """
    if width < limits.min_side or height < limits.min_side:
        raise ImageTooSmallError(
            f"Image is smaller than the minimum of {limits.min_side}x{limits.min_side} pixels",
            width=width,
            height=height,
            limits=limits.describe(),
        )
    decompressed = width * height * 4
    ratio = decompressed / max(file_size, 1)
    if ratio > limits.max_bomb_ratio:
        raise ImageBombError(
            f"Image bomb detected: decompression ratio exceeds {limits.max_bomb_ratio:g}x",
            file_size_bytes=file_size,
            decompressed_size_bytes=decompressed,
            ratio=round(ratio, 1),
        )
    long_side, short_side = max(width, height), min(width, height)
    if long_side > limits.max_long_side or short_side > limits.max_short_side or width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"Image dimensions {width}x{height} exceed the maximum of "
            f"{limits.max_long_side}x{limits.max_short_side} (8K) or {limits.max_pixels / 1e6:g} megapixels",
            width=width,
            height=height,
            limits=limits.describe(),
        )


# In entropy-coded data every 0xFF byte is followed by 0x00 (stuffing) or a restart marker
# (0xD0-0xD7); anything else after 0xFF is the next marker (0xFF fill bytes may precede it).
NEXT_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOS, _EOI = 0xDA, 0xD9


def count_jpeg_scans(data: bytes, stop_after: int) -> int:
    """Start-of-scan segments in a JPEG, found by walking its marker segments (not by a byte
    search, which would also count an EXIF thumbnail's or an ICC profile's bytes). Stops counting
    at ``stop_after + 1``; a truncated or malformed tail ends the walk (the decoder judges it)."""
    scans, position, end = 0, 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            found = NEXT_JPEG_MARKER.search(data, position)
            if found is None:
                break
            position = found.start()
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x00:  # not a marker: libjpeg skips it as stray data, so must we (no length)
            position += 2
            continue
        if marker == _EOI:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # restart markers and TEM carry no length
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == _SOS:
            scans += 1
            if scans > stop_after:
                break
            found = NEXT_JPEG_MARKER.search(data, position)
            if found is None:
                break
            position = found.start()
    return scans


def check_jpeg_scans(data: bytes, limits: UploadLimits = DEFAULT_LIMITS) -> None:
    """Raises ImageBombError when a JPEG holds more than ``limits.max_jpeg_scans`` scans."""
    if count_jpeg_scans(data, stop_after=limits.max_jpeg_scans) > limits.max_jpeg_scans:
        raise ImageBombError(
            f"Image bomb detected: the JPEG holds more than {limits.max_jpeg_scans} scans",
            file_size_bytes=len(data),
            max_jpeg_scans=limits.max_jpeg_scans,
        )
