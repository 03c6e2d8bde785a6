"""From matte to cut-out: resize back, smoothing, source alpha, cut-out compose, subject rule."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.datatypes import DecodedImage, ImageFormat, Matte, PreparedImage, RemovalOptions
from pipelines.errors import InferenceError
from pipelines.postprocess import (
    REFINED_ALPHA,
    Postprocessor,
    alpha_to_original_size,
    apply_source_alpha,
    compose_rgba,
    estimate_foreground,
    smooth_alpha,
    subject_present,
)
from pipelines.quality import recomposite_error
from pipelines.synthetic import EVALUATION_SEED, Scene, generate_scene
from tests import imagegen


def _prepared(width: int, height: int, alpha: np.ndarray | None = None) -> PreparedImage:
    rgb = imagegen.photo_like_rgb(width, height, seed=11)
    image = DecodedImage(rgb=rgb, alpha=alpha, source_format=ImageFormat.JPEG)
    return PreparedImage(image=image, model_input=np.zeros((64, 64, 3), np.uint8))


def _decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "RGBA"
    return np.asarray(image)


def test_alpha_to_original_size_is_bilinear_upsampling() -> None:
    matte = imagegen.subject_alpha(64, 64)
    resized = alpha_to_original_size(matte, (300, 200))
    assert resized.shape == (300, 200) and resized.dtype == np.uint8
    pillow = np.asarray(Image.fromarray(matte).resize((200, 300), Image.Resampling.BILINEAR))
    assert int(np.abs(resized.astype(np.int16) - pillow).max()) <= 3


@pytest.mark.parametrize("size", [(100, 1500), (1500, 100)])
def test_a_panorama_matte_edge_is_interpolated_along_its_long_axis(size: tuple[int, int]) -> None:
    edge = np.zeros((192, 192), np.uint8)
    edge[:, 96:] = 255  # a hard edge across the long axis, stretched 7.8× there
    matte = edge if size[1] > size[0] else edge.T
    resized = alpha_to_original_size(matte, size)
    line = (resized[size[0] // 2] if size[1] > size[0] else resized[:, size[1] // 2]).astype(int)
    # Bilinear: the edge ramps over ~8 pixels. INTER_AREA (nearest neighbour when it enlarges)
    # would leave one 255-level jump, a stair-step the 5×5 smoothing cannot hide.
    assert np.abs(np.diff(line)).max() <= 48
    assert ((line > 0) & (line < 255)).sum() >= 6
    assert resized.shape == size


def test_alpha_to_original_size_downscales_without_aliasing() -> None:
    stripes = np.tile(np.array([0, 255], np.uint8), (1024, 512))
    assert abs(int(alpha_to_original_size(stripes, (64, 64)).mean()) - 127) <= 1


def test_smooth_alpha_softens_edges_and_keeps_flat_regions() -> None:
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, 32:] = 255
    smoothed = smooth_alpha(alpha, 5)
    assert 0 < smoothed[10, 31] < 255 and 0 < smoothed[10, 32] < 255
    assert smoothed[10, 0] == 0 and smoothed[10, 63] == 255


def test_apply_source_alpha_multiplies() -> None:
    alpha = np.full((4, 4), 255, np.uint8)
    source = np.full((4, 4), 128, np.uint8)
    assert int(apply_source_alpha(alpha, source)[0, 0]) == 128
    assert int(apply_source_alpha(np.full((4, 4), 128, np.uint8), source)[0, 0]) == 64
    assert apply_source_alpha(alpha, None) is alpha


def test_compose_rgba_zeroes_colour_of_invisible_pixels() -> None:
    rgb = np.full((8, 8, 3), 200, np.uint8)
    alpha = np.zeros((8, 8), np.uint8)
    alpha[:, 4:] = 77
    rgba = compose_rgba(rgb, alpha)
    assert rgba.shape == (8, 8, 4)
    assert rgba[:, :4].max() == 0
    assert (rgba[:, 4:, :3] == 200).all() and (rgba[:, 4:, 3] == 77).all()


def test_subject_present_threshold_is_128() -> None:
    alpha = np.zeros((8, 8), np.uint8)
    alpha[3, 3] = 127
    assert not subject_present(alpha)
    alpha[3, 3] = 128
    assert subject_present(alpha)


def test_compose_returns_lossless_png_at_original_size() -> None:
    prepared = _prepared(200, 150)
    matte = Matte(alpha=imagegen.subject_alpha(64, 64), model_name="test")
    encoded = Postprocessor().compose(prepared, matte, RemovalOptions(smoothing=False, refine_foreground=False))
    decoded = _decode_png(encoded.data)
    alpha = alpha_to_original_size(matte.alpha, (150, 200))
    assert (encoded.width, encoded.height) == (200, 150) and decoded.shape == (150, 200, 4)
    assert np.array_equal(decoded, compose_rgba(prepared.image.rgb, alpha))
    assert encoded.media_type == "image/png"
    assert encoded.subject_found and not encoded.smoothing_applied and not encoded.foreground_refined
    refined = Postprocessor().compose(prepared, matte, RemovalOptions(smoothing=False))
    assert refined.foreground_refined
    expected = compose_rgba(estimate_foreground(prepared.image.rgb, alpha), alpha)
    assert np.array_equal(_decode_png(refined.data), expected)


def test_compose_applies_smoothing_when_asked() -> None:
    prepared = _prepared(128, 128)
    matte_alpha = np.zeros((64, 64), np.uint8)
    matte_alpha[:, 32:] = 255
    matte = Matte(alpha=matte_alpha, model_name="test")
    smooth = Postprocessor().compose(prepared, matte, RemovalOptions(smoothing=True))
    sharp = Postprocessor().compose(prepared, matte, RemovalOptions(smoothing=False))
    assert smooth.smoothing_applied
    edge_smooth = _decode_png(smooth.data)[:, 60:68, 3]
    edge_sharp = _decode_png(sharp.data)[:, 60:68, 3]
    assert np.count_nonzero((edge_smooth > 0) & (edge_smooth < 255)) > np.count_nonzero(
        (edge_sharp > 0) & (edge_sharp < 255)
    )


def test_compose_multiplies_source_alpha() -> None:
    source_alpha = np.zeros((100, 100), np.uint8)
    source_alpha[:, 50:] = 255
    prepared = _prepared(100, 100, alpha=source_alpha)
    matte = Matte(alpha=np.full((64, 64), 255, np.uint8), model_name="test")
    decoded = _decode_png(Postprocessor().compose(prepared, matte, RemovalOptions()).data)
    assert decoded[:, :48, 3].max() == 0 and decoded[:, 52:, 3].min() == 255


def test_compose_keeps_empty_matte_empty() -> None:
    prepared = _prepared(100, 80)
    matte = Matte(alpha=np.full((64, 64), 3, np.uint8), model_name="test")
    encoded = Postprocessor().compose(prepared, matte, RemovalOptions())
    assert not encoded.subject_found
    assert _decode_png(encoded.data)[..., 3].max() == 3


def test_compose_rejects_matte_of_wrong_layout() -> None:
    matte = Matte(alpha=np.zeros((64, 64, 1), np.float32), model_name="test")
    with pytest.raises(InferenceError):
        Postprocessor().compose(_prepared(64, 64), matte, RemovalOptions())


def test_postprocessor_rejects_even_kernel() -> None:
    with pytest.raises(ValueError):
        Postprocessor(smoothing_kernel=4)


def test_compose_carries_the_source_colour_profile_into_the_png() -> None:
    prepared = _prepared(96, 64)
    profile = imagegen.rgb_icc_profile()
    with_profile = PreparedImage(
        image=DecodedImage(prepared.image.rgb, None, ImageFormat.JPEG, icc_profile=profile),
        model_input=prepared.model_input,
    )
    matte = Matte(alpha=imagegen.subject_alpha(64, 64), model_name="test")
    encoded = Postprocessor().compose(with_profile, matte, RemovalOptions())
    assert Image.open(io.BytesIO(encoded.data)).info["icc_profile"] == profile
    plain = Postprocessor().compose(prepared, matte, RemovalOptions())
    assert np.array_equal(_decode_png(encoded.data), _decode_png(plain.data))


def blur_fusion_at_full_resolution(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The oracle: BiRefNet's refine_foreground as published (two blur-fusion passes, r = 90 then 6,
    every array at full resolution), for judging the shortcuts of estimate_foreground."""
    image = rgb.astype(np.float32) / 255
    a = (alpha.astype(np.float32) / 255)[..., None]

    def fuse(fg: np.ndarray, bg: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        mean_alpha = cv2.blur(a, (radius, radius))[..., None]
        mean_fg = cv2.blur(fg * a, (radius, radius)) / (mean_alpha + 1e-5)
        mean_bg = cv2.blur(bg * (1 - a), (radius, radius)) / (1 - mean_alpha + 1e-5)
        return np.clip(mean_fg + a * (image - a * mean_fg - (1 - a) * mean_bg), 0, 1), mean_bg

    fg, bg = fuse(image, image, 90)
    return np.rint(fuse(fg, bg, 6)[0] * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def soft_scenes() -> list[Scene]:
    """Held-out generated scenes whose objects have soft or hairy edges, with their true colours."""
    scenes = (generate_scene(EVALUATION_SEED + i, (240, 320), empty_probability=0.0) for i in range(60))
    return [s for s in scenes if ((s.alpha > 0.02) & (s.alpha < 0.98)).sum() > 500][:6]


def _alpha8(scene: Scene) -> np.ndarray:
    return np.rint(scene.alpha * 255).astype(np.uint8)


def test_estimate_foreground_changes_only_clearly_semi_transparent_pixels(soft_scenes: list[Scene]) -> None:
    scene = soft_scenes[0]
    alpha = _alpha8(scene)
    refined = estimate_foreground(scene.rgb, alpha)
    kept = (alpha < REFINED_ALPHA[0]) | (alpha > REFINED_ALPHA[1])  # flat, or within 4 levels of it
    assert np.array_equal(refined[kept], scene.rgb[kept])
    assert not np.array_equal(refined[~kept], scene.rgb[~kept])
    hard = np.where(alpha >= 128, 255, 0).astype(np.uint8)
    assert estimate_foreground(scene.rgb, hard) is scene.rgb  # nothing to estimate


def test_estimate_foreground_stays_close_to_the_published_full_resolution_form(soft_scenes: list[Scene]) -> None:
    for scene in soft_scenes:
        alpha = _alpha8(scene)
        soft = (alpha >= REFINED_ALPHA[0]) & (alpha <= REFINED_ALPHA[1])
        oracle = blur_fusion_at_full_resolution(scene.rgb, alpha).astype(np.int16)
        ours = estimate_foreground(scene.rgb, alpha).astype(np.int16)
        moved = np.abs(oracle - scene.rgb)[soft].mean()
        assert np.abs(ours - oracle)[soft].mean() < max(2.5, moved / 10), scene.seed


def test_estimate_foreground_removes_most_of_the_background_bleed(soft_scenes: list[Scene]) -> None:
    # Judged with the true alpha, so only the colours differ: the bleed is what the composite put in.
    before = [recomposite_error(s.rgb, s.alpha, s.foreground) for s in soft_scenes if s.foreground is not None]
    after = [
        recomposite_error(estimate_foreground(s.rgb, _alpha8(s)), s.alpha, s.foreground)
        for s in soft_scenes
        if s.foreground is not None
    ]
    assert len(after) == len(soft_scenes) >= 3
    assert np.mean(after) < 0.5 * np.mean(before), (before, after)


def test_a_transparent_source_keeps_its_own_colours() -> None:
    alpha = imagegen.subject_alpha(96, 64)
    prepared = _prepared(96, 64, alpha=np.full((64, 96), 200, np.uint8))
    matte = Matte(alpha=imagegen.subject_alpha(64, 64), model_name="test")
    encoded = Postprocessor().compose(prepared, matte, RemovalOptions(smoothing=False))
    assert not encoded.foreground_refined
    decoded = _decode_png(encoded.data)
    visible = decoded[..., 3] > 0
    assert alpha.shape == visible.shape and np.array_equal(decoded[..., :3][visible], prepared.image.rgb[visible])


def test_estimate_foreground_handles_a_matte_soft_everywhere_in_bands() -> None:
    # A faint or hazy matte can make most pixels soft: the work goes band by band, and the result
    # is the same as for the image cut in two.
    rgb = imagegen.photo_like_rgb(320, 300, seed=5)
    alpha = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (300, 1))
    whole = estimate_foreground(rgb, alpha)
    assert np.count_nonzero(whole != rgb) > 0.5 * rgb.size
    flat = (alpha < REFINED_ALPHA[0]) | (alpha > REFINED_ALPHA[1])
    assert np.array_equal(whole[flat], rgb[flat])
    oracle = blur_fusion_at_full_resolution(rgb, alpha).astype(np.int16)
    assert np.abs(whole.astype(np.int16) - oracle)[~flat].mean() < 3


def test_faint_matte_residue_is_left_alone() -> None:
    rgb = imagegen.photo_like_rgb(200, 150, seed=6)
    residue = np.full((150, 200), 2, np.uint8)  # sigmoid residue over a background: invisible
    assert estimate_foreground(rgb, residue) is rgb


def test_a_thin_strip_blurs_each_axis_by_its_own_scale() -> None:
    # 1 px wide: the low-resolution image is 1 px wide too, so the width's scale says nothing of
    # the height's; a vertical box sized from it would average 4x too far.
    rgb = imagegen.photo_like_rgb(1, 1000, seed=7)
    alpha = np.zeros((1000, 1), np.uint8)
    alpha[:500], alpha[497:503] = 255, 100
    soft = alpha[:, 0] == 100
    oracle = blur_fusion_at_full_resolution(rgb, alpha).astype(np.int16)
    assert np.abs(estimate_foreground(rgb, alpha).astype(np.int16) - oracle)[soft].mean() < 3
