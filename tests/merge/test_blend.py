"""Merger compositing on synthetic frames: masks, warping back, modes, colour, sharpening, motion blur."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curate.faces.align import invert_affine, transform_points
from merge.blend import (
    FaceToBlend,
    blend_face,
    blend_faces,
    combine_masks,
    histogram_match,
    motion_blur,
    process_mask,
    scale_face_matrix,
    sharpen,
    warp_to_frame,
)
from merge.settings import MergeSettings

HEIGHT, WIDTH, R = 160, 200, 64
FACE_COLOUR = np.array([0.2, 0.6, 0.9], dtype=np.float32)


def _gradient_frame() -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    return np.stack([x / WIDTH, y / HEIGHT, 0.5 + 0.25 * np.sin(x / 17.0 + y / 23.0)], axis=-1).astype(np.float32)


def _textured(shape: tuple[int, int], seed: int, mean: float, spread: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal((*shape, 3)).astype(np.float32), (0, 0), 1.5)
    noise /= noise.std()
    return np.clip(mean + spread * noise, 0.0, 1.0).astype(np.float32)


def _frame_to_face(centre_xy: tuple[float, float] = (100.0, 80.0), scale: float = 1.5,
                   angle_degrees: float = 10.0) -> np.ndarray:
    """frame -> face: the R² face square shown `scale` times larger, rotated, centred at centre_xy."""
    face_to_frame = cv2.getRotationMatrix2D((R / 2, R / 2), angle_degrees, scale)
    face_to_frame[:, 2] += np.array(centre_xy) - np.array([R / 2, R / 2])
    return invert_affine(face_to_frame)


def _rectangle_mask() -> np.ndarray:
    mask = np.zeros((R, R, 1), dtype=np.float32)
    mask[16:48, 12:52] = 1.0
    return mask


def _ellipse_mask() -> np.ndarray:
    mask = np.zeros((R, R), dtype=np.float32)
    cv2.ellipse(mask, (R // 2, R // 2), (22, 26), 0, 0, 360, 1.0, -1)
    return mask[..., None]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(mask[..., 0] > 1e-6)
    return int(rows.min()), int(rows.max()), int(columns.min()), int(columns.max())


def _settings(**values) -> MergeSettings:
    return MergeSettings(**{"color_transfer": "none", **values})


def _laplacian_variance(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var())


# -- masks -------------------------------------------------------------------------------------------


def test_overlay_puts_the_face_inside_the_mask_and_leaves_the_rest_exactly():
    frame = _gradient_frame()
    matrix = _frame_to_face()
    face = np.broadcast_to(FACE_COLOUR, (R, R, 3)).copy()
    mask = process_mask(_ellipse_mask(), R, erode=0, blur=16)
    merged, frame_mask = blend_face(frame, face, matrix, mask, _settings(mode="overlay"))
    assert merged.shape == frame.shape and merged.dtype == np.float32
    # The frame mask is the face mask pushed forward by face->frame, computed the other way round.
    forward = cv2.warpAffine(mask, invert_affine(matrix), (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)[..., None]
    np.testing.assert_allclose(frame_mask, forward, atol=1e-3)
    outside = frame_mask[..., 0] == 0
    inside = frame_mask[..., 0] > 0.999
    assert outside.sum() > 0.5 * HEIGHT * WIDTH and inside.sum() > 1000
    assert np.array_equal(merged[outside], frame[outside])
    np.testing.assert_allclose(merged[inside], np.broadcast_to(FACE_COLOUR, merged[inside].shape), atol=1e-3)
    partial = (frame_mask[..., 0] > 0.1) & (frame_mask[..., 0] < 0.9)
    expected = frame * (1 - frame_mask) + FACE_COLOUR * frame_mask
    np.testing.assert_allclose(merged[partial], expected[partial], atol=1e-4)


def test_erode_shrinks_the_mask_monotonically_and_negative_erode_grows_it():
    mask = _ellipse_mask()
    areas = [float(process_mask(mask, R, erode=value, blur=0).sum()) for value in (-40, -20, -6, 0, 6, 20, 40)]
    assert all(earlier > later for earlier, later in zip(areas, areas[1:], strict=False))
    assert areas[3] == pytest.approx(float(mask.sum()))
    # 40 quarter pixels = 10 face pixels: the rectangle loses 10 pixels on every side.
    assert _bbox(process_mask(_rectangle_mask(), R, erode=40, blur=0)) == (26, 37, 22, 41)
    assert _bbox(process_mask(_rectangle_mask(), R, erode=-20, blur=0)) == (11, 52, 7, 56)


@pytest.mark.parametrize("sides, expected", [
    ((20, 0, 0, 0), (21, 47, 12, 51)),
    ((0, 20, 0, 0), (16, 42, 12, 51)),
    ((0, 0, 20, 0), (16, 47, 17, 51)),
    ((0, 0, 0, 20), (16, 47, 12, 46)),
    ((-20, 0, 0, 0), (11, 47, 12, 51)),
    ((0, 0, 0, -20), (16, 47, 12, 56)),
    ((8, 0, -12, 0), (18, 47, 9, 51)),
])
def test_per_side_erode_moves_only_that_sides_edge(sides, expected):
    mask = _rectangle_mask()
    assert _bbox(process_mask(mask, R, erode=0, blur=0)) == (16, 47, 12, 51)
    processed = process_mask(mask, R, erode=0, blur=0, erode_sides=sides)
    assert _bbox(processed) == expected
    assert set(np.unique(processed)) <= {0.0, 1.0}


def test_fractional_erosion_softens_the_edge_between_whole_pixels():
    half = process_mask(_rectangle_mask(), R, erode=2, blur=0)
    assert _bbox(half) == (16, 47, 12, 51)
    assert half[16, 30, 0] == pytest.approx(0.5) and half[30, 30, 0] == 1.0
    assert float(process_mask(_rectangle_mask(), R, erode=4, blur=0).sum()) < float(half.sum())


def test_blur_softens_the_edge_but_keeps_the_centre_and_fades_at_the_square_border():
    mask = _ellipse_mask()
    blurred = process_mask(mask, R, erode=0, blur=24)
    assert blurred.shape == (R, R, 1) and blurred.dtype == np.float32
    assert blurred[R // 2, R // 2, 0] == pytest.approx(1.0, abs=1e-6)
    soft = (blurred > 0.02) & (blurred < 0.98)
    assert soft.sum() > 100
    assert ((process_mask(mask, R, 0, 0) > 0.02) & (process_mask(mask, R, 0, 0) < 0.98)).sum() == 0
    full = process_mask(np.ones((R, R, 1), np.float32), R, erode=0, blur=40)
    assert full[R // 2, R // 2, 0] == pytest.approx(1.0, abs=1e-6)
    assert full[0].max() < 0.01 and full[:, -1].max() < 0.01
    tiny = np.full((R, R, 1), 0.002, np.float32)
    assert process_mask(tiny, R, 0, 0).max() == 0.0


def test_combine_masks_follows_the_mask_mode():
    rng = np.random.default_rng(3)
    hull = (rng.random((R, R, 1)) > 0.5).astype(np.float32)
    predicted = rng.random((R, R, 1)).astype(np.float32)
    dst = rng.random((R, R, 1)).astype(np.float32)
    np.testing.assert_array_equal(combine_masks("full", hull, None, None), np.ones((R, R, 1)))
    np.testing.assert_array_equal(combine_masks("dst", hull, predicted, dst), hull)
    np.testing.assert_array_equal(combine_masks("learned-prd", hull, predicted, dst), predicted)
    np.testing.assert_array_equal(combine_masks("learned-dst", None, None, dst), dst)
    np.testing.assert_allclose(combine_masks("learned-prd*learned-dst", None, predicted, dst), predicted * dst)
    np.testing.assert_allclose(combine_masks("learned-prd+learned-dst", None, predicted, dst),
                               np.minimum(predicted + dst, 1.0))
    np.testing.assert_allclose(combine_masks("dst*learned-prd", hull, predicted, None), hull * predicted)
    with pytest.raises(ValueError, match="needs the hull"):
        combine_masks("dst", None, predicted, dst)


# -- geometry ----------------------------------------------------------------------------------------


def test_warp_to_frame_round_trips_a_pattern():
    y, x = np.mgrid[0:R, 0:R].astype(np.float32)
    pattern = np.stack([np.sin(x / 5.0), np.cos(y / 7.0), np.sin((x + y) / 9.0)], -1) * 0.4 + 0.5
    matrix = _frame_to_face()
    in_frame = warp_to_frame(pattern.astype(np.float32), matrix, (HEIGHT, WIDTH, 3))
    assert in_frame.shape == (HEIGHT, WIDTH, 3)
    back = cv2.warpAffine(in_frame, matrix, (R, R), flags=cv2.INTER_LINEAR)
    np.testing.assert_allclose(back[4:-4, 4:-4], pattern[4:-4, 4:-4], atol=0.02)
    single = warp_to_frame(np.ones((R, R, 1), np.float32), matrix, (HEIGHT, WIDTH))
    assert single.shape == (HEIGHT, WIDTH, 1)
    # The warped square's area is R² times the frame/face area ratio (1.5²).
    assert float(single.sum()) == pytest.approx(R * R * 1.5**2, rel=0.02)


def test_face_scale_enlarges_the_warped_face_about_its_centre():
    matrix = _frame_to_face()
    mask = process_mask(_ellipse_mask(), R, 0, 0)
    areas = {}
    for scale in (-20, 0, 20):
        _, frame_mask = blend_face(_gradient_frame(), np.full((R, R, 3), 0.5, np.float32), matrix, mask,
                                   _settings(face_scale=scale))
        areas[scale] = float(frame_mask.sum())
    assert areas[20] / areas[0] == pytest.approx(1.2**2, rel=0.05)
    assert areas[-20] / areas[0] == pytest.approx(0.8**2, rel=0.05)
    scaled = scale_face_matrix(matrix, R, 20)
    centre = transform_points(invert_affine(matrix), np.array([[R / 2, R / 2]]))
    np.testing.assert_allclose(transform_points(scaled, centre), [[R / 2, R / 2]], atol=1e-9)
    np.testing.assert_allclose(scale_face_matrix(matrix, R, 0), matrix, atol=1e-12)


# -- modes -------------------------------------------------------------------------------------------


def test_raw_rgb_covers_the_whole_square_and_original_returns_the_frame():
    frame = _gradient_frame()
    matrix = _frame_to_face()
    face = np.broadcast_to(FACE_COLOUR, (R, R, 3)).copy()
    empty_mask = np.zeros((R, R, 1), np.float32)
    merged, square = blend_face(frame, face, matrix, empty_mask, _settings(mode="raw-rgb"))
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    face_points = transform_points(matrix, np.stack([x.ravel(), y.ravel()], 1)).reshape(HEIGHT, WIDTH, 2)
    well_inside = np.all((face_points > 1.0) & (face_points < R - 2.0), axis=-1)
    outside = np.any((face_points < -1.0) | (face_points > R), axis=-1)
    np.testing.assert_allclose(merged[well_inside], np.broadcast_to(FACE_COLOUR, merged[well_inside].shape),
                               atol=1e-4)
    assert np.array_equal(merged[outside], frame[outside])
    assert np.all(square[well_inside] == pytest.approx(1.0))

    original, original_mask = blend_face(frame, face, matrix, _ellipse_mask(), _settings(mode="original"))
    assert np.array_equal(original, frame) and original_mask.shape == (HEIGHT, WIDTH, 1)
    assert not original_mask.any()

    predicted, predicted_mask = blend_face(frame, face, matrix, _ellipse_mask(), _settings(mode="raw-predict"))
    assert np.array_equal(predicted, face) and predicted_mask.shape == (R, R, 1)


def test_hist_match_moves_the_face_histograms_towards_the_dst():
    source = _textured((R, R), seed=1, mean=0.3, spread=0.04)
    target = _textured((R, R), seed=2, mean=0.65, spread=0.12)
    matched = histogram_match(source, target, None, 255)
    levels = np.linspace(0.05, 0.95, 10)
    for channel in range(3):
        np.testing.assert_allclose(np.quantile(matched[..., channel], levels),
                                   np.quantile(target[..., channel], levels), atol=0.01)
    # A lower threshold maps the brightest source values to lower target quantiles.
    assert matched.max() > histogram_match(source, target, None, 200).max() + 0.02

    frame = _gradient_frame()
    matrix = _frame_to_face()
    mask = process_mask(_ellipse_mask(), R, 0, 0)
    merged, frame_mask = blend_face(frame, source, matrix, mask,
                                    _settings(mode="hist-match", hist_match_threshold=255), dst_face=target)
    inside = frame_mask[..., 0] > 0.999
    target_inside = target[mask[..., 0] > 0.5]
    before = np.abs(source[mask[..., 0] > 0.5].mean(0) - target_inside.mean(0))
    after = np.abs(merged[inside].mean(0) - target_inside.mean(0))
    assert np.all(after < 0.25 * before)
    assert np.all(merged[inside].std(0) > 2.0 * source.std((0, 1)))


def _seamless_case(centre_xy=(100.0, 80.0)):
    frame = _gradient_frame()
    matrix = _frame_to_face(centre_xy)
    face = np.broadcast_to(FACE_COLOUR, (R, R, 3)).copy()
    mask = process_mask(_ellipse_mask(), R, erode=0, blur=8)
    return frame, matrix, face, mask


def test_seamless_differs_from_overlay_but_keeps_far_pixels():
    frame, matrix, face, mask = _seamless_case()
    overlay, _ = blend_face(frame, face, matrix, mask, _settings(mode="overlay"))
    seamless, frame_mask = blend_face(frame, face, matrix, mask, _settings(mode="seamless"))
    inside = frame_mask[..., 0] > 0.99
    assert np.abs(seamless[inside] - overlay[inside]).mean() > 0.05
    outside = frame_mask[..., 0] == 0
    assert np.array_equal(seamless[outside], frame[outside])
    assert np.isfinite(seamless).all() and seamless.min() >= 0 and seamless.max() <= 1


def test_seamless_puts_the_clone_back_where_the_mask_is():
    frame = _textured((HEIGHT, WIDTH), seed=5, mean=0.5, spread=0.15)
    matrix = _frame_to_face()
    # The frame's own face crop, cloned back in place, must reproduce the frame (a shifted clone would not).
    crop = cv2.warpAffine(frame, matrix, (R, R), flags=cv2.INTER_CUBIC)
    mask = process_mask(_ellipse_mask(), R, erode=0, blur=0)
    merged, frame_mask = blend_face(frame, crop, matrix, mask, _settings(mode="seamless"))
    inside = frame_mask[..., 0] > 0.99
    assert np.abs(merged[inside] - frame[inside]).mean() < 0.02
    shifted = np.roll(frame, 1, axis=1)
    assert np.abs(shifted[inside] - frame[inside]).mean() > 0.03


def test_seamless_does_not_throw_when_the_face_touches_the_frame_border():
    for centre in ((12.0, 80.0), (100.0, 150.0), (195.0, 5.0)):
        frame, matrix, face, mask = _seamless_case(centre)
        merged, frame_mask = blend_face(frame, face, matrix, mask, _settings(mode="seamless-hist-match"),
                                        dst_face=_textured((R, R), 4, 0.5, 0.1))
        assert merged.shape == frame.shape and np.isfinite(merged).all()
        assert frame_mask.max() > 0.99
        outside = frame_mask[..., 0] == 0
        assert np.array_equal(merged[outside], frame[outside])
    frame, matrix, face, _ = _seamless_case()
    merged, frame_mask = blend_face(frame, face, matrix, np.zeros((R, R, 1), np.float32), _settings(mode="seamless"))
    assert np.array_equal(merged, frame) and not frame_mask.any()
    # A mask with no interior (a 1-px line) makes cv2.seamlessClone throw: it falls back to overlay.
    line = np.zeros((R, R, 1), np.float32)
    line[R // 2, 8:56] = 1.0
    identity = np.array([[1.0, 0.0, -60.0], [0.0, 1.0, -50.0]])
    seamless, _ = blend_face(frame, face, identity, line, _settings(mode="seamless"))
    overlay, _ = blend_face(frame, face, identity, line, _settings(mode="overlay"))
    assert np.array_equal(seamless, overlay) and not np.array_equal(overlay, frame)


@pytest.mark.parametrize("mode", ["overlay", "seamless"])
def test_rct_moves_the_merged_face_mean_towards_the_dst(mode):
    frame = _gradient_frame()
    matrix = _frame_to_face()
    predicted = _textured((R, R), seed=7, mean=0.25, spread=0.05)
    dst = np.clip(_textured((R, R), seed=8, mean=0.6, spread=0.08) * np.array([0.8, 1.0, 1.2], np.float32), 0, 1)
    mask = process_mask(_ellipse_mask(), R, erode=0, blur=0)
    dst_mean = dst[mask[..., 0] > 0.5].mean(0)
    distances = {}
    for transfer in ("none", "rct"):
        merged, frame_mask = blend_face(frame, predicted, matrix, mask,
                                        MergeSettings(mode=mode, color_transfer=transfer), dst_face=dst)
        inside = frame_mask[..., 0] > 0.999
        distances[transfer] = float(np.abs(merged[inside].mean(0) - dst_mean).max())
    assert distances["rct"] < 0.3 * distances["none"]
    assert distances["rct"] < 0.05


# -- face effects ------------------------------------------------------------------------------------


def test_sharpen_raises_the_laplacian_variance_and_negative_sharpen_lowers_it():
    image = _textured((R, R), seed=11, mean=0.5, spread=0.1)
    base = _laplacian_variance(image)
    for mode in ("box", "gaussian"):
        assert _laplacian_variance(sharpen(image, mode, 60)) > 1.3 * base
        assert _laplacian_variance(sharpen(image, mode, 100)) > _laplacian_variance(sharpen(image, mode, 30))
        assert _laplacian_variance(sharpen(image, mode, -60)) < 0.8 * base
    assert np.array_equal(sharpen(image, "none", 80), image)
    assert np.array_equal(sharpen(image, "box", 0), image)

    frame = _gradient_frame()
    matrix = _frame_to_face()
    mask = process_mask(_ellipse_mask(), R, 0, 0)
    plain, frame_mask = blend_face(frame, image, matrix, mask, _settings())
    sharp, _ = blend_face(frame, image, matrix, mask, _settings(sharpen_mode="gaussian", sharpen_amount=80))
    inside = (frame_mask[..., 0] > 0.999).astype(np.uint8)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)).astype(bool)
    gray_plain = cv2.Laplacian(cv2.cvtColor(plain, cv2.COLOR_BGR2GRAY), cv2.CV_32F)[inside]
    gray_sharp = cv2.Laplacian(cv2.cvtColor(sharp, cv2.COLOR_BGR2GRAY), cv2.CV_32F)[inside]
    assert gray_sharp.var() > 1.2 * gray_plain.var()


def test_motion_blur_changes_only_masked_pixels_along_the_motion():
    image = _textured((R, R), seed=12, mean=0.5, spread=0.1)
    mask = np.zeros((R, R, 1), np.float32)
    mask[:, R // 2:] = 1.0
    blurred = motion_blur(image, mask, (6.0, 0.0), power=1.0)
    assert np.array_equal(blurred[:, : R // 2], image[:, : R // 2])
    assert np.abs(blurred[:, R // 2:] - image[:, R // 2:]).mean() > 0.01
    assert _laplacian_variance(blurred[:, R // 2 + 8:]) < 0.7 * _laplacian_variance(image[:, R // 2 + 8:])
    # Horizontal motion leaves an image that only varies vertically untouched.
    rows = np.repeat(image[:, :1], R, axis=1)
    np.testing.assert_allclose(motion_blur(rows, np.ones((R, R, 1), np.float32), (9.0, 0.0), 1.0), rows, atol=1e-6)
    # Likewise vertical motion leaves an image that only varies horizontally; a 45° motion blurs both.
    columns = np.repeat(image[:1], R, axis=0)
    np.testing.assert_allclose(motion_blur(columns, np.ones((R, R, 1), np.float32), (0.0, 7.0), 1.0), columns,
                               atol=1e-6)
    assert np.abs(motion_blur(rows, np.ones((R, R, 1), np.float32), (5.0, 5.0), 1.0) - rows).max() > 0.01
    assert np.array_equal(motion_blur(image, mask, (0.0, 0.0), 1.0), image)

    frame = _gradient_frame()
    matrix = _frame_to_face()
    face_mask = process_mask(_ellipse_mask(), R, 0, 0)
    still, frame_mask = blend_face(frame, image, matrix, face_mask, _settings())
    moving, _ = blend_face(frame, image, matrix, face_mask, _settings(motion_blur=50), motion_vector=(12.0, 3.0))
    outside = frame_mask[..., 0] == 0
    assert np.array_equal(moving[outside], still[outside])
    assert np.abs(moving - still).max() > 0.01


def test_two_faces_composite_in_order():
    frame = _gradient_frame()
    red = np.broadcast_to(np.array([0.0, 0.0, 1.0], np.float32), (R, R, 3)).copy()
    blue = np.broadcast_to(np.array([1.0, 0.0, 0.0], np.float32), (R, R, 3)).copy()
    mask = process_mask(_ellipse_mask(), R, 0, 0)
    first = FaceToBlend(red, _frame_to_face((85.0, 80.0)), mask)
    second = FaceToBlend(blue, _frame_to_face((115.0, 80.0)), mask)
    settings = _settings()
    merged, union = blend_faces(frame, [first, second], settings)
    _, mask_first = blend_face(frame, red, first.frame_to_face, mask, settings)
    _, mask_second = blend_face(frame, blue, second.frame_to_face, mask, settings)
    overlap = (mask_first[..., 0] > 0.999) & (mask_second[..., 0] > 0.999)
    only_first = (mask_first[..., 0] > 0.999) & (mask_second[..., 0] == 0)
    assert overlap.sum() > 200 and only_first.sum() > 200
    np.testing.assert_allclose(merged[overlap], np.broadcast_to(blue[0, 0], merged[overlap].shape), atol=1e-4)
    np.testing.assert_allclose(merged[only_first], np.broadcast_to(red[0, 0], merged[only_first].shape), atol=1e-4)
    reversed_merged, _ = blend_faces(frame, [second, first], settings)
    np.testing.assert_allclose(reversed_merged[overlap], np.broadcast_to(red[0, 0], merged[overlap].shape),
                               atol=1e-4)
    np.testing.assert_allclose(union, mask_first + mask_second * (1 - mask_first), atol=1e-6)
    untouched = union[..., 0] == 0
    assert np.array_equal(merged[untouched], frame[untouched])

    empty, empty_mask = blend_faces(frame, [], settings)
    assert np.array_equal(empty, frame) and not empty_mask.any()
    side_by_side, _ = blend_faces(frame, [first, second], _settings(mode="raw-predict"))
    assert side_by_side.shape == (R, 2 * R, 3)
    assert np.array_equal(side_by_side[:, R:], blue)
