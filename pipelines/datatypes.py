"""Frozen records exchanged between the stages (decode → preprocess → segment → postprocess → encode).

They are plain dataclasses of numpy arrays and scalars, so they pickle cheaply across Ray
boundaries: the resized model input travels as uint8 (normalisation happens on the inference
device) and the matte as a uint8 map at model resolution.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class ImageFormat(str, enum.Enum):
    """Upload formats the service accepts, recognised by their magic bytes."""

    JPEG = "JPEG"
    PNG = "PNG"
    WEBP = "WEBP"
    BMP = "BMP"


@dataclass(frozen=True)
class RemovalOptions:
    """Per-request options of ``POST /remove`` that change the pixels.

    Attributes:
        smoothing: apply a Gaussian blur to the alpha edges (spec default: on).
        refine_foreground: give semi-transparent pixels their foreground colour, without the
            background that bled into them (``pipelines.postprocess.estimate_foreground``).
    """

    smoothing: bool = True
    refine_foreground: bool = True


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded at its original (EXIF-oriented) size.

    Attributes:
        rgb: ``[H, W, 3]`` uint8 RGB, straight (not premultiplied) colours as stored. For a source
            with alpha, the preprocess stage composites them on neutral grey for the model only,
            so the output keeps the true colours of semi-transparent pixels.
        alpha: ``[H, W]`` uint8 source alpha, or None when the source is opaque. It is multiplied
            into the output alpha, so transparent input stays transparent.
        source_format: the container format of the upload.
        animated: True when the source had several frames (only the first is used).
        icc_profile: the source's embedded RGB colour profile (Display P3 from phones, Adobe RGB
            from cameras), carried into the output PNG so the cut-out keeps the original's
            colours; None when there is none (sRGB is assumed) or it is not an RGB profile.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    source_format: ImageFormat
    animated: bool = False
    icc_profile: bytes | None = None

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


@dataclass(frozen=True)
class PreparedImage:
    """Output of the preprocess stage.

    Attributes:
        image: the decoded original, needed again by the postprocess stage.
        model_input: ``[h, w, 3]`` uint8 RGB resized (bilinear, antialiased) to the model's input
            size ``(h, w)``; not normalised.
    """

    image: DecodedImage
    model_input: np.ndarray


@dataclass(frozen=True)
class Matte:
    """Output of the inference stage for one image.

    Attributes:
        alpha: ``[h, w]`` uint8 foreground probability at model resolution (sigmoid · 255,
            rounded). No per-image min-max stretch: an image with no subject is near 0.
        model_name: the variant that produced it (for ``X-Model-Version``).
        inference_ms: the model time of the batch this image was part of.
    """

    alpha: np.ndarray
    model_name: str
    inference_ms: float = 0.0


@dataclass(frozen=True)
class EncodedImage:
    """Output of the postprocess stage: the cut-out, ready to send.

    Attributes:
        data: the encoded bytes (PNG, RGBA, lossless).
        media_type: ``image/png``.
        width, height: output size in pixels (equal to the decoded original).
        subject_found: whether any pixel is at least half opaque.
        smoothing_applied: whether the alpha edges were smoothed.
        foreground_refined: whether semi-transparent pixels got their estimated foreground
            colour (asked for, and the source was opaque).
    """

    data: bytes
    media_type: str
    width: int
    height: int
    subject_found: bool
    smoothing_applied: bool
    foreground_refined: bool = False
