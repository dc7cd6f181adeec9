"""Colour transfer modes against numpy statistics of small synthetic images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from train.color_transfer import COLOR_TRANSFER_MODES, color_transfer

TRANSFER_MODES = [mode for mode in COLOR_TRANSFER_MODES if mode != "none"]
LINEAR_MODES = ["lct", "mkl"]


def _gaussian_image(seed: int, mean, covariance, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.multivariate_normal(mean, covariance, size=(height, width))
    return np.clip(pixels, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    """A bluish 32×32 BGR image with small, uncorrelated channel spread."""
    return _gaussian_image(1, [0.6, 0.4, 0.3], np.diag([0.004, 0.003, 0.002]), 32, 32)


@pytest.fixture(scope="module")
def target() -> np.ndarray:
    """A reddish 40×40 BGR image with wider, correlated channels (a different size on purpose)."""
    covariance = [[0.006, 0.003, 0.0], [0.003, 0.005, 0.001], [0.0, 0.001, 0.004]]
    return _gaussian_image(2, [0.3, 0.45, 0.65], covariance, 40, 40)


def _channel_means(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, 3).astype(np.float64).mean(axis=0)


def _covariance(image: np.ndarray) -> np.ndarray:
    return np.cov(image.reshape(-1, 3).astype(np.float64).T, bias=True)


@pytest.mark.parametrize("mode", TRANSFER_MODES)
def test_transfer_moves_the_means_to_the_target(mode, source, target):
    result = color_transfer(mode, source, target, rng=np.random.default_rng(0))
    assert result.shape == source.shape and result.dtype == np.float32
    assert result.min() >= 0.0 and result.max() <= 1.0
    before = np.abs(_channel_means(source) - _channel_means(target)).max()
    after = np.abs(_channel_means(result) - _channel_means(target)).max()
    assert before > 0.3
    # Linear modes match means exactly up to clipping; rct matches them in Lab, which BGR sees
    # through a non-linear conversion; idt and sot converge iteratively.
    limit = {"lct": 1e-3, "mkl": 1e-3, "rct": 0.01}.get(mode, 0.02)
    assert after < limit


@pytest.mark.parametrize("mode", LINEAR_MODES)
def test_linear_modes_match_the_covariance(mode, source, target):
    result = color_transfer(mode, source, target)
    np.testing.assert_allclose(_covariance(result), _covariance(target), atol=2e-4)


def test_mkl_moves_pixels_less_than_lct():
    # Both match mean and covariance; the Monge-Kantorovitch map is the least-displacement one.
    # The two coincide when the covariances share eigenvectors, so these two do not.
    source = _gaussian_image(8, [0.5] * 3, [[0.006, 0.005, 0], [0.005, 0.006, 0], [0, 0, 0.001]], 32, 32)
    target = _gaussian_image(9, [0.5] * 3, [[0.002, 0, 0], [0, 0.006, 0.005], [0, 0.005, 0.006]], 32, 32)
    lct = color_transfer("lct", source, target)
    mkl = color_transfer("mkl", source, target)
    np.testing.assert_allclose(_covariance(mkl), _covariance(lct), atol=1e-5)
    lct_move = np.mean(np.sum((lct - source) ** 2, axis=2))
    mkl_move = np.mean(np.sum((mkl - source) ** 2, axis=2))
    assert mkl_move < 0.97 * lct_move


def test_rct_matches_lab_mean_and_std(source, target):
    result = color_transfer("rct", source, target)
    result_lab = cv2.cvtColor(result, cv2.COLOR_BGR2Lab).reshape(-1, 3)
    target_lab = cv2.cvtColor(target, cv2.COLOR_BGR2Lab).reshape(-1, 3)
    np.testing.assert_allclose(result_lab.mean(axis=0), target_lab.mean(axis=0), atol=0.5)
    np.testing.assert_allclose(result_lab.std(axis=0), target_lab.std(axis=0), rtol=0.05)


@pytest.mark.parametrize("mode", ["idt", "sot"])
def test_iterative_modes_match_the_spread_too(mode, source, target):
    result = color_transfer(mode, source, target, rng=np.random.default_rng(1))
    before = np.abs(source.reshape(-1, 3).std(axis=0) - target.reshape(-1, 3).std(axis=0)).max()
    after = np.abs(result.reshape(-1, 3).std(axis=0) - target.reshape(-1, 3).std(axis=0)).max()
    assert after < 0.25 * before


@pytest.mark.parametrize("mode", ["idt", "sot"])
def test_iterative_modes_repeat_with_the_same_rng(mode, source, target):
    first = color_transfer(mode, source, target, rng=np.random.default_rng(3))
    second = color_transfer(mode, source, target, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(color_transfer(mode, source, target), color_transfer(mode, source, target))


def test_none_is_an_identity_copy(source, target):
    result = color_transfer("none", source, target)
    np.testing.assert_array_equal(result, source)
    assert result is not source


@pytest.mark.parametrize("mode", TRANSFER_MODES)
def test_identical_source_and_target_change_little(mode, target):
    result = color_transfer(mode, target, target, rng=np.random.default_rng(4))
    assert np.abs(result - target).max() < 0.01


@pytest.mark.parametrize("mode", TRANSFER_MODES)
def test_output_is_clipped_for_extreme_targets(mode, source):
    bright = _gaussian_image(5, [0.95, 0.95, 0.95], np.diag([0.02, 0.02, 0.02]), 24, 24)
    result = color_transfer(mode, source, bright, rng=np.random.default_rng(5))
    assert result.dtype == np.float32 and result.min() >= 0.0 and result.max() <= 1.0


@pytest.mark.parametrize("mode", TRANSFER_MODES)
def test_target_mask_restricts_the_statistics(mode, source, target):
    mask = np.zeros(target.shape[:2], np.float32)
    mask[:, :20] = 1.0
    changed = target.copy()
    changed[:, 20:] = [0.0, 1.0, 0.0]  # pure green outside the mask
    first = color_transfer(mode, source, target, target_mask=mask, rng=np.random.default_rng(6))
    second = color_transfer(mode, source, changed, target_mask=mask, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(first, second)
    unmasked = color_transfer(mode, source, changed, rng=np.random.default_rng(6))
    assert np.abs(unmasked - first).mean() > 0.01


@pytest.mark.parametrize("mode", TRANSFER_MODES)
def test_source_mask_restricts_the_statistics_but_recolours_everything(mode, source, target):
    mask = np.zeros((*source.shape[:2], 1), np.float32)
    mask[8:24, 8:24] = 1.0
    changed = source.copy()
    changed[:8] = 1.0  # white rows outside the mask
    first = color_transfer(mode, source, target, source_mask=mask, rng=np.random.default_rng(7))
    second = color_transfer(mode, changed, target, source_mask=mask, rng=np.random.default_rng(7))
    # The transform, fixed by the masked pixels, is the same; only the edited pixels differ.
    np.testing.assert_allclose(first[8:], second[8:], atol=1e-6)
    # Pixels outside the mask are recoloured too, not left as they were.
    assert np.abs(first[:8] - source[:8]).mean() > 0.1


def test_unknown_mode_raises_and_lists_the_modes(source, target):
    with pytest.raises(ValueError, match="rct, lct, mkl, idt, sot"):
        color_transfer("hist", source, target)


def test_empty_mask_and_bad_shapes_raise(source, target):
    with pytest.raises(ValueError, match="at least 2"):
        color_transfer("rct", source, target, target_mask=np.zeros(target.shape[:2], np.float32))
    with pytest.raises(ValueError, match="mask"):
        color_transfer("lct", source, target, source_mask=np.ones((5, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        color_transfer("mkl", source[..., 0], target)
