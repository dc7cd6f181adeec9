"""SAEHD loss terms on Keras 3 (`keras.ops`, any backend): DSSIM, reconstruction, masks, style, GAN, true face.

Every term is per sample, shape (B,), so a step can report per-face losses beside their means.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from train.layers import ops

Tensor = Any

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


def _depthwise_filter(kernel: np.ndarray, channels: int) -> Tensor:
    """(k, k) kernel -> (k, k, C, 1) depthwise filter applying it to each channel alone."""
    tiled = np.tile(kernel[:, :, None, None], (1, 1, channels, 1))
    return ops.convert_to_tensor(tiled, dtype="float32")


def _static_channels(images: Tensor) -> int:
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] is None:
        raise ValueError(f"expected NHWC images with a known channel count, got shape {shape}")
    return int(shape[-1])


def _per_sample_mean(values: Tensor) -> Tensor:
    """Mean over every axis but the batch axis: (B, ...) -> (B,)."""
    return ops.mean(values, axis=tuple(range(1, len(values.shape))))


def _per_sample_sum(values: Tensor) -> Tensor:
    return ops.sum(values, axis=tuple(range(1, len(values.shape))))


def _float32(values: Tensor) -> Tensor:
    return ops.cast(ops.convert_to_tensor(values), "float32")


def _depthwise(images: Tensor, window: Tensor, padding: str) -> Tensor:
    return ops.depthwise_conv(images, window, strides=1, padding=padding, data_format="channels_last")


def ssim(
    target: Tensor,
    predicted: Tensor,
    kernel_size: int,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    max_value: float = 1.0,
) -> Tensor:
    """Per-sample SSIM, (B,) float32, for NHWC float32 images in [0, max_value].

    Local statistics use a normalised Gaussian window with VALID padding, applied to each channel
    separately; the SSIM map is averaged over the valid pixels and the channels. Identical images give 1.
    """
    target = _float32(target)
    predicted = _float32(predicted)
    channels = _static_channels(target)
    height, width = target.shape[1], target.shape[2]
    if height is not None and width is not None and kernel_size > min(height, width):
        raise ValueError(f"DSSIM kernel size {kernel_size} exceeds the image size {height}x{width}")
    window = _depthwise_filter(gaussian_kernel(kernel_size, sigma), channels)

    def local_mean(x: Tensor) -> Tensor:
        return _depthwise(x, window, "valid")

    c1 = (k1 * max_value) ** 2
    c2 = (k2 * max_value) ** 2
    # (Co)variances are shift-invariant; centring each image on its own mean first keeps
    # E[x²] - E[x]² from cancelling catastrophically in float32 (flat images come out exact).
    shift_t = ops.stop_gradient(ops.mean(target, axis=(1, 2), keepdims=True))
    shift_p = ops.stop_gradient(ops.mean(predicted, axis=(1, 2), keepdims=True))
    target = target - shift_t
    predicted = predicted - shift_p
    centred_mean_t = local_mean(target)
    centred_mean_p = local_mean(predicted)
    variance_sum = local_mean(ops.square(target) + ops.square(predicted)) - (
        ops.square(centred_mean_t) + ops.square(centred_mean_p)
    )
    covariance = local_mean(target * predicted) - centred_mean_t * centred_mean_p
    mean_t = centred_mean_t + shift_t
    mean_p = centred_mean_p + shift_p
    mean_tp = mean_t * mean_p
    mean_sq_sum = ops.square(mean_t) + ops.square(mean_p)
    luminance = (2.0 * mean_tp + c1) / (mean_sq_sum + c1)
    contrast_structure = (2.0 * covariance + c2) / (variance_sum + c2)
    return _per_sample_mean(luminance * contrast_structure)


def dssim(
    target: Tensor,
    predicted: Tensor,
    kernel_size: int,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    max_value: float = 1.0,
) -> Tensor:
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


def mean_squared_error(target: Tensor, predicted: Tensor) -> Tensor:
    """Plain mean((t - p)²) per sample, (B,) float32, without SAEHD's ×10 weight."""
    return _per_sample_mean(ops.square(target - predicted))


def reconstruction_loss(target: Tensor, predicted: Tensor, resolution: int) -> Tensor:
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


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Per-channel Gaussian blur of NHWC float32 images, same shape out.

    Kernel size max(3, int(4σ)) made odd, zero (SAME) padding, so content near the border darkens.
    """
    size = max(3, int(4 * sigma))
    if size % 2 == 0:
        size += 1
    images = _float32(images)
    window = _depthwise_filter(gaussian_kernel(size, sigma), _static_channels(images))
    return _depthwise(images, window, "same")


def blurred_mask(mask: Tensor, resolution: int) -> Tensor:
    """Softened, slightly grown training mask clip(blur(m), 0, 0.5)·2; (B, H, W, 1) in [0, 1]."""
    blurred = gaussian_blur(mask, float(mask_blur_sigma(resolution)))
    return ops.clip(blurred, 0.0, 0.5) * 2.0


def eyes_mouth_loss(target: Tensor, predicted: Tensor, eyes_mouth_mask: Tensor) -> Tensor:
    """Eyes/mouth priority term 300·mean|t·em - p·em| per sample, (B,); em is (B, H, W, 1) in [0, 1]."""
    return 300.0 * _per_sample_mean(ops.abs(target * eyes_mouth_mask - predicted * eyes_mouth_mask))


def mask_loss(mask: Tensor, predicted_mask: Tensor) -> Tensor:
    """Decoder mask term 10·mean((m - m̂)²) per sample, (B,); both (B, H, W, 1) in [0, 1]."""
    return 10.0 * mean_squared_error(mask, predicted_mask)


def style_loss(a: Tensor, b: Tensor, blur_radius: int, power: float) -> Tensor:
    """Face style term per sample, (B,) float32, between NHWC images a and b.

    Both images are blurred with `gaussian_blur` using blur_radius as σ (0 skips the blur; SAEHD
    callers pass resolution // 8). Then Σ over channels of (Δmean² + Δstd²) / C, where the statistics
    are per channel over the spatial axes and std = sqrt(var + 1e-5), scaled by 10000·(power / 100).
    """
    a = _float32(a)
    b = _float32(b)
    channels = _static_channels(a)
    if blur_radius > 0:
        a = gaussian_blur(a, float(blur_radius))
        b = gaussian_blur(b, float(blur_radius))
    mean_a, variance_a = moments(a, axes=(1, 2))
    mean_b, variance_b = moments(b, axes=(1, 2))
    std_a = ops.sqrt(variance_a + _STYLE_VARIANCE_EPSILON)
    std_b = ops.sqrt(variance_b + _STYLE_VARIANCE_EPSILON)
    difference = ops.sum(ops.square(mean_a - mean_b) + ops.square(std_a - std_b), axis=1)
    return difference / channels * (10000.0 * power / 100.0)


def background_style_loss(
    target: Tensor, predicted: Tensor, mask: Tensor, resolution: int, power: float
) -> Tensor:
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


def binary_cross_entropy_logits(labels_value: float, logits: Tensor) -> Tensor:
    """Sigmoid cross-entropy against a constant label, mean over all non-batch axes: (B, ...) -> (B,).

    The overflow-free form max(x, 0) − x·z + log(1 + e^−|x|), written with `where` as TensorFlow writes
    it: at a logit of exactly 0 (a patch discriminator sees many, on the zeros outside the mask) relu
    and abs have no slope and would drop the true gradient σ(0) − z = 0.5 − z.
    """
    logits = _float32(logits)
    positive = ops.greater_equal(logits, 0.0)
    relu_logits = ops.where(positive, logits, ops.zeros_like(logits))
    negative_abs = ops.where(positive, -logits, logits)
    elementwise = relu_logits - logits * labels_value + ops.log1p(ops.exp(negative_abs))
    return _per_sample_mean(elementwise)


def moments(values: Tensor, axes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean and (biased) variance over `axes` as TensorFlow's moments computes them:
    E[(x − mean)²] with the gradient stopped at the mean."""
    mean = ops.mean(values, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(values - ops.stop_gradient(mean)), axis=axes, keepdims=True)
    return ops.squeeze(mean, axis=axes), ops.squeeze(variance, axis=axes)


def gan_generator_loss(low_logits: Tensor, full_logits: Tensor) -> Tensor:
    """Generator's GAN term BCE(1, low) + BCE(1, full), (B,); the caller multiplies by gan_power."""
    return binary_cross_entropy_logits(1.0, low_logits) + binary_cross_entropy_logits(1.0, full_logits)


def gan_discriminator_loss(
    real_low: Tensor, real_full: Tensor, fake_low: Tensor, fake_full: Tensor
) -> Tensor:
    """Patch discriminator loss, summed over the two heads of 0.5·(BCE(1, real) + BCE(0, fake)); (B,)."""
    low = 0.5 * (binary_cross_entropy_logits(1.0, real_low) + binary_cross_entropy_logits(0.0, fake_low))
    full = 0.5 * (binary_cross_entropy_logits(1.0, real_full) + binary_cross_entropy_logits(0.0, fake_full))
    return low + full


def true_face_generator_loss(src_code_logits: Tensor, power: float) -> Tensor:
    """True-face generator term power·BCE(1, D(src code)), (B,): pulls src codes towards dst codes."""
    return power * binary_cross_entropy_logits(1.0, src_code_logits)


def code_discriminator_loss(dst_code_logits: Tensor, src_code_logits: Tensor) -> Tensor:
    """Code discriminator loss 0.5·[BCE(1, D(dst code)) + BCE(0, D(src code))], (B,)."""
    return 0.5 * (
        binary_cross_entropy_logits(1.0, dst_code_logits) + binary_cross_entropy_logits(0.0, src_code_logits)
    )


def total_variation_mse(images: Tensor) -> Tensor:
    """Sum (not mean) of squared vertical and horizontal neighbour differences per sample, (B,).

    A sum, because SAEHD weights it by 1e-6: a per-pixel mean at that weight would have no effect.
    """
    images = _float32(images)
    vertical = images[:, 1:, :, :] - images[:, :-1, :, :]
    horizontal = images[:, :, 1:, :] - images[:, :, :-1, :]
    return _per_sample_sum(ops.square(vertical)) + _per_sample_sum(ops.square(horizontal))
