"""Before the Keras 3 port (commit 8bc8dd1), kept as the parity reference. SAEHD loss terms in TensorFlow: DSSIM, reconstruction, masks, style, GAN and true-face losses."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# DSSIM kernel size is the resolution divided by these (SAEHD: 11 px at 128, 22 and 11 at 256).
_DSSIM_DIVISOR_FINE = 11.6
_DSSIM_DIVISOR_COARSE = 23.2
_TWO_SCALE_RESOLUTION = 256
# Keeps sqrt differentiable for flat images, where the variance is exactly zero.
_STYLE_VARIANCE_EPSILON = 1e-5


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Normalised 2-D Gaussian, (size, size) float32 summing to 1, centred between pixels if size is even."""
    if size < 1:
        raise ValueError(f"Gaussian kernel size must be >= 1, got {size}")
    if sigma <= 0:
        raise ValueError(f"Gaussian sigma must be > 0, got {sigma}")
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    line = np.exp(-(coords**2) / (2.0 * sigma**2))
    kernel = np.outer(line, line)
    return (kernel / kernel.sum()).astype(np.float32)


def _depthwise_filter(kernel: np.ndarray, channels: int) -> tf.Tensor:
    """(k, k) kernel -> (k, k, C, 1) depthwise filter applying it to each channel alone."""
    tiled = np.tile(kernel[:, :, None, None], (1, 1, channels, 1))
    return tf.constant(tiled, dtype=tf.float32)


def _static_channels(images: tf.Tensor) -> int:
    channels = images.shape[-1]
    if images.shape.rank != 4 or channels is None:
        raise ValueError(f"expected NHWC images with a known channel count, got shape {images.shape}")
    return int(channels)


def _per_sample_mean(values: tf.Tensor) -> tf.Tensor:
    """Mean over every axis but the batch axis: (B, ...) -> (B,)."""
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def _per_sample_sum(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def ssim(
    target: tf.Tensor,
    predicted: tf.Tensor,
    kernel_size: int,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    max_value: float = 1.0,
) -> tf.Tensor:
    """Per-sample SSIM, (B,) float32, for NHWC float32 images in [0, max_value].

    Local statistics use a normalised Gaussian window with VALID padding, applied to each channel
    separately; the SSIM map is averaged over the valid pixels and the channels. Identical images give 1.
    """
    target = tf.convert_to_tensor(target, dtype=tf.float32)
    predicted = tf.convert_to_tensor(predicted, dtype=tf.float32)
    channels = _static_channels(target)
    height, width = target.shape[1], target.shape[2]
    if height is not None and width is not None and kernel_size > min(height, width):
        raise ValueError(f"DSSIM kernel size {kernel_size} exceeds the image size {height}x{width}")
    window = _depthwise_filter(gaussian_kernel(kernel_size, sigma), channels)

    def local_mean(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.depthwise_conv2d(x, window, strides=[1, 1, 1, 1], padding="VALID")

    c1 = (k1 * max_value) ** 2
    c2 = (k2 * max_value) ** 2
    # (Co)variances are shift-invariant; centring each image on its own mean first keeps
    # E[x²] - E[x]² from cancelling catastrophically in float32 (flat images come out exact).
    shift_t = tf.stop_gradient(tf.reduce_mean(target, axis=[1, 2], keepdims=True))
    shift_p = tf.stop_gradient(tf.reduce_mean(predicted, axis=[1, 2], keepdims=True))
    target = target - shift_t
    predicted = predicted - shift_p
    centred_mean_t = local_mean(target)
    centred_mean_p = local_mean(predicted)
    variance_sum = local_mean(tf.square(target) + tf.square(predicted)) - (
        tf.square(centred_mean_t) + tf.square(centred_mean_p)
    )
    covariance = local_mean(target * predicted) - centred_mean_t * centred_mean_p
    mean_t = centred_mean_t + shift_t
    mean_p = centred_mean_p + shift_p
    mean_tp = mean_t * mean_p
    mean_sq_sum = tf.square(mean_t) + tf.square(mean_p)
    luminance = (2.0 * mean_tp + c1) / (mean_sq_sum + c1)
    contrast_structure = (2.0 * covariance + c2) / (variance_sum + c2)
    return _per_sample_mean(luminance * contrast_structure)


def dssim(
    target: tf.Tensor,
    predicted: tf.Tensor,
    kernel_size: int,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    max_value: float = 1.0,
) -> tf.Tensor:
    """Structural dissimilarity (1 - SSIM)/2 per sample, (B,) float32 in [0, 1]; see `ssim`."""
    return (1.0 - ssim(target, predicted, kernel_size, sigma, k1, k2, max_value)) / 2.0


def dssim_kernel_sizes(resolution: int) -> tuple[int, ...]:
    """DSSIM window sizes for a resolution: one scale below 256 px, two scales from 256 px on."""
    fine = int(resolution / _DSSIM_DIVISOR_FINE)
    if fine < 1:
        raise ValueError(f"resolution {resolution} is too small for a DSSIM window (needs >= 12)")
    if resolution < _TWO_SCALE_RESOLUTION:
        return (fine,)
    return (fine, int(resolution / _DSSIM_DIVISOR_COARSE))


def mean_squared_error(target: tf.Tensor, predicted: tf.Tensor) -> tf.Tensor:
    """Plain mean((t - p)²) per sample, (B,) float32, without SAEHD's ×10 weight."""
    return _per_sample_mean(tf.square(target - predicted))


def reconstruction_loss(target: tf.Tensor, predicted: tf.Tensor, resolution: int) -> tf.Tensor:
    """SAEHD image reconstruction loss per sample, (B,) float32.

    10·DSSIM below 256 px, 5·DSSIM(fine) + 5·DSSIM(coarse) from 256 px on, plus 10·mean((t - p)²).
    Callers apply masked training by multiplying both (B, H, W, 3) images by the blurred mask first.
    """
    sizes = dssim_kernel_sizes(resolution)
    weight = 10.0 / len(sizes)
    loss = 10.0 * mean_squared_error(target, predicted)
    for size in sizes:
        loss += weight * dssim(target, predicted, size)
    return loss


def mask_blur_sigma(resolution: int) -> int:
    """Gaussian sigma used to soften the training mask: max(1, resolution // 32)."""
    return max(1, resolution // 32)


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """Per-channel Gaussian blur of NHWC float32 images, same shape out.

    Kernel size max(3, int(4σ)) made odd, zero (SAME) padding, so content near the border darkens.
    """
    size = max(3, int(4 * sigma))
    if size % 2 == 0:
        size += 1
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    window = _depthwise_filter(gaussian_kernel(size, sigma), _static_channels(images))
    return tf.nn.depthwise_conv2d(images, window, strides=[1, 1, 1, 1], padding="SAME")


def blurred_mask(mask: tf.Tensor, resolution: int) -> tf.Tensor:
    """Softened, slightly grown training mask clip(blur(m), 0, 0.5)·2; (B, H, W, 1) in [0, 1]."""
    blurred = gaussian_blur(mask, float(mask_blur_sigma(resolution)))
    return tf.clip_by_value(blurred, 0.0, 0.5) * 2.0


def eyes_mouth_loss(target: tf.Tensor, predicted: tf.Tensor, eyes_mouth_mask: tf.Tensor) -> tf.Tensor:
    """Eyes/mouth priority term 300·mean|t·em - p·em| per sample, (B,); em is (B, H, W, 1) in [0, 1]."""
    return 300.0 * _per_sample_mean(tf.abs(target * eyes_mouth_mask - predicted * eyes_mouth_mask))


def mask_loss(mask: tf.Tensor, predicted_mask: tf.Tensor) -> tf.Tensor:
    """Decoder mask term 10·mean((m - m̂)²) per sample, (B,); both (B, H, W, 1) in [0, 1]."""
    return 10.0 * mean_squared_error(mask, predicted_mask)


def style_loss(a: tf.Tensor, b: tf.Tensor, blur_radius: int, power: float) -> tf.Tensor:
    """Face style term per sample, (B,) float32, between NHWC images a and b.

    Both images are blurred with `gaussian_blur` using blur_radius as σ (0 skips the blur; SAEHD
    callers pass resolution // 8). Then Σ over channels of (Δmean² + Δstd²) / C, where the statistics
    are per channel over the spatial axes and std = sqrt(var + 1e-5), scaled by 10000·(power / 100).
    """
    a = tf.convert_to_tensor(a, dtype=tf.float32)
    b = tf.convert_to_tensor(b, dtype=tf.float32)
    channels = _static_channels(a)
    if blur_radius > 0:
        a = gaussian_blur(a, float(blur_radius))
        b = gaussian_blur(b, float(blur_radius))
    mean_a, variance_a = tf.nn.moments(a, axes=[1, 2])
    mean_b, variance_b = tf.nn.moments(b, axes=[1, 2])
    std_a = tf.sqrt(variance_a + _STYLE_VARIANCE_EPSILON)
    std_b = tf.sqrt(variance_b + _STYLE_VARIANCE_EPSILON)
    difference = tf.reduce_sum(tf.square(mean_a - mean_b) + tf.square(std_a - std_b), axis=1)
    return difference / channels * (10000.0 * power / 100.0)


def background_style_loss(
    target: tf.Tensor, predicted: tf.Tensor, mask: tf.Tensor, resolution: int, power: float
) -> tf.Tensor:
    """Background style term per sample, (B,) float32.

    (power / 10)·[10·DSSIM(int(res / 11.6)) + 10·mean((t - p)²)] on both images times (1 - mask).
    The ×10 on each part follows the reconstruction terms' scale (SAEHD.md only says "DSSIM + MSE").
    mask is (B, H, W, 1) in [0, 1], in SAEHD the blurred target-src mask.
    """
    outside = 1.0 - mask
    target_bg = target * outside
    predicted_bg = predicted * outside
    kernel_size = dssim_kernel_sizes(resolution)[0]
    inner = 10.0 * dssim(target_bg, predicted_bg, kernel_size) + 10.0 * mean_squared_error(
        target_bg, predicted_bg
    )
    return (power / 10.0) * inner


def binary_cross_entropy_logits(labels_value: float, logits: tf.Tensor) -> tf.Tensor:
    """Sigmoid cross-entropy against a constant label, mean over all non-batch axes: (B, ...) -> (B,)."""
    logits = tf.convert_to_tensor(logits, dtype=tf.float32)
    labels = tf.fill(tf.shape(logits), tf.constant(labels_value, dtype=tf.float32))
    return _per_sample_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def gan_generator_loss(low_logits: tf.Tensor, full_logits: tf.Tensor) -> tf.Tensor:
    """Generator's GAN term BCE(1, low) + BCE(1, full), (B,); the caller multiplies by gan_power."""
    return binary_cross_entropy_logits(1.0, low_logits) + binary_cross_entropy_logits(1.0, full_logits)


def gan_discriminator_loss(
    real_low: tf.Tensor, real_full: tf.Tensor, fake_low: tf.Tensor, fake_full: tf.Tensor
) -> tf.Tensor:
    """Patch discriminator loss, summed over the two heads of 0.5·(BCE(1, real) + BCE(0, fake)); (B,)."""
    low = 0.5 * (binary_cross_entropy_logits(1.0, real_low) + binary_cross_entropy_logits(0.0, fake_low))
    full = 0.5 * (binary_cross_entropy_logits(1.0, real_full) + binary_cross_entropy_logits(0.0, fake_full))
    return low + full


def true_face_generator_loss(src_code_logits: tf.Tensor, power: float) -> tf.Tensor:
    """True-face generator term power·BCE(1, D(src code)), (B,): pulls src codes towards dst codes."""
    return power * binary_cross_entropy_logits(1.0, src_code_logits)


def code_discriminator_loss(dst_code_logits: tf.Tensor, src_code_logits: tf.Tensor) -> tf.Tensor:
    """Code discriminator loss 0.5·[BCE(1, D(dst code)) + BCE(0, D(src code))], (B,)."""
    return 0.5 * (
        binary_cross_entropy_logits(1.0, dst_code_logits) + binary_cross_entropy_logits(0.0, src_code_logits)
    )


def total_variation_mse(images: tf.Tensor) -> tf.Tensor:
    """Sum (not mean) of squared vertical and horizontal neighbour differences per sample, (B,).

    A sum, because SAEHD weights it by 1e-6: a per-pixel mean at that weight would have no effect.
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    vertical = images[:, 1:, :, :] - images[:, :-1, :, :]
    horizontal = images[:, :, 1:, :] - images[:, :, :-1, :]
    return _per_sample_sum(tf.square(vertical)) + _per_sample_sum(tf.square(horizontal))
