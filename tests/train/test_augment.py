"""Sample augmentation: affine geometry, random ranges, grid warp, HSV jitter and the shared transform."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
import pytest

from train.augment import (
    AffineParams,
    HsvShift,
    WarpMaps,
    affine_landmarks,
    affine_matrix,
    apply_affine,
    apply_hsv_shift,
    apply_warp,
    draw_sample_transform,
    flip_landmarks,
    grid_warp_maps,
    hsv_jitter,
    random_affine,
    random_hsv_shift,
    random_warp,
    transform_sample,
)

IDENTITY = AffineParams(rotation_degrees=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, flip=False)


def _smooth_image(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.1, 0.9, size=(8, 8, 3)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _centroid(image: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    weight = image.sum()
    return np.array([(xs * image).sum() / weight, (ys * image).sum() / weight])


def test_identity_params_give_the_identity():
    np.testing.assert_array_equal(affine_matrix(IDENTITY, 64), [[1, 0, 0], [0, 1, 0]])
    image = _smooth_image(0)
    np.testing.assert_allclose(apply_affine(image, IDENTITY, "replicate"), image, atol=1e-6)


def test_rotation_moves_a_marker_where_hand_rotation_predicts():
    size = 64
    image = np.zeros((size, size), np.float32)
    image[30:33, 49:52] = 1.0  # centred on (x=50, y=31)
    params = AffineParams(rotation_degrees=30.0, scale=1.0, shift_x=0.0, shift_y=0.0, flip=False)
    moved = apply_affine(image, params, "constant")
    assert moved.shape == image.shape
    # Hand rotation in a y-up frame: counter-clockwise by 30° about the centre 31.5.
    dx, dy_up = 50 - 31.5, -(31 - 31.5)
    angle = np.radians(30)
    x_up = dx * np.cos(angle) - dy_up * np.sin(angle)
    y_up = dx * np.sin(angle) + dy_up * np.cos(angle)
    expected = np.array([31.5 + x_up, 31.5 - y_up])
    np.testing.assert_allclose(_centroid(moved), expected, atol=0.2)
    assert moved.sum() == pytest.approx(9.0, rel=0.05)


def test_scale_and_shift_move_a_point_as_computed():
    params = AffineParams(rotation_degrees=0.0, scale=1.1, shift_x=0.05, shift_y=-0.05, flip=False)
    matrix = affine_matrix(params, 100)
    point = np.array([10.0, 80.0])
    expected = (point - 49.5) * 1.1 + 49.5 + np.array([5.0, -5.0])
    np.testing.assert_allclose(matrix[:, :2] @ point + matrix[:, 2], expected)


def test_flip_mirrors_exactly():
    image = _smooth_image(1)
    flipped = apply_affine(image, AffineParams(0.0, 1.0, 0.0, 0.0, True), "replicate")
    np.testing.assert_allclose(flipped, image[:, ::-1], atol=1e-6)


def test_flipped_landmarks_keep_their_meaning():
    landmarks = np.random.default_rng(2).uniform(0, 63, size=(68, 2))
    landmarks[36] = [10.0, 20.0]  # subject's right eye corner, on the image's left
    flipped = flip_landmarks(landmarks, 64)
    # Index 45 (the other outer eye corner) now holds the mirrored point.
    np.testing.assert_allclose(flipped[45], [53.0, 20.0])
    via_affine = affine_landmarks(landmarks, AffineParams(0.0, 1.0, 0.0, 0.0, True), 64)
    np.testing.assert_allclose(via_affine, flipped, atol=1e-9)


def test_random_affine_respects_its_ranges():
    rng = np.random.default_rng(3)
    draws = [random_affine(rng, flip_probability=0.4) for _ in range(2000)]
    scales = np.array([draw.scale for draw in draws])
    rotations = np.array([draw.rotation_degrees for draw in draws])
    shifts = np.array([[draw.shift_x, draw.shift_y] for draw in draws])
    assert scales.min() >= 1 / 1.15 and scales.max() <= 1.15
    # Uniform draws reach close to both ends.
    assert scales.min() < 1 / 1.15 + 0.01 and scales.max() > 1.15 - 0.01
    assert rotations.min() >= -10 and rotations.max() <= 10 and rotations.min() < -9.8 and rotations.max() > 9.8
    assert np.abs(shifts).max() <= 0.05 and np.abs(shifts).max() > 0.049
    flip_rate = np.mean([draw.flip for draw in draws])
    assert abs(flip_rate - 0.4) < 0.05
    assert not any(random_affine(rng, flip_probability=0.0).flip for _ in range(50))


def test_random_affine_rejects_a_bad_probability():
    with pytest.raises(ValueError, match="flip_probability"):
        random_affine(np.random.default_rng(0), flip_probability=1.5)


def test_zero_offsets_give_the_identity_warp_at_every_size():
    for size, nodes in [(64, 5), (32, 3), (96, 9)]:
        maps = grid_warp_maps(np.zeros((nodes, nodes)), np.zeros((nodes, nodes)), size)
        assert maps.map_x.shape == (size, size) and maps.map_x.dtype == np.float32
        ys, xs = np.mgrid[:size, :size]
        np.testing.assert_allclose(maps.map_x, xs, atol=1e-4)
        np.testing.assert_allclose(maps.map_y, ys, atol=1e-4)


def test_grid_maps_equal_a_resize_and_crop_of_the_grid():
    size, cells = 64, 4
    cell = size // cells
    offsets = np.random.default_rng(4).normal(0, 3, size=(2, cells + 1, cells + 1))
    maps = grid_warp_maps(offsets[0], offsets[1], size)
    nodes = np.arange(cells + 1) * cell - 0.5
    grid_x = (nodes[None, :] + offsets[0]).astype(np.float32)
    grid_y = (nodes[:, None] + offsets[1]).astype(np.float32)
    half = cell // 2
    for grid, result in [(grid_x, maps.map_x), (grid_y, maps.map_y)]:
        resized = cv2.resize(grid, (size + cell, size + cell), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(result, resized[half : half + size, half : half + size], atol=1e-3)


def test_random_warp_keeps_the_border_and_moves_the_interior_by_the_cell():
    size = 64
    rng = np.random.default_rng(5)
    ys, xs = np.mgrid[:size, :size]
    by_cell: dict[float, list[tuple[float, float, float]]] = {}
    for _ in range(60):
        maps = random_warp(rng, size)
        assert maps.map_x.shape == (size, size) and maps.map_y.shape == (size, size)
        assert maps.cell in (32.0, 16.0, 8.0)
        distance = np.hypot(maps.map_x - xs, maps.map_y - ys)
        ring = np.concatenate([distance[0], distance[-1], distance[:, 0], distance[:, -1]])
        interior = distance[size // 4 : -size // 4, size // 4 : -size // 4]
        by_cell.setdefault(maps.cell, []).append((ring.mean(), interior.mean(), distance.max()))
    assert len(by_cell) == 3
    for cell, rows in by_cell.items():
        table = np.array(rows)
        ring_mean, interior_mean, largest = table[:, 0].mean(), table[:, 1].mean(), table[:, 2].max()
        # Interior nodes move by N(0, 1)·0.24·cell per axis; bilinear blending between them
        # shrinks the typical pixel move to ~0.2·cell.
        assert 0.1 * cell < interior_mean < 0.3 * cell
        assert largest < 1.2 * cell
        # Border nodes are fixed, so edge pixels barely move.
        assert ring_mean < 0.05 * cell


def test_small_images_are_warped_at_64_and_scaled_down():
    maps = random_warp(np.random.default_rng(6), 32)
    assert maps.map_x.shape == (32, 32)
    assert maps.cell in (16.0, 8.0, 4.0)
    assert -1 <= maps.map_x.min() and maps.map_x.max() <= 32


def test_apply_warp_remaps_as_the_maps_say():
    size = 64
    image = _smooth_image(7, size)
    ys, xs = np.mgrid[:size, :size].astype(np.float32)
    # A whole-pixel shift: output (y, x) reads input (y, x + 3), replicated at the right edge.
    shifted = apply_warp(image, WarpMaps(xs + 3, ys, cell=16.0))
    np.testing.assert_allclose(shifted[:, :-3], image[:, 3:], atol=1e-6)
    np.testing.assert_allclose(shifted[:, -1], image[:, -1], atol=1e-6)


def test_same_seed_gives_the_same_transform():
    first = draw_sample_transform(np.random.default_rng(8), 64, random_warp=True, flip_probability=0.4,
                                  hsv_power=0.05)
    second = draw_sample_transform(np.random.default_rng(8), 64, random_warp=True, flip_probability=0.4,
                                   hsv_power=0.05)
    assert first.affine == second.affine and first.hsv == second.hsv
    np.testing.assert_array_equal(first.warp.map_x, second.warp.map_x)
    np.testing.assert_array_equal(first.warp.map_y, second.warp.map_y)
    other = draw_sample_transform(np.random.default_rng(9), 64, random_warp=True, flip_probability=0.4)
    assert other.affine != first.affine
    # The affine comes first, so turning the warp off keeps the same geometry for the seed.
    unwarped = draw_sample_transform(np.random.default_rng(8), 64, random_warp=False, flip_probability=0.4)
    assert unwarped.affine == first.affine and unwarped.warp is None and unwarped.hsv is None


def test_hsv_power_zero_is_identity():
    image = _smooth_image(10)
    assert random_hsv_shift(np.random.default_rng(0), 0.0) == HsvShift(0, 0.0, 0.0)
    np.testing.assert_array_equal(hsv_jitter(image, np.random.default_rng(0), 0.0), image)


def test_hsv_shift_draws_stay_in_bounds():
    rng = np.random.default_rng(11)
    shifts = [random_hsv_shift(rng, 0.3) for _ in range(500)]
    hues = np.array([shift.hue_degrees for shift in shifts])
    assert hues.min() >= -54 and hues.max() <= 54 and hues.min() < -45 and hues.max() > 45
    others = np.array([[shift.saturation, shift.value] for shift in shifts])
    assert np.abs(others).max() <= 0.15 and np.abs(others).max() > 0.14


def test_hsv_shift_rotates_hue_against_colorsys():
    # Mid saturation and value, so the S and V shifts do not clip.
    colours_rgb = [(0.6, 0.3, 0.3), (0.3, 0.6, 0.35), (0.35, 0.3, 0.6), (0.55, 0.5, 0.25)]
    image = np.array([[rgb[::-1] for rgb in colours_rgb]], dtype=np.float32)
    shift = HsvShift(hue_degrees=-40, saturation=0.1, value=-0.05)
    shifted = apply_hsv_shift(image, shift)
    assert shifted.dtype == np.float32 and shifted.min() >= 0 and shifted.max() <= 1
    for before, after in zip(image[0], shifted[0]):
        h0, s0, v0 = colorsys.rgb_to_hsv(*before[::-1])
        h1, s1, v1 = colorsys.rgb_to_hsv(*after[::-1])
        hue_change = ((h1 - h0) * 360 + 180) % 360 - 180
        assert hue_change == pytest.approx(-40, abs=0.5)
        assert s1 == pytest.approx(s0 + 0.1, abs=1e-3)
        assert v1 == pytest.approx(v0 - 0.05, abs=1e-3)


def test_hsv_hue_wraps_round_360():
    red = np.array([[[0.2, 0.2, 0.8]]], dtype=np.float32)  # BGR, hue 0
    shifted = apply_hsv_shift(red, HsvShift(hue_degrees=-30, saturation=0.0, value=0.0))
    hue = colorsys.rgb_to_hsv(*shifted[0, 0, ::-1])[0] * 360
    assert hue == pytest.approx(330, abs=0.5)


def test_hsv_jitter_with_power_changes_the_image_within_bounds():
    image = _smooth_image(12)
    jittered = hsv_jitter(image, np.random.default_rng(13), 0.3)
    assert jittered.shape == image.shape and jittered.dtype == np.float32
    assert jittered.min() >= 0 and jittered.max() <= 1
    assert np.abs(jittered - image).mean() > 0.005


def test_transform_sample_targets_share_the_affine_and_only_the_input_is_warped():
    size = 64
    image = _smooth_image(14, size)
    mask = np.zeros((size, size, 1), np.float32)
    mask[16:48, 16:48] = 1.0
    transform = draw_sample_transform(np.random.default_rng(15), size, random_warp=True, flip_probability=0.5)
    network_input, target, target_masks = transform_sample(image, {"face": mask}, transform)
    np.testing.assert_array_equal(target, apply_affine(image, transform.affine, "replicate"))
    np.testing.assert_array_equal(target_masks["face"], apply_affine(mask, transform.affine, "constant"))
    assert target_masks["face"].shape == (size, size, 1)
    assert np.abs(network_input - target).mean() > 0.005
    expected_input = apply_affine(apply_warp(image, transform.warp), transform.affine, "replicate")
    np.testing.assert_array_equal(network_input, expected_input)

    plain = draw_sample_transform(np.random.default_rng(15), size, random_warp=False, flip_probability=0.5)
    plain_input, plain_target, _ = transform_sample(image, {}, plain)
    np.testing.assert_array_equal(plain_input, plain_target)
    np.testing.assert_array_equal(plain_target, target)


def test_masks_get_a_zero_border_and_images_a_replicated_one():
    size = 64
    ones = np.ones((size, size), np.float32)
    params = AffineParams(rotation_degrees=10.0, scale=1 / 1.15, shift_x=0.0, shift_y=0.0, flip=False)
    assert apply_affine(ones, params, "constant")[0, 0] == 0.0
    assert apply_affine(ones, params, "replicate").min() == pytest.approx(1.0)


def test_transform_sample_rejects_a_mismatched_mask():
    transform = draw_sample_transform(np.random.default_rng(0), 64, random_warp=False, flip_probability=0.0)
    with pytest.raises(ValueError, match="mask"):
        transform_sample(_smooth_image(0), {"face": np.zeros((32, 32), np.float32)}, transform)
