"""Mask quality measures for judging a matte against ground truth.

All functions take ``pred`` and ``target`` alpha maps of the same ``[H, W]`` shape with values in
``[0, 1]`` (float) and return floats in ``[0, 1]``. Scenes with no subject in either map count as
perfect for the region measures (an empty prediction of an empty scene is right).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

F_BETA_SQUARED = 0.3  # the usual weighting of precision in salient-object F-measures


def _check(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")


def iou(pred: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of the two maps thresholded at ``threshold``."""
    _check(pred, target)
    p, t = pred >= threshold, target >= threshold
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def f_measure(pred: np.ndarray, target: np.ndarray, threshold: float = 0.5,
              beta_squared: float = F_BETA_SQUARED) -> float:
    """F-beta of the thresholded maps (beta² = 0.3 by convention)."""
    _check(pred, target)
    p, t = pred >= threshold, target >= threshold
    if not p.any() and not t.any():
        return 1.0
    tp = np.logical_and(p, t).sum()
    precision = tp / max(p.sum(), 1)
    recall = tp / max(t.sum(), 1)
    if precision + recall == 0:
        return 0.0
    return float((1 + beta_squared) * precision * recall / (beta_squared * precision + recall))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute alpha error."""
    _check(pred, target)
    return float(np.abs(pred.astype(np.float64) - target.astype(np.float64)).mean())


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(bool)


def boundary_f(pred: np.ndarray, target: np.ndarray, threshold: float = 0.5, tolerance: int | None = None) -> float:
    """Boundary F-score: boundary pixels matched within ``tolerance`` px (default 0.75 % of the diagonal)."""
    _check(pred, target)
    if tolerance is None:
        tolerance = max(1, int(round(0.0075 * float(np.hypot(*pred.shape)))))
    bp, bt = _boundary(pred >= threshold), _boundary(target >= threshold)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    near_t = cv2.dilate(bt.astype(np.uint8), kernel).astype(bool)
    near_p = cv2.dilate(bp.astype(np.uint8), kernel).astype(bool)
    precision = (bp & near_t).sum() / bp.sum()
    recall = (bt & near_p).sum() / bt.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def recomposite_error(rgb: np.ndarray, alpha: np.ndarray, foreground: np.ndarray) -> float:
    """How far a cut-out put on a new background is from the true object on it, where the cut-out is
    semi-transparent: the fringe a colour bleed shows as. With the true alpha on both sides the
    background cancels, so the error is ``α · |colour − true colour|`` on any background.

    Args:
        rgb: ``[H, W, 3]`` uint8 colours of the cut-out.
        alpha: ``[H, W]`` float true alpha in ``[0, 1]`` (only the colours are judged).
        foreground: ``[H, W, 3]`` float true object colour in ``[0, 255]``.

    Returns:
        Mean over the pixels with ``0 < alpha < 1`` and the three channels, in colour levels
        (0–255); 0 when there are none.
    """
    soft = (alpha > 0) & (alpha < 1)
    if not soft.any():
        return 0.0
    difference = alpha[soft][:, None] * np.abs(rgb[soft].astype(np.float64) - foreground[soft])
    return float(difference.mean())


@dataclass(frozen=True)
class QualityScores:
    """The four measures of one image (or their means over a set)."""

    iou: float
    f_measure: float
    mae: float
    boundary_f: float

    @classmethod
    def of(cls, pred: np.ndarray, target: np.ndarray) -> QualityScores:
        return cls(iou(pred, target), f_measure(pred, target), mae(pred, target), boundary_f(pred, target))

    @classmethod
    def mean(cls, scores: list[QualityScores]) -> QualityScores:
        if not scores:
            raise ValueError("no scores to average")
        return cls(*(float(np.mean([getattr(s, f) for s in scores])) for f in ("iou", "f_measure", "mae",
                                                                                 "boundary_f")))
