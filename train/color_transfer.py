"""Colour transfer between faces (SAEHD ct_mode, also the merger's): rct, lct, mkl, idt, sot."""

from __future__ import annotations

import cv2
import numpy as np

COLOR_TRANSFER_MODES: tuple[str, ...] = ("none", "rct", "lct", "mkl", "idt", "sot")

# Keeps the covariance square roots well conditioned for flat (e.g. single-colour) regions;
# small next to the ~1e-3 channel variances of a real face in [0, 1].
_COVARIANCE_EPSILON = 1e-6
# Floor for a Lab channel's standard deviation (Lab units, L in 0..100).
_LAB_STD_FLOOR = 1e-3
_IDT_ITERATIONS = 10
_SOT_STEPS = 10
_SOT_DIRECTIONS = 16
# 1-D distributions are matched at this many evenly spaced quantiles, then interpolated.
_QUANTILE_COUNT = 256
# Without an rng, idt and sot draw their rotations from this seed, so results repeat.
_DEFAULT_SEED = 0


def _check_image(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an (H, W, 3) BGR image, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return image


def _selected_pixels(name: str, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(N, 3) pixels whose mask value is above 0.5 (all pixels without a mask)."""
    pixels = image.reshape(-1, 3)
    if mask is None:
        return pixels
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape not in (image.shape[:2], (*image.shape[:2], 1)):
        raise ValueError(f"{name} mask has shape {mask.shape}, its image {image.shape}")
    selected = pixels[mask.reshape(-1) > 0.5]
    if len(selected) < 2:
        raise ValueError(f"{name} mask selects {len(selected)} pixels; colour statistics need at least 2")
    return selected


def _symmetric_power(matrix: np.ndarray, power: float) -> np.ndarray:
    """matrix^power of a symmetric positive semi-definite matrix through its eigendecomposition."""
    values, vectors = np.linalg.eigh(matrix)
    values = np.maximum(values, _COVARIANCE_EPSILON)
    return (vectors * values**power) @ vectors.T


def _mean_and_covariance(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = pixels.astype(np.float64)
    mean = pixels.mean(axis=0)
    centred = pixels - mean
    covariance = centred.T @ centred / len(pixels) + _COVARIANCE_EPSILON * np.eye(3)
    return mean, covariance


def _reinhard(source: np.ndarray, source_stats: np.ndarray, target_stats: np.ndarray) -> np.ndarray:
    # OpenCV's float Lab: L in [0, 100], a and b roughly in [-127, 127].
    source_lab = cv2.cvtColor(source, cv2.COLOR_BGR2Lab).astype(np.float64)
    source_pixels = cv2.cvtColor(source_stats.reshape(-1, 1, 3), cv2.COLOR_BGR2Lab).reshape(-1, 3)
    target_pixels = cv2.cvtColor(target_stats.reshape(-1, 1, 3), cv2.COLOR_BGR2Lab).reshape(-1, 3)
    source_mean, source_std = source_pixels.mean(axis=0), source_pixels.std(axis=0)
    target_mean, target_std = target_pixels.mean(axis=0), target_pixels.std(axis=0)
    gain = target_std / np.maximum(source_std, _LAB_STD_FLOOR)
    result_lab = (source_lab - source_mean) * gain + target_mean
    return cv2.cvtColor(result_lab.astype(np.float32), cv2.COLOR_Lab2BGR)


def _linear(source: np.ndarray, source_stats: np.ndarray, target_stats: np.ndarray, monge: bool) -> np.ndarray:
    source_mean, source_covariance = _mean_and_covariance(source_stats)
    target_mean, target_covariance = _mean_and_covariance(target_stats)
    if monge:
        # The Monge-Kantorovitch map between Gaussians: the least-displacement T with T Σs Tᵀ = Σt.
        root = _symmetric_power(source_covariance, 0.5)
        inverse_root = _symmetric_power(source_covariance, -0.5)
        transform = inverse_root @ _symmetric_power(root @ target_covariance @ root, 0.5) @ inverse_root
    else:
        # Symmetric square roots: T = Σt^½ Σs^-½, which also gives T Σs Tᵀ = Σt.
        transform = _symmetric_power(target_covariance, 0.5) @ _symmetric_power(source_covariance, -0.5)
    pixels = source.reshape(-1, 3).astype(np.float64)
    result = (pixels - source_mean) @ transform.T + target_mean
    return result.reshape(source.shape)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A 3×3 rotation drawn uniformly (QR of a Gaussian matrix with the sign ambiguity removed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _quantile_map(values: np.ndarray, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Where each of `values` lands when the distribution of `reference` is mapped onto `target`."""
    levels = np.linspace(0.0, 1.0, _QUANTILE_COUNT)
    reference_quantiles = np.quantile(reference, levels)
    target_quantiles = np.quantile(target, levels)
    # np.interp needs strictly increasing knots; flat stretches (ties) get a negligible ramp.
    reference_quantiles = reference_quantiles + np.arange(_QUANTILE_COUNT) * 1e-9
    return np.interp(values, reference_quantiles, target_quantiles)


def _iterative_distribution(
    source: np.ndarray, source_index: np.ndarray | None, target_stats: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    pixels = source.reshape(-1, 3).astype(np.float64)
    target = target_stats.astype(np.float64)
    for _ in range(_IDT_ITERATIONS):
        rotation = _random_rotation(rng)
        rotated = pixels @ rotation
        rotated_target = target @ rotation
        reference = rotated if source_index is None else rotated[source_index]
        matched = np.stack(
            [_quantile_map(rotated[:, axis], reference[:, axis], rotated_target[:, axis]) for axis in range(3)],
            axis=1,
        )
        pixels = matched @ rotation.T
    return pixels.reshape(source.shape)


def _sliced_transport(
    source: np.ndarray, source_index: np.ndarray | None, target_stats: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    pixels = source.reshape(-1, 3).astype(np.float64)
    target = target_stats.astype(np.float64)
    for _ in range(_SOT_STEPS):
        directions = rng.standard_normal((_SOT_DIRECTIONS, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        projected = pixels @ directions.T
        projected_target = target @ directions.T
        reference = projected if source_index is None else projected[source_index]
        advection = np.zeros_like(pixels)
        for column, direction in enumerate(directions):
            moved = _quantile_map(projected[:, column], reference[:, column], projected_target[:, column])
            advection += (moved - projected[:, column])[:, None] * direction
        # Isotropic unit directions average to I/3 in d·dᵀ, so 3/n makes one step a full
        # per-direction transfer rather than a third of one.
        pixels = pixels + advection * (3.0 / _SOT_DIRECTIONS)
    return pixels.reshape(source.shape)


def color_transfer(
    mode: str,
    source: np.ndarray,
    target: np.ndarray,
    source_mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Recolour `source` so its colour distribution resembles `target`'s.

    source, target: (H, W, 3) float32 BGR [0, 1]; the sizes may differ.
    source_mask, target_mask: optional (H, W) or (H, W, 1) float32 [0, 1] of the matching image;
    only pixels with mask > 0.5 feed the statistics, but the resulting transform recolours
    every source pixel. Modes:
    - none: a copy of source;
    - rct: Reinhard — per-channel mean and standard deviation matched in OpenCV L*a*b*;
    - lct: linear — mean and covariance matched in BGR with T = Σt^½ Σs^-½ (symmetric roots);
    - mkl: Monge-Kantorovitch linear — T = Σs^-½ (Σs^½ Σt Σs^½)^½ Σs^-½, the least-moving linear
      map matching mean and covariance;
    - idt: iterative distribution transfer — 10 random 3-D rotations, each followed by 1-D
      quantile matching along the rotated axes;
    - sot: sliced optimal transport — 10 steps, each matching 1-D projections on 16 random
      directions and advecting the pixels by the averaged displacement.
    rng draws idt's rotations and sot's directions; without one a fixed seed is used.
    Returns (H, W, 3) float32 in [0, 1] (clipped).
    """
    if mode not in COLOR_TRANSFER_MODES:
        raise ValueError(f"unknown colour transfer mode {mode!r}: choose one of {', '.join(COLOR_TRANSFER_MODES)}")
    source = _check_image("source", source)
    target = _check_image("target", target)
    if mode == "none":
        return source.copy()
    source_stats = _selected_pixels("source", source, source_mask)
    target_stats = _selected_pixels("target", target, target_mask)
    if mode == "rct":
        result = _reinhard(source, source_stats, target_stats)
    elif mode in ("lct", "mkl"):
        result = _linear(source, source_stats, target_stats, monge=mode == "mkl")
    else:
        rng = rng if rng is not None else np.random.default_rng(_DEFAULT_SEED)
        source_index = None if source_mask is None else np.flatnonzero(np.reshape(source_mask, -1) > 0.5)
        if mode == "idt":
            result = _iterative_distribution(source, source_index, target_stats, rng)
        else:
            result = _sliced_transport(source, source_index, target_stats, rng)
    return np.clip(result, 0.0, 1.0).astype(np.float32)
