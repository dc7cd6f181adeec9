"""SAEHD losses against hand computations and independent numpy/OpenCV references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from train import losses


def _numpy_ssim(x: np.ndarray, y: np.ndarray, size: int, sigma: float = 1.5) -> np.ndarray:
    """Per-sample SSIM in float64 with explicit centred window statistics: (B, H, W, C) -> (B,)."""
    coords = np.arange(size) - (size - 1) / 2
    line = np.exp(-(coords**2) / (2 * sigma**2))
    weights = np.outer(line, line)
    weights /= weights.sum()
    c1, c2 = 0.01**2, 0.03**2
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    # windows: (B, H', W', C, size, size)
    wx = sliding_window_view(x, (size, size), axis=(1, 2))
    wy = sliding_window_view(y, (size, size), axis=(1, 2))
    mx = np.einsum("bhwcij,ij->bhwc", wx, weights)
    my = np.einsum("bhwcij,ij->bhwc", wy, weights)
    dx = wx - mx[..., None, None]
    dy = wy - my[..., None, None]
    vx = np.einsum("bhwcij,ij->bhwc", dx * dx, weights)
    vy = np.einsum("bhwcij,ij->bhwc", dy * dy, weights)
    cov = np.einsum("bhwcij,ij->bhwc", dx * dy, weights)
    ssim_map = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.reshape(len(x), -1).mean(axis=1)


def _numpy_bce(label: float, logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    per_entry = np.maximum(logits, 0) - logits * label + np.log1p(np.exp(-np.abs(logits)))
    return per_entry.reshape(len(logits), -1).mean(axis=1)


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


def test_gaussian_kernel_is_normalised_and_matches_opencv() -> None:
    kernel = losses.gaussian_kernel(7, 1.5)
    line = cv2.getGaussianKernel(7, 1.5).ravel()
    np.testing.assert_allclose(kernel, np.outer(line, line), rtol=1e-5)
    even = losses.gaussian_kernel(4, 1.0)
    assert even.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(even, even[::-1, ::-1], rtol=1e-6)
    with pytest.raises(ValueError):
        losses.gaussian_kernel(0, 1.0)


def test_dssim_identical_images_is_zero() -> None:
    x = _rand(np.random.default_rng(0), 2, 20, 20, 3)
    np.testing.assert_allclose(losses.dssim(x, x, 5).numpy(), [0.0, 0.0], atol=1e-6)


def test_dssim_of_flat_complementary_images_matches_hand_value() -> None:
    x = np.full((1, 16, 16, 3), 0.25, np.float32)
    # Flat images have zero (co)variance, so SSIM reduces to the luminance term.
    c1 = 1e-4
    ssim = (2 * 0.25 * 0.75 + c1) / (0.25**2 + 0.75**2 + c1)
    np.testing.assert_allclose(losses.dssim(x, 1.0 - x, 7).numpy(), [(1 - ssim) / 2], rtol=1e-5)


def test_dssim_matches_numpy_reference_on_random_images() -> None:
    rng = np.random.default_rng(1)
    x = _rand(rng, 2, 24, 20, 3)
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape).astype(np.float32), 0, 1)
    for target, predicted in ((x, y), (x, 1.0 - x)):
        expected = (1.0 - _numpy_ssim(target, predicted, 5)) / 2
        got = losses.dssim(target, predicted, 5).numpy()
        assert np.all(got > 0.0)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_dssim_rejects_a_window_larger_than_the_image() -> None:
    x = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="exceeds"):
        losses.dssim(x, x, 11)


def test_dssim_kernel_sizes() -> None:
    assert losses.dssim_kernel_sizes(128) == (11,)
    assert losses.dssim_kernel_sizes(224) == (19,)
    assert losses.dssim_kernel_sizes(256) == (22, 11)
    assert losses.dssim_kernel_sizes(512) == (44, 22)
    with pytest.raises(ValueError):
        losses.dssim_kernel_sizes(8)


def test_reconstruction_loss_single_scale_below_256() -> None:
    rng = np.random.default_rng(2)
    t, p = _rand(rng, 2, 32, 32, 3), _rand(rng, 2, 32, 32, 3)
    expected = 10 * (1 - _numpy_ssim(t, p, 11)) / 2 + 10 * ((t - p) ** 2).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(losses.reconstruction_loss(t, p, 128).numpy(), expected, rtol=1e-4)


def test_reconstruction_loss_uses_two_scales_from_256() -> None:
    rng = np.random.default_rng(3)
    t, p = _rand(rng, 2, 40, 40, 3), _rand(rng, 2, 40, 40, 3)
    mse = ((t - p) ** 2).reshape(2, -1).mean(axis=1)
    expected = 5 * (1 - _numpy_ssim(t, p, 22)) / 2 + 5 * (1 - _numpy_ssim(t, p, 11)) / 2 + 10 * mse
    np.testing.assert_allclose(losses.reconstruction_loss(t, p, 256).numpy(), expected, rtol=1e-4)
    one_scale = 10 * (1 - _numpy_ssim(t, p, 22)) / 2 + 10 * mse
    assert not np.allclose(expected, one_scale, rtol=1e-3)


def test_gaussian_blur_matches_opencv_with_zero_border() -> None:
    image = _rand(np.random.default_rng(4), 1, 32, 32, 3)
    # sigma 2 -> int(8) = 8 -> made odd: 9
    expected = cv2.GaussianBlur(image[0], (9, 9), 2.0, borderType=cv2.BORDER_CONSTANT)
    np.testing.assert_allclose(losses.gaussian_blur(image, 2.0).numpy()[0], expected, atol=1e-5)


def test_blurred_mask_grows_and_clips_at_one() -> None:
    assert losses.mask_blur_sigma(64) == 2
    assert losses.mask_blur_sigma(16) == 1
    mask = np.zeros((1, 64, 64, 1), np.float32)
    mask[0, 16:48, 16:48, 0] = 1.0
    out = losses.blurred_mask(mask, 64).numpy()[0, :, :, 0]
    assert out.max() == pytest.approx(1.0)
    assert out.min() >= 0.0
    np.testing.assert_allclose(out[20:44, 20:44], 1.0)
    # just outside the square: positive, so the mask has grown
    assert 0.0 < out[15, 32] < 1.0
    assert out[47, 32] == pytest.approx(1.0)
    assert out[0, 0] == 0.0
    assert out.sum() > mask.sum()
    line = cv2.getGaussianKernel(9, 2.0).ravel()
    # Outside pixel one row above the edge: the blur is the kernel mass over rows 1..4 below it.
    expected_outside = 2 * line[5:].sum()
    assert out[15, 32] == pytest.approx(expected_outside, rel=1e-4)


def test_eyes_mouth_loss_is_300_times_l1() -> None:
    t = np.zeros((1, 2, 2, 3), np.float32)
    p = np.zeros((1, 2, 2, 3), np.float32)
    t[0, 0, 0] = [1.0, 0.5, 0.0]
    p[0, 0, 0] = [0.0, 0.0, 0.0]
    p[0, 1, 1] = [1.0, 1.0, 1.0]  # outside the mask: must not count
    em = np.zeros((1, 2, 2, 1), np.float32)
    em[0, 0, 0, 0] = 0.5
    # |0.5 - 0| + |0.25 - 0| over 12 entries
    np.testing.assert_allclose(losses.eyes_mouth_loss(t, p, em).numpy(), [300 * 0.75 / 12], rtol=1e-6)


def test_mask_loss_hand_value() -> None:
    m = np.array([[[[1.0], [0.0]], [[1.0], [1.0]]]], np.float32)
    m_hat = np.array([[[[0.5], [0.0]], [[1.0], [0.0]]]], np.float32)
    np.testing.assert_allclose(losses.mask_loss(m, m_hat).numpy(), [10 * (0.25 + 1.0) / 4], rtol=1e-6)


def test_mean_squared_error_is_per_sample() -> None:
    a = np.zeros((2, 2, 2, 1), np.float32)
    b = np.stack([np.full((2, 2, 1), 0.5), np.zeros((2, 2, 1))]).astype(np.float32)
    np.testing.assert_allclose(losses.mean_squared_error(a, b).numpy(), [0.25, 0.0])


def test_style_loss_zero_for_equal_inputs() -> None:
    x = _rand(np.random.default_rng(5), 2, 32, 32, 3)
    np.testing.assert_allclose(losses.style_loss(x, x, 4, 10.0).numpy(), [0.0, 0.0], atol=1e-7)


def test_style_loss_constant_colours_hand_value() -> None:
    a = np.broadcast_to(np.array([0.2, 0.4, 0.6], np.float32), (1, 8, 8, 3))
    b = np.broadcast_to(np.array([0.3, 0.4, 0.9], np.float32), (1, 8, 8, 3))
    # Equal (zero) stds; mean differences 0.1, 0, 0.3 -> (0.01 + 0.09) / 3, times 10000 * 2/100.
    expected = (0.01 + 0.09) / 3 * 10000 * 2.0 / 100
    np.testing.assert_allclose(losses.style_loss(a, b, 0, 2.0).numpy(), [expected], rtol=1e-4)


def test_style_loss_counts_std_difference() -> None:
    a = np.zeros((1, 8, 8, 1), np.float32)
    a[0, :, :4] = 1.0  # mean 0.5, variance 0.25
    b = np.full((1, 8, 8, 1), 0.5, np.float32)
    delta_std = np.sqrt(0.25 + 1e-5) - np.sqrt(1e-5)
    np.testing.assert_allclose(losses.style_loss(a, b, 0, 100.0).numpy(), [10000 * delta_std**2], rtol=1e-4)


def test_style_loss_with_blur_matches_opencv_reference() -> None:
    rng = np.random.default_rng(6)
    a, b = _rand(rng, 1, 32, 32, 3), _rand(rng, 1, 32, 32, 3) * 0.5
    # radius 4 is sigma 4, kernel int(16) made odd = 17, zero border
    ba = cv2.GaussianBlur(a[0], (17, 17), 4.0, borderType=cv2.BORDER_CONSTANT).astype(np.float64)
    bb = cv2.GaussianBlur(b[0], (17, 17), 4.0, borderType=cv2.BORDER_CONSTANT).astype(np.float64)
    d_mean = ba.mean(axis=(0, 1)) - bb.mean(axis=(0, 1))
    d_std = np.sqrt(ba.var(axis=(0, 1)) + 1e-5) - np.sqrt(bb.var(axis=(0, 1)) + 1e-5)
    expected = (d_mean**2 + d_std**2).sum() / 3 * 10000 * 0.5 / 100
    np.testing.assert_allclose(losses.style_loss(a, b, 4, 0.5).numpy(), [expected], rtol=1e-3)


def test_style_loss_gradient_is_finite_on_flat_images() -> None:
    a = tf.Variable(np.full((1, 8, 8, 3), 0.3, np.float32))
    b = np.full((1, 8, 8, 3), 0.6, np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.style_loss(a, b, 1, 1.0))
    assert np.all(np.isfinite(tape.gradient(loss, a).numpy()))


def test_background_style_loss_composition() -> None:
    rng = np.random.default_rng(7)
    t, p = _rand(rng, 2, 32, 32, 3), _rand(rng, 2, 32, 32, 3)
    full = np.ones((2, 32, 32, 1), np.float32)
    np.testing.assert_allclose(losses.background_style_loss(t, p, full, 128, 2.0).numpy(), 0.0, atol=1e-6)
    mask = np.zeros((2, 32, 32, 1), np.float32)
    mask[:, 8:24, 8:24] = 1.0
    tb, pb = t * (1 - mask), p * (1 - mask)
    mse = ((tb - pb) ** 2).reshape(2, -1).mean(axis=1)
    expected = 0.2 * (10 * (1 - _numpy_ssim(tb, pb, 11)) / 2 + 10 * mse)
    np.testing.assert_allclose(
        losses.background_style_loss(t, p, mask, 128, 2.0).numpy(), expected, rtol=1e-4
    )


def test_binary_cross_entropy_matches_numpy() -> None:
    logits = np.random.default_rng(8).normal(0, 3, (3, 4, 4, 1)).astype(np.float32)
    logits[0, 0, 0, 0] = 40.0  # large logits must stay finite
    for label in (0.0, 1.0):
        got = losses.binary_cross_entropy_logits(label, logits).numpy()
        np.testing.assert_allclose(got, _numpy_bce(label, logits), rtol=1e-5)
    zero = losses.binary_cross_entropy_logits(1.0, np.zeros((1, 2, 2, 1), np.float32)).numpy()
    np.testing.assert_allclose(zero, [np.log(2.0)], rtol=1e-6)


def test_gan_losses_composition() -> None:
    rng = np.random.default_rng(9)
    real_low, fake_low = rng.normal(size=(2, 4, 4, 1)), rng.normal(size=(2, 4, 4, 1))
    real_full, fake_full = rng.normal(size=(2, 16, 16, 1)), rng.normal(size=(2, 16, 16, 1))
    args = [a.astype(np.float32) for a in (real_low, real_full, fake_low, fake_full)]
    expected_d = 0.5 * (_numpy_bce(1, real_low) + _numpy_bce(0, fake_low)) + 0.5 * (
        _numpy_bce(1, real_full) + _numpy_bce(0, fake_full)
    )
    np.testing.assert_allclose(losses.gan_discriminator_loss(*args).numpy(), expected_d, rtol=1e-5)
    expected_g = _numpy_bce(1, fake_low) + _numpy_bce(1, fake_full)
    np.testing.assert_allclose(losses.gan_generator_loss(args[2], args[3]).numpy(), expected_g, rtol=1e-5)
    # Zero logits: every BCE is log 2, so D = 2·0.5·2·log2 and G = 2·log2.
    z_low, z_full = np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 8, 8, 1), np.float32)
    assert losses.gan_discriminator_loss(z_low, z_full, z_low, z_full).numpy()[0] == pytest.approx(
        2 * np.log(2), rel=1e-6
    )
    assert losses.gan_generator_loss(z_low, z_full).numpy()[0] == pytest.approx(2 * np.log(2), rel=1e-6)


def test_true_face_losses() -> None:
    rng = np.random.default_rng(10)
    dst, src = (rng.normal(size=(3, 2, 2, 1)).astype(np.float32) for _ in range(2))
    expected = 0.5 * (_numpy_bce(1, dst) + _numpy_bce(0, src))
    np.testing.assert_allclose(losses.code_discriminator_loss(dst, src).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(
        losses.true_face_generator_loss(src, 0.01).numpy(), 0.01 * _numpy_bce(1, src), rtol=1e-5
    )


def test_total_variation_is_a_sum_of_squared_differences() -> None:
    image = np.zeros((2, 2, 3, 1), np.float32)
    image[0, 0] = [[0.0], [1.0], [3.0]]
    image[0, 1] = [[2.0], [2.0], [2.0]]
    # vertical: 4 + 1 + 1 = 6; horizontal: (1 + 4) + 0 = 5
    np.testing.assert_allclose(losses.total_variation_mse(image).numpy(), [11.0, 0.0])


def test_losses_trace_inside_tf_function() -> None:
    @tf.function
    def step(t: tf.Tensor, p: tf.Tensor, m: tf.Tensor) -> tf.Tensor:
        mb = losses.blurred_mask(m, 32)
        return losses.reconstruction_loss(t * mb, p * mb, 32) + losses.mask_loss(m, mb)

    rng = np.random.default_rng(11)
    t, p = _rand(rng, 2, 32, 32, 3), _rand(rng, 2, 32, 32, 3)
    m = np.ones((2, 32, 32, 1), np.float32)
    eager = losses.reconstruction_loss(
        t * losses.blurred_mask(m, 32), p * losses.blurred_mask(m, 32), 32
    ) + losses.mask_loss(m, losses.blurred_mask(m, 32))
    np.testing.assert_allclose(step(t, p, m).numpy(), eager.numpy(), rtol=1e-5)


def test_dssim_gradient_matches_finite_differences_of_reference() -> None:
    rng = np.random.default_rng(12)
    t, p = _rand(rng, 1, 12, 12, 1), _rand(rng, 1, 12, 12, 1)
    variable = tf.Variable(p)
    with tf.GradientTape() as tape:
        loss = losses.dssim(t, variable, 5)[0]
    gradient = tape.gradient(loss, variable).numpy()
    for y, x in ((0, 0), (5, 6), (11, 3)):
        step = np.zeros_like(p, dtype=np.float64)
        step[0, y, x, 0] = 1e-4
        plus = (1 - _numpy_ssim(t, p + step, 5)[0]) / 2
        minus = (1 - _numpy_ssim(t, p - step, 5)[0]) / 2
        assert gradient[0, y, x, 0] == pytest.approx((plus - minus) / 2e-4, rel=2e-2, abs=1e-6)
