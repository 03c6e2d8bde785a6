"""Decoding an upload to RGB uint8 at its original, EXIF-oriented size.

``decode_image`` is the preprocess stage's entry: it repeats the ingress checks (size, magic bytes),
reads the dimensions from the header without decoding pixels, applies the too-small / bomb /
too-large rules of ``pipelines.validate`` (and its cap on a JPEG's scans) and only then decodes.

Library choices (median CPU ms, one 2.6 GHz Zen 4 core, photo-like JPEG q90; the in-pipeline
figures come from ``scripts/bench_prepost.py``):

* JPEG (RGB or grey): ``simplejpeg`` (libjpeg-turbo) 7.3 ms at 1080p / 37 ms at 12 MP, against
  ``cv2.imdecode`` 9.2 / 48 ms and Pillow→numpy 12 / 86 ms. The header (size, mode, EXIF) is still
  read by Pillow's lazy parser, which costs ~0.04 ms. Accurate DCT and upsampling are kept: the
  decoded pixels are returned to the client in the output PNG.
* CMYK / YCCK JPEG: Pillow decodes (libjpeg turns YCCK into CMYK and undoes Adobe inversion), then
  Pillow ImageCms converts with the embedded ICC profile to sRGB; without a usable profile, Pillow's
  naive CMYK→RGB is used.
* PNG, WebP, BMP: Pillow. 16-bit samples keep their high byte (``>> 8``, i.e. scaled, not
  clipped); Pillow's 32-bit integer mode "I" only arises from 16-bit PNG samples and is scaled the
  same way; palettes and grey are expanded to RGB. An RGB PNG's transparent colour key (tRNS)
  becomes its alpha through OpenCV, which compares it at the file's bit depth; a grey PNG's key is
  scaled to 8 bits as Pillow scales 2- and 4-bit samples.
* Colour profiles: an embedded RGB ICC profile is kept as bytes and written into the output PNG
  (``pipelines.encode``); pixels are never converted, except CMYK, which becomes sRGB.

Pillow's ``Image.open`` is bypassed in favour of the four format plugins: the format is already
known from the magic bytes, so no other plugin is ever tried on hostile bytes, and our own
dimension limits (50 MP) are stricter than Pillow's ``MAX_IMAGE_PIXELS``. A WebP's canvas size is
read by hand first, because libwebp's animation decoder allocates the canvas when the file is
opened. Any failure inside a decoder is a ``CorruptImageError`` (400); the decoder's message is
logged, never returned.
"""

from __future__ import annotations

import io
import logging

import cv2
import numpy as np
import simplejpeg
from PIL import BmpImagePlugin, Image, ImageCms, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from pipelines.datatypes import DecodedImage, ImageFormat
from pipelines.errors import BackgroundRemovalError, CorruptImageError, ImageTooLargeError
from pipelines.validate import DEFAULT_LIMITS, UploadLimits, check_dimensions, check_jpeg_scans, check_upload

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112

_PLUGINS: dict[ImageFormat, type[Image.Image]] = {
    ImageFormat.JPEG: JpegImagePlugin.JpegImageFile,
    ImageFormat.PNG: PngImagePlugin.PngImageFile,
    ImageFormat.WEBP: WebPImagePlugin.WebPImageFile,
    ImageFormat.BMP: BmpImagePlugin.BmpImageFile,
}

_SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

# The largest colour profile carried into the output PNG: Pillow's limit on an inflated chunk.
MAX_ICC_PROFILE_BYTES = PngImagePlugin.MAX_TEXT_CHUNK


def decode_image(data: bytes, limits: UploadLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Validates and decodes an upload.

    Args:
        data: the uploaded file, any of JPEG, PNG, WebP, BMP.
        limits: the upload limits.

    Returns:
        A ``DecodedImage`` whose ``rgb`` is ``[H, W, 3]`` uint8 (straight, not premultiplied,
        colours) and ``alpha`` ``[H, W]`` uint8 or None, both at the EXIF-oriented size. A source
        alpha that is 255 everywhere is dropped (``alpha=None``). The arrays are writable. Animated sources yield their
        first frame with ``animated=True``.

    Raises:
        FileTooLargeError, InvalidFormatError, ImageTooSmallError, ImageBombError,
        ImageTooLargeError, CorruptImageError.
    """
    image_format = check_upload(data, limits)
    if image_format is ImageFormat.WEBP:
        check_dimensions(*read_webp_size(data), len(data), limits)
    try:
        image = _open_header(data, image_format)
        check_dimensions(image.width, image.height, len(data), limits)
        if image_format is ImageFormat.JPEG:
            check_jpeg_scans(data, limits)
        animated = getattr(image, "n_frames", 1) > 1
        icc_profile = rgb_icc_profile(image.info.get("icc_profile"))
        if image_format is ImageFormat.JPEG and image.mode in ("RGB", "L"):
            rgb = _decode_jpeg_pixels(data, image)
            alpha = None
        elif image.mode == "CMYK":
            rgb = _cmyk_to_rgb(image)
            alpha, icc_profile = None, None  # converted to sRGB through its profile
        elif image_format is ImageFormat.PNG and image.mode == "RGB" and "transparency" in image.info and not animated:
            rgb, alpha = _colour_key_png(data, image)
        elif (image_format is ImageFormat.PNG and image.mode == "L" and not animated
              and isinstance(image.info.get("transparency"), int)):
            rgb, alpha = _grey_key_png(data, image)
        else:
            rgb, alpha = _pillow_to_arrays(image)
        orientation = _exif_orientation(image)
    except BackgroundRemovalError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError(limits=limits.describe()) from None
    except Exception as error:  # any decoder failure on untrusted bytes is a corrupt upload
        logger.info("decode failed (%s): %s: %s", image_format.value, type(error).__name__, error)
        raise CorruptImageError() from None
    rgb = apply_orientation(rgb, orientation)
    if alpha is not None:
        alpha = apply_orientation(alpha, orientation)
    return DecodedImage(
        rgb=rgb, alpha=alpha, source_format=image_format, animated=animated, icc_profile=icc_profile
    )


def rgb_icc_profile(profile: object) -> bytes | None:
    """``profile`` when it is a whole ICC profile of the RGB colour space, else None.

    Only the 128-byte header is read: its declared size must match and its data colour space must
    be ``RGB `` (a grey or CMYK profile cannot describe the RGBA output). The profile is passed on
    as bytes, never parsed further or applied. One over :data:`MAX_ICC_PROFILE_BYTES` is dropped:
    Pillow refuses to read a PNG whose ``iCCP`` chunk inflates past that (and libpng past 8 MB), so
    the cut-out would not open. Display and camera profiles are a few KB.
    """
    if not isinstance(profile, bytes) or not 128 <= len(profile) <= MAX_ICC_PROFILE_BYTES:
        return None
    if int.from_bytes(profile[:4], "big") != len(profile) or profile[16:20] != b"RGB ":
        return None
    return profile


def read_webp_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a WebP's first chunk (VP8X canvas, VP8L or VP8 frame header).

    Raises:
        CorruptImageError: the header is truncated or unknown.
    """
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    raise CorruptImageError()


def apply_orientation(pixels: np.ndarray, orientation: object) -> np.ndarray:
    """``pixels`` (``[H, W]`` or ``[H, W, C]``) turned upright per an EXIF orientation tag (1–8).

    Unknown or missing values leave the image as stored, as viewers do.
    """
    if orientation == 2:
        return cv2.flip(pixels, 1)
    if orientation == 3:
        return cv2.rotate(pixels, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(pixels, 0)
    if orientation == 5:
        return cv2.transpose(pixels)
    if orientation == 6:
        return cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(pixels), -1)
    if orientation == 8:
        return cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return pixels


def _open_header(data: bytes, image_format: ImageFormat) -> Image.Image:
    """The format plugin's lazily opened image: header parsed, no pixels decoded."""
    plugin = _PLUGINS[image_format]
    return plugin(io.BytesIO(data))  # type: ignore[call-arg]


def _exif_orientation(image: Image.Image) -> object:
    """The EXIF orientation tag; 1 when absent, or when the EXIF block itself is malformed (the
    pixels are fine, and viewers show such files as stored)."""
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as error:  # Pillow's TIFF parser raises SyntaxError, struct.error, …
        logger.info("unreadable EXIF block ignored: %s: %s", type(error).__name__, error)
        return 1


def _decode_jpeg_pixels(data: bytes, image: Image.Image) -> np.ndarray:
    """libjpeg-turbo through simplejpeg (the fast path); strict, so truncation is an error.

    Strict mode also refuses files with recoverable defects that libjpeg only warns about (stray
    bytes before a marker, from some cameras and editors); those go to Pillow, which decodes them
    as viewers do and still refuses truncated data.
    """
    try:
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as error:
        logger.info("strict JPEG decoding failed (%s); trying Pillow", error)
        rgb, _alpha = _pillow_to_arrays(image)
    if (rgb.shape[1], rgb.shape[0]) != image.size:
        raise CorruptImageError()
    return rgb


def _cmyk_to_rgb(image: Image.Image) -> np.ndarray:
    image.load()
    icc_profile = image.info.get("icc_profile")
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(image, source, _SRGB_PROFILE, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            logger.info("unusable CMYK ICC profile, using the naive conversion: %s", error)
        else:
            if converted is not None:
                return np.array(converted)
    return np.array(image.convert("RGB"))


def _colour_key_png(data: bytes, image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A still RGB PNG whose tRNS chunk names one transparent colour. Pillow keeps only the high
    byte of 16-bit samples but the key at full depth, so it would never match; OpenCV turns the key
    into an alpha channel itself, at the file's own depth. (Not for APNGs: OpenCV may decode another
    frame than Pillow's first; Pillow's own conversion handles their 8-bit keys.)"""
    image.load()
    rgb = np.array(image)
    with_key = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if with_key is None or with_key.ndim != 3 or with_key.shape[2] != 4:
        return rgb, None
    alpha = with_key[..., 3]
    alpha = _sixteen_bit_to_uint8(alpha) if alpha.dtype == np.uint16 else np.ascontiguousarray(alpha)
    return rgb, alpha if int(alpha.min()) < 255 else None


def _grey_key_png(data: bytes, image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A still grey PNG of 2, 4 or 8 bits whose tRNS chunk names one transparent sample value. The
    key is at the file's bit depth (PNG spec); Pillow scales 2- and 4-bit samples to 8 bits but not
    the key, so its own conversion would never match it."""
    image.load()
    grey = np.asarray(image)
    bit_depth = data[24]  # in IHDR, the first chunk: after the signature, its length, type, width, height
    key = int(image.info["transparency"]) * (255 // ((1 << bit_depth) - 1) if bit_depth < 8 else 1)
    return _grey_with_key(grey, grey == key)


def _grey_with_key(grey: np.ndarray, transparent: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB from 8-bit grey samples, and the alpha of the samples a tRNS key made ``transparent``
    (None without a key, or when no sample matched it)."""
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if transparent is None or not transparent.any():
        return rgb, None
    return rgb, np.where(transparent, 0, 255).astype(np.uint8)


def _pillow_to_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB and optional alpha arrays from a (first-frame) Pillow image of any PNG/WebP/BMP mode."""
    image.load()
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return np.array(image), None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        samples = np.asarray(image)
        key = image.info.get("transparency")  # a grey PNG's tRNS: the one transparent sample value
        return _grey_with_key(_sixteen_bit_to_uint8(samples), samples == key if isinstance(key, int) else None)
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = np.asarray(image if mode == "RGBA" else image.convert("RGBA"))
        alpha = np.ascontiguousarray(rgba[..., 3])
        if int(alpha.min()) == 255:
            return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), None
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), alpha
    if mode == "L":
        return cv2.cvtColor(np.asarray(image), cv2.COLOR_GRAY2RGB), None
    return np.array(image.convert("RGB")), None


def _sixteen_bit_to_uint8(samples: np.ndarray) -> np.ndarray:
    """16-bit samples (any integer dtype, values 0..65535) scaled to uint8 by keeping the high byte."""
    clipped = np.clip(samples.astype(np.int64), 0, 65535)
    return np.right_shift(clipped, 8).astype(np.uint8)
