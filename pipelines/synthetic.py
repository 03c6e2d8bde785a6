"""Procedurally generated scenes with exact ground-truth alpha.

Used to train the small demo BiRefNet (``scripts/train_small.py``), to judge masks end to end
(``scripts/eval_quality.py``, quality tests) and to produce photo-like benchmark inputs. A scene is
a textured, photo-like background with (usually) one foreground object composited on top:
ellipses, polygons, stars, noise blobs or unions of them, textured and coloured, with hard, soft or
hair-like edges. Everything is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Seed ranges: training uses seed·10⁷ + step·batch + i (seed 0…4), validation during training starts
# at 5·10⁷, held-out evaluation at 7·10⁷, so the three never overlap.
VALIDATION_SEED = 50_000_000
EVALUATION_SEED = 70_000_000

_UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "JPEG", "BMP")
_ORIENTATIONS = (1, 1, 6, 1, 3, 8)


@dataclass(frozen=True)
class Scene:
    """A generated image and its ground truth.

    Attributes:
        rgb: ``[H, W, 3]`` uint8 composite.
        alpha: ``[H, W]`` float32 ground-truth foreground alpha in ``[0, 1]`` (all zero when empty).
        seed: the seed that produced it.
        foreground: ``[H, W, 3]`` float32 ground-truth colour of the object in ``[0, 255]`` (before
            compositing; what a cut-out's semi-transparent pixels should show), None when empty.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    seed: int
    foreground: np.ndarray | None = None

    @property
    def has_subject(self) -> bool:
        return bool((self.alpha >= 0.5).any())


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in ``[0, 1]``: a small random grid upsampled smoothly."""
    grid = rng.random((max(2, cells * h // max(h, w)) + 1, max(2, cells * w // max(h, w)) + 1)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray, strength: float) -> np.ndarray:
    """A coloured texture around ``base``: gradient, blotches, optional stripes, and grain."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
    other = _random_colour(rng)
    image = base + (other - base) * ramp * rng.uniform(0.1, 0.6)
    blotches = _smooth_noise(rng, h, w, int(rng.integers(3, 12)))[..., None] - 0.5
    image = image + blotches * rng.uniform(20, 90) * strength * rng.uniform(0.5, 1.0, size=3)
    if rng.random() < 0.3:
        period = rng.uniform(6, 40)
        phase = np.cos(rng.uniform(0, np.pi)) * xx + np.sin(rng.uniform(0, np.pi)) * yy
        image = image + (np.sin(phase * 2 * np.pi / period)[..., None] * rng.uniform(8, 30) * strength)
    grain = rng.normal(0.0, rng.uniform(2, 10), size=(h, w, 1)).astype(np.float32)
    return image + grain


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    image = _texture(rng, h, w, _random_colour(rng), strength=1.0)
    # Out-of-focus clutter: a few blurred shapes of other colours.
    for _ in range(int(rng.integers(2, 7))):
        mask = np.zeros((h, w), np.float32)
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 12 + 1, w // 3 + 2)), int(rng.integers(h // 12 + 1, h // 3 + 2)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        soft = cv2.GaussianBlur(mask, (0, 0), sigmaX=max(h, w) / rng.uniform(15, 40))[..., None]
        image = image * (1 - 0.6 * soft) + _random_colour(rng) * 0.6 * soft
    return image


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A binary object mask (float32 0/1) covering roughly 5–45 % of the frame."""
    mask: np.ndarray = np.zeros((h, w), np.float32)
    side = min(h, w)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    kind = rng.choice(["ellipse", "polygon", "star", "blob", "union"])
    parts = int(rng.integers(2, 4)) if kind == "union" else 1
    for _ in range(parts):
        part = kind if kind != "union" else rng.choice(["ellipse", "polygon", "star"])
        radius = rng.uniform(0.15, 0.35) * side
        ox, oy = (rng.normal(0, 0.12 * side, size=2) if kind == "union" else (0.0, 0.0))
        centre = (cx + ox, cy + oy)
        if part == "ellipse":
            axes = (int(radius * rng.uniform(0.6, 1.3)), int(radius * rng.uniform(0.5, 1.2)))
            cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        elif part in ("polygon", "star"):
            n = int(rng.integers(3, 9)) * (2 if part == "star" else 1)
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
            radii = radius * rng.uniform(0.55, 1.2, size=n)
            if part == "star":
                radii[::2] *= rng.uniform(0.35, 0.6)
                angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
            pts = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)
            cv2.fillPoly(mask, [pts.astype(np.int32)], 1.0)
        else:  # blob: a thresholded smooth noise field inside a soft disc
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            disc = 1.0 - np.hypot((xx - centre[0]) / (radius * 1.3), (yy - centre[1]) / (radius * 1.3))
            field = disc + 0.5 * (_smooth_noise(rng, h, w, int(rng.integers(4, 10))) - 0.5)
            mask = np.maximum(mask, (field > 0.25).astype(np.float32))
    return mask


def _hair(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Thin strokes leaving the object boundary, with partial opacity (hair, fur, twigs)."""
    h, w = mask.shape
    strokes = np.zeros_like(mask)
    edge = cv2.Canny((mask * 255).astype(np.uint8), 50, 150)
    ys, xs = np.nonzero(edge)
    if len(xs) == 0:
        return mask
    cy, cx = np.argwhere(mask > 0).mean(axis=0)
    for _ in range(int(rng.integers(10, 60))):
        i = int(rng.integers(0, len(xs)))
        x, y = float(xs[i]), float(ys[i])
        direction = np.arctan2(y - cy, x - cx) + rng.normal(0, 0.5)
        length = rng.uniform(0.03, 0.12) * min(h, w)
        pts = []
        for t in np.linspace(0, 1, 8):
            bend = direction + rng.normal(0, 0.15)
            pts.append((x + np.cos(bend) * length * t, y + np.sin(bend) * length * t))
        cv2.polylines(strokes, [np.array(pts, np.int32)], False, float(rng.uniform(0.5, 1.0)), 1, cv2.LINE_AA)
    return np.maximum(mask, strokes)


def generate_scene(seed: int, size: tuple[int, int] = (256, 256), empty_probability: float = 0.05) -> Scene:
    """One scene of ``size = (height, width)``, a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    h, w = size
    background = _background(rng, h, w)
    if rng.random() < empty_probability:
        return Scene(background.clip(0, 255).astype(np.uint8), np.zeros((h, w), np.float32), seed)
    mask = _shape_mask(rng, h, w)
    edge_style = rng.choice(["hard", "soft", "hair"], p=[0.4, 0.35, 0.25])
    if edge_style == "hair":
        mask = _hair(rng, mask)
    if edge_style in ("soft", "hair"):
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=rng.uniform(0.6, 2.0))
    alpha = mask.clip(0.0, 1.0)
    # A foreground colour that stands out from the local background.
    bg_mean = background[alpha > 0.5].mean(axis=0) if (alpha > 0.5).any() else background.mean(axis=(0, 1))
    colour = _random_colour(rng)
    for _ in range(20):
        if np.abs(colour - bg_mean).sum() > 150:
            break
        colour = _random_colour(rng)
    foreground = _texture(rng, h, w, colour, strength=0.5)
    # Shading: darker towards one side, as a lit 3-D object.
    shade = cv2.GaussianBlur(mask, (0, 0), sigmaX=min(h, w) / 20)[..., None]
    foreground = foreground * (0.75 + 0.25 * shade)
    composite = alpha[..., None] * foreground + (1.0 - alpha[..., None]) * background
    rgb = composite.clip(0, 255).astype(np.uint8)
    return Scene(rgb, alpha.astype(np.float32), seed, foreground.clip(0, 255).astype(np.float32))


def random_size(
    seed: int, short: tuple[int, int] = (192, 480), aspect: tuple[float, float] = (0.6, 1.7)
) -> tuple[int, int]:
    """A reproducible ``(height, width)`` with a random aspect ratio (for varied test scenes)."""
    rng = np.random.default_rng(seed + 7_654_321)
    side = int(rng.integers(short[0], short[1]))
    ratio = rng.uniform(*aspect)
    return (side, int(side * ratio)) if ratio >= 1 else (int(side / ratio), side)


def encode_scene(rgb: np.ndarray, image_format: str = "JPEG", orientation: int = 1, quality: int = 95) -> bytes:
    """Encode ``rgb`` as an upload would arrive: JPEG, PNG, WEBP or BMP.

    With ``orientation`` 3, 6 or 8 the pixels are stored rotated and an EXIF Orientation tag says
    how to turn them back, so a correct decoder recovers ``rgb`` exactly as displayed.
    """
    import io

    from PIL import Image

    stored = {1: rgb, 3: np.rot90(rgb, 2), 6: np.rot90(rgb, 1), 8: np.rot90(rgb, 3)}[orientation]
    image = Image.fromarray(np.ascontiguousarray(stored))
    buffer = io.BytesIO()
    kwargs: dict[str, object] = {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    if image_format == "JPEG":
        kwargs["quality"] = quality
    elif image_format == "WEBP":
        kwargs["lossless"] = True
    image.save(buffer, format=image_format, **kwargs)
    return buffer.getvalue()


def held_out_uploads(count: int, first_seed: int = EVALUATION_SEED) -> list[tuple[str, bytes, np.ndarray]]:
    """``(file name, upload bytes, ground-truth alpha)`` for held-out scenes never used in training.

    Sizes and aspect ratios vary (:func:`random_size`), formats cycle through JPEG, PNG, WebP and
    BMP, JPEG/WebP uploads carry EXIF orientations 1, 3, 6 and 8, and about 6 % have no subject.
    The alpha is in display orientation, as the service's output is.
    """
    cases = []
    for i in range(count):
        seed = first_seed + i
        scene = generate_scene(seed, random_size(seed), empty_probability=0.06)
        image_format = _UPLOAD_FORMATS[i % len(_UPLOAD_FORMATS)]
        orientation = _ORIENTATIONS[i % len(_ORIENTATIONS)] if image_format in ("JPEG", "WEBP") else 1
        data = encode_scene(scene.rgb, image_format, orientation)
        cases.append((f"scene-{seed}.{image_format.lower()}", data, scene.alpha))
    return cases
