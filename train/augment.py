"""SAEHD sample augmentation: random affine and flip, grid warp, HSV jitter, one shared transform per sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from curate.faces.landmarks68 import MIRROR_ORDER, mirror

# Below this size the warp grid is too coarse to look like a face deformation, so it is built at
# this size and the maps are resized down (SAEHD.md §5).
_MIN_WARP_SIZE = 64
# The grid warp picks its cell as size/2, size/4 or size/8.
_WARP_CELL_COUNTS = (2, 4, 8)
# Standard deviation of an interior grid point's move, as a fraction of the cell size.
_WARP_STRENGTH = 0.24


@dataclass(frozen=True)
class AffineParams:
    """One random similarity transform plus an optional horizontal flip."""

    rotation_degrees: float  # counter-clockwise as displayed (image y axis pointing down)
    scale: float  # > 0, about the image centre
    shift_x: float  # translation as a fraction of the width, positive to the right
    shift_y: float  # translation as a fraction of the height, positive downwards
    flip: bool  # mirror left-right after the similarity


@dataclass(frozen=True, eq=False)
class WarpMaps:
    """Backward maps for cv2.remap: output pixel (y, x) samples the input at (map_y, map_x)."""

    map_x: np.ndarray  # (size, size) float32, input-pixel x coordinates
    map_y: np.ndarray  # (size, size) float32, input-pixel y coordinates
    cell: float  # grid cell side in output pixels (size/2, size/4 or size/8)


@dataclass(frozen=True)
class HsvShift:
    """A colour jitter: hue rotation in degrees and additive saturation/value offsets."""

    hue_degrees: int
    saturation: float
    value: float


@dataclass(frozen=True, eq=False)
class SampleTransform:
    """Everything random about one training sample, drawn once so that all its outputs agree."""

    size: int  # side of the square images it applies to
    affine: AffineParams  # applied to the network input and to every target
    warp: WarpMaps | None  # grid warp of the network input only; None when random_warp is off
    hsv: HsvShift | None  # colour jitter of the network input only; None when off


def random_affine(
    rng: np.random.Generator,
    flip_probability: float,
    rotation_range: tuple[float, float] = (-10.0, 10.0),
    scale_range: float = 0.15,
    shift_range: float = 0.05,
) -> AffineParams:
    """Draw SAEHD's sample affine: rotation U(rotation_range) degrees, scale U(1/(1+s), 1+s),
    shifts U(-shift_range, shift_range) of the side on each axis, flip with flip_probability.

    Always consumes the same number of draws from rng, whatever the arguments.
    """
    if not 0.0 <= flip_probability <= 1.0:
        raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
    if scale_range < 0.0:
        raise ValueError(f"scale_range must be >= 0, got {scale_range}")
    if shift_range < 0.0:
        raise ValueError(f"shift_range must be >= 0, got {shift_range}")
    low, high = rotation_range
    if low > high:
        raise ValueError(f"rotation_range must be (low, high) with low <= high, got {rotation_range}")
    rotation = float(rng.uniform(low, high))
    scale = float(rng.uniform(1.0 / (1.0 + scale_range), 1.0 + scale_range))
    shift_x, shift_y = (float(value) for value in rng.uniform(-shift_range, shift_range, size=2))
    flip = bool(rng.random() < flip_probability)
    return AffineParams(rotation, scale, shift_x, shift_y, flip)


def affine_matrix(params: AffineParams, size: int) -> np.ndarray:
    """The (2, 3) float64 forward matrix (input pixel -> output pixel) of params on a size² image.

    Rotation and scale act about the centre of the pixel grid, (size - 1)/2, so that the flip,
    applied last as x -> size - 1 - x, is an exact pixel mirror (np.fliplr).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    centre = (size - 1) / 2.0
    angle = np.radians(params.rotation_degrees)
    cos, sin = params.scale * np.cos(angle), params.scale * np.sin(angle)
    # With y pointing down, this is a counter-clockwise turn on screen (OpenCV's convention).
    linear = np.array([[cos, sin], [-sin, cos]])
    offset = np.array([centre, centre]) - linear @ np.array([centre, centre])
    offset += np.array([params.shift_x, params.shift_y]) * size
    matrix = np.hstack([linear, offset[:, None]])
    if params.flip:
        mirror_x = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = (mirror_x @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    return matrix


def _square_size(image: np.ndarray) -> int:
    if image.ndim not in (2, 3) or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square (H, W) or (H, W, C) image, got shape {image.shape}")
    return int(image.shape[0])


def _restore_channels(result: np.ndarray, like: np.ndarray) -> np.ndarray:
    # OpenCV drops a trailing channel axis of length 1.
    return result.reshape(like.shape).astype(np.float32, copy=False)


def apply_affine(
    image: np.ndarray, params: AffineParams, border: Literal["replicate", "constant"]
) -> np.ndarray:
    """Warp a square (S, S), (S, S, 1) or (S, S, 3) float32 image by params; same shape and dtype.

    border "replicate" is for images (no black corners to learn), "constant" fills with 0 and is
    for masks. Bilinear interpolation, so values stay inside the input's range.
    """
    if border not in ("replicate", "constant"):
        raise ValueError(f"border must be 'replicate' or 'constant', got {border!r}")
    image = np.asarray(image, dtype=np.float32)
    size = _square_size(image)
    border_mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    result = cv2.warpAffine(
        image, affine_matrix(params, size), (size, size), flags=cv2.INTER_LINEAR,
        borderMode=border_mode, borderValue=0,
    )
    return _restore_channels(result, image)


def affine_landmarks(landmarks68: np.ndarray, params: AffineParams, size: int) -> np.ndarray:
    """(68, 2) float64 landmarks of the image that apply_affine(image, params) produces.

    When flipped, the points are also re-ordered so that each index keeps its iBUG meaning
    (index 36 stays the subject's right eye corner).
    """
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {points.shape}")
    matrix = affine_matrix(params, size)
    moved = points @ matrix[:, :2].T + matrix[:, 2]
    return moved[MIRROR_ORDER] if params.flip else moved


def flip_landmarks(landmarks68: np.ndarray, width: int) -> np.ndarray:
    """(68, 2) float64 landmarks of the left-right mirrored image of the given width, re-ordered."""
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {points.shape}")
    return mirror(points, width)


def _interpolation_weights(coordinates: np.ndarray, nodes: int) -> np.ndarray:
    """Bilinear weights (len(coordinates), nodes) of fractional grid coordinates, clamped at the ends."""
    clamped = np.clip(coordinates, 0.0, nodes - 1.0)
    lower = np.minimum(np.floor(clamped).astype(np.int64), nodes - 2)
    fraction = clamped - lower
    weights = np.zeros((len(coordinates), nodes))
    rows = np.arange(len(coordinates))
    weights[rows, lower] = 1.0 - fraction
    weights[rows, lower + 1] = fraction
    return weights


def grid_warp_maps(offsets_x: np.ndarray, offsets_y: np.ndarray, size: int) -> WarpMaps:
    """The deterministic half of random_warp: maps from per-node offsets of a regular grid.

    offsets_x, offsets_y: (n + 1, n + 1) displacements, in pixels of the working size
    w = max(size, 64), of the nodes of a grid with n cells of side c = w/n (row index = y).
    Node (j, i) sits at pixel (i·c − ½, j·c − ½), so zero offsets give the identity map.
    The grid is interpolated bilinearly at pixel centres as if resized to (w + c)² and cropped by
    c/2 on each side (the crop keeps the clamped outer half-cells out of the image), then, when
    size < 64, the maps are resized to size² and rescaled to size's pixel coordinates.
    Returns float32 (size, size) maps.
    """
    offsets_x = np.asarray(offsets_x, dtype=np.float64)
    offsets_y = np.asarray(offsets_y, dtype=np.float64)
    if offsets_x.ndim != 2 or offsets_x.shape[0] != offsets_x.shape[1] or offsets_x.shape[0] < 2:
        raise ValueError(f"offsets must be square (n + 1, n + 1) with n >= 1, got {offsets_x.shape}")
    if offsets_y.shape != offsets_x.shape:
        raise ValueError(f"offsets_x and offsets_y differ in shape: {offsets_x.shape} vs {offsets_y.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    nodes = offsets_x.shape[0]
    work = max(size, _MIN_WARP_SIZE)
    cell = work / (nodes - 1)
    node_positions = np.arange(nodes) * cell - 0.5
    # Output pixel k of the cropped (w + c)-sized resize reads the grid at (k + ½)/c.
    weights = _interpolation_weights((np.arange(work) + 0.5) / cell, nodes)
    grid_x = node_positions[None, :] + offsets_x
    grid_y = node_positions[:, None] + offsets_y
    map_x = weights @ grid_x @ weights.T
    map_y = weights @ grid_y @ weights.T
    if work != size:
        ratio = size / work
        # Resizing keeps pixel centres aligned, so values convert the same way as positions.
        map_x = (cv2.resize(map_x, (size, size), interpolation=cv2.INTER_LINEAR) + 0.5) * ratio - 0.5
        map_y = (cv2.resize(map_y, (size, size), interpolation=cv2.INTER_LINEAR) + 0.5) * ratio - 0.5
        cell *= ratio
    return WarpMaps(map_x.astype(np.float32), map_y.astype(np.float32), float(cell))


def random_warp(rng: np.random.Generator, size: int) -> WarpMaps:
    """Draw SAEHD's random grid warp for a size² image (SAEHD.md §5).

    cell = w/2, w/4 or w/8 (uniformly; w = max(size, 64)); the interior nodes of the
    (w/cell + 1)² grid move by N(0, 1)·0.24·cell on each axis, the border nodes stay put.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    cells = int(_WARP_CELL_COUNTS[int(rng.integers(len(_WARP_CELL_COUNTS)))])
    cell = max(size, _MIN_WARP_SIZE) / cells
    offsets = rng.standard_normal((2, cells + 1, cells + 1)) * (_WARP_STRENGTH * cell)
    offsets[:, [0, -1], :] = 0.0
    offsets[:, :, [0, -1]] = 0.0
    return grid_warp_maps(offsets[0], offsets[1], size)


def apply_warp(image: np.ndarray, maps: WarpMaps) -> np.ndarray:
    """Remap an (S, S), (S, S, 1) or (S, S, 3) float32 image by maps (bilinear, replicated border)."""
    image = np.asarray(image, dtype=np.float32)
    size = _square_size(image)
    if maps.map_x.shape != (size, size):
        raise ValueError(f"warp maps are {maps.map_x.shape} but the image is {image.shape}")
    result = cv2.remap(image, maps.map_x, maps.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _restore_channels(result, image)


def random_hsv_shift(rng: np.random.Generator, power: float) -> HsvShift:
    """Draw a hue shift, an integer in ±int(180·power) degrees, and saturation and value shifts
    in U(−power/2, power/2). Always consumes the same number of draws from rng."""
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"HSV power must be in [0, 1], got {power}")
    hue_limit = int(180 * power)
    hue = int(rng.integers(-hue_limit, hue_limit + 1))
    saturation, value = (float(shift) for shift in rng.uniform(-power / 2.0, power / 2.0, size=2))
    return HsvShift(hue, saturation, value)


def apply_hsv_shift(image: np.ndarray, shift: HsvShift) -> np.ndarray:
    """Shift an (H, W, 3) float32 BGR [0, 1] image in HSV: hue wraps round 360°, S and V are clipped.

    A zero shift returns an exact copy (the HSV round trip is not bit-exact).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
    if shift.hue_degrees == 0 and shift.saturation == 0.0 and shift.value == 0.0:
        return image.copy()
    # OpenCV's float HSV has hue in degrees [0, 360) and S, V in [0, 1].
    hsv = cv2.cvtColor(np.clip(image, 0.0, 1.0), cv2.COLOR_BGR2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + shift.hue_degrees, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] + shift.saturation, 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift.value, 0.0, 1.0)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), 0.0, 1.0).astype(np.float32)


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, power: float) -> np.ndarray:
    """Random HSV jitter of an (H, W, 3) float32 BGR [0, 1] image; power 0 returns an exact copy."""
    return apply_hsv_shift(image, random_hsv_shift(rng, power))


# draw_sample_transform's flag is named random_warp and shadows the function inside it.
_draw_warp = random_warp


def draw_sample_transform(
    rng: np.random.Generator,
    size: int,
    random_warp: bool,
    flip_probability: float,
    hsv_power: float = 0.0,
) -> SampleTransform:
    """Draw everything random about one size² sample: affine (always), warp, HSV jitter.

    The affine is drawn first, so for one seed it is the same whether warp or HSV is on.
    hsv_power 0 draws nothing for the jitter (SAEHD applies it to the src input only).
    """
    if hsv_power < 0.0:
        raise ValueError(f"hsv_power must be >= 0, got {hsv_power}")
    affine = random_affine(rng, flip_probability)
    warp = _draw_warp(rng, size) if random_warp else None
    hsv = random_hsv_shift(rng, hsv_power) if hsv_power > 0.0 else None
    return SampleTransform(size, affine, warp, hsv)


def transform_sample(
    image: np.ndarray, masks: dict[str, np.ndarray], transform: SampleTransform
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Apply one SampleTransform to a sample.

    image: (S, S, 3) float32 BGR [0, 1]; masks: name -> (S, S) or (S, S, 1) float32 [0, 1].
    Returns (network input, target image, target masks), all the input shapes:
    - input  = HSV(affine(warp(image))) — warp and HSV only when the transform has them;
    - target = affine(image), border replicated;
    - masks  = affine(mask), border 0.
    Input and targets thus share the affine and flip; only the input is warped (SAEHD.md §5).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[:2] != (transform.size, transform.size):
        raise ValueError(f"image shape {image.shape} does not match the transform size {transform.size}")
    for name, mask in masks.items():
        if np.shape(mask)[:2] != image.shape[:2]:
            raise ValueError(f"mask {name!r} has shape {np.shape(mask)}, the image {image.shape}")
    warped = apply_warp(image, transform.warp) if transform.warp is not None else image
    network_input = apply_affine(warped, transform.affine, "replicate")
    if transform.hsv is not None:
        network_input = apply_hsv_shift(network_input, transform.hsv)
    target = apply_affine(image, transform.affine, "replicate")
    target_masks = {name: apply_affine(mask, transform.affine, "constant") for name, mask in masks.items()}
    return network_input, target, target_masks
