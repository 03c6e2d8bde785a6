from __future__ import annotations

import numpy as np
import pytest

from pipelines.quality import QualityScores, boundary_f, f_measure, iou, mae


def _square(offset: int = 0, size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    mask[16 + offset:48 + offset, 16:48] = 1.0
    return mask


def test_identical_masks_score_perfectly() -> None:
    scores = QualityScores.of(_square(), _square())
    assert scores == QualityScores(1.0, 1.0, 0.0, 1.0)


def test_iou_of_shifted_square() -> None:
    # 32x32 squares shifted by 8 rows: overlap 24x32, union 40x32
    assert iou(_square(8), _square()) == pytest.approx(24 / 40)


def test_empty_prediction_of_empty_scene_is_perfect() -> None:
    empty = np.zeros((32, 32), np.float32)
    assert iou(empty, empty) == 1.0 and f_measure(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0


def test_empty_prediction_of_a_subject_scores_zero() -> None:
    empty = np.zeros((64, 64), np.float32)
    assert iou(empty, _square()) == 0.0 and f_measure(empty, _square()) == 0.0
    assert boundary_f(empty, _square()) == 0.0


def test_mae_counts_soft_alpha() -> None:
    assert mae(np.full((4, 4), 0.25), np.zeros((4, 4))) == pytest.approx(0.25)


def test_boundary_f_tolerates_small_shifts_only() -> None:
    assert boundary_f(_square(1), _square(), tolerance=2) == 1.0
    assert boundary_f(_square(8), _square(), tolerance=2) < 0.8


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        iou(np.zeros((2, 2)), np.zeros((3, 3)))
