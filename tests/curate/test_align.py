"""Alignment geometry: the similarity fit, DFL face types, the mean face and the crop warp."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curate.faces.align import (
    FACE_TYPES, TEMPLATE_INDICES, aligned_face_size, face_transform, hull_mask,
    similarity_transform, transform_points, warp_face,
)
from curate.faces.landmarks68 import MIRROR_ORDER, mirror
from curate.faces.mean_face import MEAN_FACE_33
from tests.curate.conftest import load_bgr


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(12, 2)) * 50
    angle, scale, shift = 0.7, 1.8, np.array([30.0, -12.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = source @ rotation.T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    with pytest.raises(ValueError):
        similarity_transform(source, target[:5])


def test_mean_face_is_upright_symmetric_and_fills_the_unit_square():
    assert MEAN_FACE_33.shape == (33, 2)
    np.testing.assert_allclose(MEAN_FACE_33.min(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(MEAN_FACE_33.max(axis=0), 1, atol=1e-6)
    # mirroring the template (x -> 1 - x, left/right landmarks swapped) gives the template back
    position = {index: k for k, index in enumerate(TEMPLATE_INDICES)}
    partner = [position.get(MIRROR_ORDER[index]) for index in TEMPLATE_INDICES]
    paired = [(k, p) for k, p in enumerate(partner) if p is not None]
    assert len(paired) >= 30
    for k, p in paired:
        assert MEAN_FACE_33[k, 0] == pytest.approx(1 - MEAN_FACE_33[p, 0], abs=0.01)
        assert MEAN_FACE_33[k, 1] == pytest.approx(MEAN_FACE_33[p, 1], abs=0.01)


@pytest.fixture(scope="module")
def obama_face(analyzer, obama_paths):
    image = load_bgr(obama_paths[0])
    return image, analyzer.analyze([image])[0][0]


def test_face_types_grow_in_the_documented_order(obama_face):
    _, face = obama_face
    sizes = [aligned_face_size(face_transform(face.landmarks68, kind, 256), 256) for kind in FACE_TYPES]
    assert all(a < b for a, b in zip(sizes, sizes[1:])), dict(zip(FACE_TYPES, sizes))
    # padding per type (SAEHD.md §4): the side grows as (pad·√2 + 0.5)·√2 relative to half
    expected = [(pad * np.sqrt(2) + 0.5) / 0.5 for pad in (0.0, 0.0675, 0.2109375, 0.40, 0.70)]
    np.testing.assert_allclose(np.array(sizes) / sizes[0], expected, rtol=1e-6)


@pytest.mark.parametrize("face_type", FACE_TYPES)
def test_aligned_face_is_centred_and_level(obama_face, face_type):
    image, face = obama_face
    matrix = face_transform(face.landmarks68, face_type, 256)
    points = transform_points(matrix, face.landmarks68)
    right_eye, left_eye = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    tilt = np.degrees(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    assert abs(tilt) < 3
    nose_x = points[27:31, 0].mean()
    assert 256 * 0.4 < nose_x < 256 * 0.6
    # half and mid_full crops cut the jaw (and half the lower lip) by design
    # (the half crop's edges run through the brow ends and mouth corners)
    inner, margin = (points[17:55], 32) if face_type == "half" else (points[17:], 16)
    assert ((inner >= -margin) & (inner <= 256 + margin)).all()
    crop = warp_face(image, matrix, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8


def test_whole_face_sits_higher_than_full(obama_face):
    """whole_face moves the square 7 % towards the forehead: the chin rises in the crop."""
    _, face = obama_face
    full = transform_points(face_transform(face.landmarks68, "full", 256), face.landmarks68)
    whole = transform_points(face_transform(face.landmarks68, "whole_face", 256), face.landmarks68)
    # chin position relative to the eyes, both normalised by the crop scale
    def chin_below_eyes(points):
        return (points[8, 1] - points[36:48, 1].mean()) / 256

    assert chin_below_eyes(whole) < chin_below_eyes(full)
    assert whole[8, 1] / 256 > 0.5  # the chin is still in the lower half


def test_roll_is_removed_and_mirroring_mirrors_the_crop(obama_face):
    image, face = obama_face
    height, width = image.shape[:2]
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), 20, 1.0)
    rotated = cv2.warpAffine(image, rotation, (width, height))
    rotated_landmarks = transform_points(rotation, face.landmarks68)
    straight = transform_points(face_transform(face.landmarks68, "whole_face", 256), face.landmarks68)
    from_rotated = transform_points(face_transform(rotated_landmarks, "whole_face", 256), rotated_landmarks)
    np.testing.assert_allclose(from_rotated, straight, atol=1e-3)  # float32 inside OpenCV
    crop = warp_face(rotated, face_transform(rotated_landmarks, "whole_face", 256), 256)
    reference = warp_face(image, face_transform(face.landmarks68, "whole_face", 256), 256)
    assert np.abs(crop.astype(int) - reference).mean() < 8

    mirrored_points = mirror(face.landmarks68, width)
    mirrored_crop = warp_face(np.ascontiguousarray(image[:, ::-1]),
                              face_transform(mirrored_points, "whole_face", 256), 256)
    assert np.abs(mirrored_crop[:, ::-1].astype(int) - reference).mean() < 8


def test_shrinking_warp_matches_a_lanczos_warp(obama_paths, analyzer):
    image = load_bgr(obama_paths[2])  # the largest photo: its face is shrunk ~1.7×
    face = analyzer.analyze([image])[0][0]
    matrix = face_transform(face.landmarks68, "whole_face", 256)
    assert aligned_face_size(matrix, 256) > 256 / 0.8  # takes the pre-shrink path
    crop = warp_face(image, matrix, 256)
    lanczos = cv2.warpAffine(image, matrix, (256, 256), flags=cv2.INTER_LANCZOS4,
                             borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(crop.astype(int) - lanczos).mean() < 3


def test_hull_mask_covers_the_face_landmarks(obama_face):
    _, face = obama_face
    matrix = face_transform(face.landmarks68, "whole_face", 128)
    points = transform_points(matrix, face.landmarks68)
    mask = hull_mask(points, 128)
    assert mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    inside = [mask[int(y), int(x)] for x, y in points[27:48]]  # nose, eyes
    assert min(inside) == 1.0
    assert 0.2 < mask.mean() < 0.8
