"""Generators of test images and hostile uploads, shared by the pipeline, corpus and HTTP tests.

Every generator is deterministic (seeded) and returns either a numpy array (``[H, W, C]`` uint8
unless stated) or the encoded bytes of an upload.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from pipelines.validate import NEXT_JPEG_MARKER


def photo_like_rgb(width: int, height: int, seed: int = 0, noise_sigma: float = 6.0) -> np.ndarray:
    """A ``[height, width, 3]`` uint8 image with photo statistics.

    Smooth multi-scale gradients, a few hard-edged shapes, a textured subject blob and Gaussian
    sensor noise, so codecs and resizers meet the content they meet in production (a flat image
    would flatter every PNG encoder and hide resize aliasing).
    """
    rng = np.random.default_rng(seed)
    image: np.ndarray = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((3, 90.0), (12, 40.0), (48, 20.0)):
        coarse = rng.uniform(-1.0, 1.0, (cells, max(2, cells * width // max(height, 1)), 3)).astype(np.float32)
        image += weight * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += 128.0
    for _ in range(12):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (
            int(rng.integers(width // 40 + 1, width // 6 + 2)),
            int(rng.integers(height // 40 + 1, height // 6 + 2)),
        )
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    # Fine stripes: high-frequency texture that separates antialiased from plain resizers.
    stripes = 25.0 * np.sin(np.arange(width, dtype=np.float32) * 0.9)[None, :, None]
    image[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] += stripes[:, width // 3 : 2 * width // 3]
    image = cv2.GaussianBlur(image, (3, 3), 0)
    image += rng.normal(0.0, noise_sigma, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def subject_alpha(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A ``[height, width]`` uint8 matte: a soft-edged ellipse covering about a fifth of the frame."""
    alpha = np.zeros((height, width), np.uint8)
    cv2.ellipse(alpha, (width // 2, height // 2), (width // 4, height // 3), 0, 0, 360, 255, -1)
    return cv2.GaussianBlur(alpha, (0, 0), max(1.0, min(width, height) / 100))


def gradient_rgb(width: int, height: int) -> np.ndarray:
    """A ``[height, width, 3]`` uint8 image with distinct corners: red grows along x, green along y.

    Used to tell orientations apart: pixel (0, 0) is dark, (0, W-1) red, (H-1, 0) green.
    """
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    red = np.broadcast_to(xs, (height, width))
    green = np.broadcast_to(ys, (height, width))
    blue = np.full((height, width), 64, np.float32)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def encode_with_pillow(image: Image.Image, format_name: str, **params: object) -> bytes:
    """``image`` saved into memory by Pillow."""
    buffer = io.BytesIO()
    image.save(buffer, format_name, **params)
    return buffer.getvalue()


def jpeg_bytes(rgb: np.ndarray, quality: int = 90, progressive: bool = False, orientation: int | None = None) -> bytes:
    """A JPEG of ``rgb`` (``[H, W, 3]`` or ``[H, W]`` grey), optionally progressive or EXIF-oriented."""
    params: dict[str, object] = {"quality": quality, "progressive": progressive}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    return encode_with_pillow(Image.fromarray(rgb), "JPEG", **params)


def jpeg_with_repeated_scan(jpeg: bytes, copies: int) -> bytes:
    """``jpeg`` with ``copies`` more headers of its first scan (and no data) after that scan: valid
    enough for libjpeg, which still walks the whole image once per scan (the scan-flood attack)."""
    start = jpeg.index(b"\xff\xda")
    header = jpeg[start : start + 2 + int.from_bytes(jpeg[start + 2 : start + 4], "big")]
    end = NEXT_JPEG_MARKER.search(jpeg, start + len(header))
    assert end is not None
    return jpeg[: end.start()] + header * copies + jpeg[end.start() :]


def cmyk_jpeg_bytes(rgb: np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """A CMYK JPEG (Adobe APP14, as Photoshop writes) of ``rgb`` by the naive RGB→CMYK formula."""
    image = Image.fromarray(rgb).convert("CMYK")
    params: dict[str, object] = {"quality": 95}
    if icc_profile is not None:
        params["icc_profile"] = icc_profile
    return encode_with_pillow(image, "JPEG", **params)


def png_bytes(array: np.ndarray, **params: object) -> bytes:
    """A PNG of ``array`` via Pillow: uint8 ``[H, W]`` L, ``[H, W, 2]`` LA, ``[H, W, 3]`` RGB,
    ``[H, W, 4]`` RGBA, or uint16 ``[H, W]`` 16-bit grey."""
    return encode_with_pillow(Image.fromarray(array), "PNG", **params)


def png16_rgb_bytes(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of ``rgb16`` (``[H, W, 3]`` uint16); Pillow cannot write one."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("cv2 failed to write a 16-bit PNG")
    return encoded.tobytes()


def with_png_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """``png`` with one more chunk just before its first IDAT."""
    at = png.index(b"IDAT") - 4
    return png[:at] + _png_chunk(kind, payload) + png[at:]


def palette_png_with_transparency(width: int, height: int) -> bytes:
    """A palette ("P") PNG: left half colour index 1 (opaque red), right half index 0 (transparent)."""
    indices = np.zeros((height, width), np.uint8)
    indices[:, : width // 2] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 255, 255, 0, 0] + [0, 0, 0] * 254)
    return encode_with_pillow(image, "PNG", transparency=0)


def webp_bytes(array: np.ndarray, lossless: bool = True) -> bytes:
    """A still WebP of ``array`` (RGB or RGBA)."""
    return encode_with_pillow(Image.fromarray(array), "WEBP", lossless=lossless, quality=90)


def bmp_bytes(array: np.ndarray) -> bytes:
    """A BMP of ``array`` (RGB, or grey as an 8-bit palette BMP)."""
    return encode_with_pillow(Image.fromarray(array), "BMP")


def animated_bytes(frames: Sequence[np.ndarray], format_name: str) -> bytes:
    """An animated WebP or PNG (APNG) of ``frames``, 100 ms each."""
    images = [Image.fromarray(frame) for frame in frames]
    params: dict[str, object] = {"save_all": True, "append_images": images[1:], "duration": 100, "loop": 0}
    if format_name == "WEBP":
        params["lossless"] = True
    return encode_with_pillow(images[0], format_name, **params)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def handmade_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG assembled chunk by chunk, with any header and any (possibly bogus) IDAT payload."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def grey_png_with_key(samples: np.ndarray, bit_depth: int, key: int) -> bytes:
    """A grey PNG (colour type 0) of ``bit_depth`` 1, 2, 4 or 8 whose tRNS names ``key`` transparent;
    ``samples`` are ``[h, w]`` values below ``2**bit_depth``, ``w`` a multiple of ``8 // bit_depth``."""
    height, width = samples.shape
    per_byte = 8 // bit_depth
    packed = np.zeros((height, width // per_byte), np.uint16)
    for offset in range(per_byte):  # most significant bits first
        packed = (packed << bit_depth) | samples[:, offset::per_byte].astype(np.uint16)
    raw = b"".join(b"\0" + row.astype(np.uint8).tobytes() for row in packed)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"tRNS", struct.pack(">H", key))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def bomb_png(side: int = 16_000) -> bytes:
    """A real decompression bomb: a valid 1-bit ``side``×``side`` all-black PNG of a few tens of KB.

    Every row is a filter byte plus zeros, deflated at level 9 (deflate tops out near 1000:1, and
    the spec's ratio counts 4 bytes per pixel, so the ratio is ~30 000× at the default side).
    """
    row = bytes(1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    return handmade_png(side, side, 1, 0, b"".join(parts))


def flat_png(width: int, height: int, colour: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A single-colour RGB PNG: honest content that compresses far beyond 1000:1."""
    return png_bytes(np.full((height, width, 3), colour, np.uint8), compress_level=9)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of ``data``."""
    return data[: max(1, int(len(data) * keep))]


def minimal_pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def minimal_gif() -> bytes:
    return encode_with_pillow(Image.new("P", (64, 64)), "GIF")


def minimal_tiff() -> bytes:
    return encode_with_pillow(Image.new("RGB", (64, 64), (10, 20, 30)), "TIFF")


def minimal_svg() -> bytes:
    return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"></svg>\n'


def minimal_heic_header() -> bytes:
    """The first box of a HEIC file (``ftyp`` with brand ``heic``); enough for format sniffing."""
    return struct.pack(">I", 24) + b"ftypheic" + struct.pack(">I", 0) + b"mif1heic" + bytes(64)


def minimal_zip() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def _s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _v2_ab(pillow_byte: float) -> int:
    return ((int(pillow_byte) + 128) % 256) * 256


def rgb_icc_profile(colour_space: bytes = b"RGB ") -> bytes:
    """Littlecms' sRGB profile as bytes, standing in for Display P3 or Adobe RGB; another
    ``colour_space`` (e.g. ``b"GRAY"``) rewrites only its header's data colour space."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile[:16] + colour_space + profile[20:]


def swapped_cmyk_icc_profile() -> bytes:
    """A minimal ICC v2 CMYK→Lab printer profile whose inks are deliberately "wrong".

    It maps ink amount straight to the light of the opposite primary: full cyan ink is red, full
    magenta green, full yellow blue (and K darkens). A decoder that ignores the profile gives the
    complementary colour, so a test can tell whether the embedded profile was honoured.
    Built by hand (a 2-point lut16 ``A2B0``) because no CMYK profile ships with the test
    environment.
    """
    from PIL import ImageCms

    corners = []
    for cyan in (0, 1):
        for magenta in (0, 1):
            for yellow in (0, 1):
                for black in (0, 1):
                    light = 1 - black
                    corners.append((255 * cyan * light, 255 * magenta * light, 255 * yellow * light))
    srgb = Image.new("RGB", (len(corners), 1))
    srgb.putdata([tuple(int(v) for v in corner) for corner in corners])
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = np.asarray(ImageCms.applyTransform(srgb, to_lab)).reshape(-1, 3).astype(np.float64)
    clut = bytearray()
    for lightness, a_axis, b_axis in lab:
        # ICC v2 16-bit Lab: L·0xFF00/100; a/b need Pillow's 8-bit a/b with the top bit flipped
        # (checked empirically: the profile then maps each ink corner to its intended colour).
        clut += struct.pack(">HHH", round(lightness / 255 * 0xFF00), _v2_ab(a_axis), _v2_ab(b_axis))
    identity = b"".join(_s15fixed16(1.0 if row == col else 0.0) for row in range(3) for col in range(3))
    lut = (
        b"mft2"
        + bytes(4)
        + bytes([4, 3, 2, 0])
        + identity
        + struct.pack(">HH", 2, 2)
        + struct.pack(">HH", 0, 65535) * 4
        + bytes(clut)
        + struct.pack(">HH", 0, 65535) * 3
    )
    description = b"swapped CMYK test\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(description)) + description + bytes(4 + 4 + 2 + 1 + 67)
    white = b"XYZ " + bytes(4) + _s15fixed16(0.9642) + _s15fixed16(1.0) + _s15fixed16(0.8249)
    tags = [(b"desc", desc), (b"wtpt", white), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table = struct.pack(">I", len(tags))
    body = b""
    for signature, payload in tags:
        padded = payload + bytes(-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += padded
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"prtrCMYKLab "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)
        + _s15fixed16(0.9642)
        + _s15fixed16(1.0)
        + _s15fixed16(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + body
