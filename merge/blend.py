"""The merger's pure compositing: mask processing, warping back, colour, sharpening and the blend modes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from merge.settings import MASK_MODES, MERGE_MODES, SHARPEN_MODES, MergeSettings
from train.color_transfer import color_transfer

# Mask controls (erode, blur) count quarter face pixels: DFL processes masks at 4× the model
# resolution and its users' numbers are in those pixels. We run the morphology at the model
# resolution with the distances divided by this: far cheaper (16× fewer pixels, 4× shorter kernels),
# and fractional distances are interpolated (see `process_mask`) so no unit is lost.
MASK_UNITS_PER_PIXEL = 4
# DFL treats mask values below one 8-bit step as empty, so stray learned-mask noise is not blended.
_MASK_FLOOR = 1.0 / 255.0
# Seamless cloning needs a binary mask: the first of these thresholds that selects any pixel.
_SEAMLESS_THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.1)
# cv2.seamlessClone can fail when the mask's bounding box reaches the image border; this much
# replicated padding keeps it inside.
_SEAMLESS_PAD = 4
# The longest motion-blur kernel, and the shortest one used when motion blur is on.
_MOTION_KERNEL_MIN, _MOTION_KERNEL_MAX = 2, 50
# Colour statistics need at least this many mask-selected pixels to mean anything.
_MIN_STATISTIC_PIXELS = 16


@dataclass(frozen=True)
class FaceToBlend:
    """One face of a frame, ready to composite."""

    predicted_face: np.ndarray  # (R, R, 3) float32 BGR [0, 1], the model output in aligned-face space
    frame_to_face: np.ndarray  # (2, 3) float64, frame pixels -> aligned-face pixels (curate.faces.align.face_transform)
    mask_face: np.ndarray  # (R, R, 1) float32 [0, 1], already through process_mask, aligned-face space
    dst_face: np.ndarray | None = None  # (R, R, 3) float32 BGR [0, 1], the aligned dst crop
    motion_vector: tuple[float, float] | None = None  # frame pixels per frame, (x, y)


def _as_mask(name: str, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim == 2:
        mask = mask[..., None]
    if mask.ndim != 3 or mask.shape[2] != 1:
        raise ValueError(f"{name} must be (H, W) or (H, W, 1), got shape {mask.shape}")
    return mask


def _as_image(name: str, image: np.ndarray, channels: int | None = 3) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or (channels is not None and image.shape[2] != channels):
        raise ValueError(f"{name} must be (H, W, {channels or 'C'}), got shape {image.shape}")
    return image


def _as_matrix(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"an affine matrix must be a finite (2, 3) array, got shape {matrix.shape}")
    return matrix


_KernelFor = Callable[[int], tuple[np.ndarray, tuple[int, int]]]


def _morph_fraction(mask: np.ndarray, distance: float, kernel_for: _KernelFor, grow: bool) -> np.ndarray:
    """Erode (or dilate) `mask` so its edge moves by a fractional `distance` in pixels.

    `kernel_for(k)` gives (kernel, anchor) moving the edge by k whole pixels; a fractional distance
    blends the whole-pixel results either side, which for a binary edge is a sub-pixel shift.
    """
    operation = cv2.dilate if grow else cv2.erode
    whole = int(math.floor(distance))
    fraction = distance - whole

    def moved(k: int) -> np.ndarray:
        if k == 0:
            return mask
        kernel, anchor = kernel_for(k)
        return operation(mask, kernel, anchor=anchor, borderType=cv2.BORDER_CONSTANT, borderValue=0)

    lower = moved(whole)
    if fraction < 1e-6:
        return lower
    return (1.0 - fraction) * lower + fraction * moved(whole + 1)


def _ellipse_kernel(k: int) -> tuple[np.ndarray, tuple[int, int]]:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)), (k, k)


def _side_kernel(side: str, grow: bool) -> _KernelFor:
    """A one-sided line kernel: erosion reads only pixels beyond the chosen edge, so only it moves.

    Eroding the top edge keeps a pixel when the k pixels above it are inside too, so each column's
    run loses k pixels at its top and none at its bottom. Growing the top edge is the mirror: a
    pixel joins when a pixel within k below it is inside. OpenCV does not reflect kernels, so the
    anchor alone picks the direction.
    """
    vertical = side in ("top", "bottom")
    # True when the kernel must reach towards smaller coordinates (up or left) of its anchor.
    reaches_back = (side in ("top", "left")) != grow

    def kernel_for(k: int) -> tuple[np.ndarray, tuple[int, int]]:
        shape = (k + 1, 1) if vertical else (1, k + 1)
        offset = k if reaches_back else 0
        anchor = (0, offset) if vertical else (offset, 0)
        return np.ones(shape, dtype=np.uint8), anchor

    return kernel_for


def process_mask(
    mask_face: np.ndarray,
    resolution: int,
    erode: int,
    blur: int,
    erode_sides: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> np.ndarray:
    """Erode/dilate, per-side erode and feather a face mask, all in aligned-face space.

    mask_face: (R', R', 1) or (R', R') float32 [0, 1]; resized to resolution² when R' differs.
    erode, blur and erode_sides (top, bottom, left, right) count quarter face pixels
    (`MASK_UNITS_PER_PIXEL`): erode 8 moves the edge 2 face pixels inwards, -8 two outwards.
    Steps:
    1. values below 1/255 become 0;
    2. the mask is zero-padded, so a mask touching the square's border erodes from there too, then
       eroded (dilated when negative) with an elliptical kernel; fractional pixel distances blend the
       two nearest whole-pixel results;
    3. per side, a one-sided line kernel (see `_side_kernel`) moves that edge only: with top erosion
       every column's mask run starts lower and nothing else changes (a column shorter than the
       erosion vanishes, as with any erosion);
    4. with blur > 0, a border band of blur/2 units is zeroed and a Gaussian with sigma = blur/6
       units (its ±3σ span is `blur` wide) feathers the edge, so the mask falls to ~0 at the square's
       edge instead of stopping in a seam.
    DFL works at 4× the model resolution; this works at 1× with the same units (see
    `MASK_UNITS_PER_PIXEL`). Returns (resolution, resolution, 1) float32 in [0, 1].
    """
    mask = _as_mask("mask_face", mask_face)
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if mask.shape[:2] != (resolution, resolution):
        mask = cv2.resize(mask, (resolution, resolution), interpolation=cv2.INTER_LINEAR)[..., None]
    mask = np.clip(mask[..., 0], 0.0, 1.0).astype(np.float32)
    mask[mask < _MASK_FLOOR] = 0.0

    distances = [abs(value) / MASK_UNITS_PER_PIXEL for value in (erode, *erode_sides)]
    pad = int(math.ceil(max(distances))) + 2
    mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    if erode:
        mask = _morph_fraction(mask, abs(erode) / MASK_UNITS_PER_PIXEL, _ellipse_kernel, grow=erode < 0)
    for side, value in zip(("top", "bottom", "left", "right"), erode_sides, strict=True):
        if value:
            grow = value < 0
            mask = _morph_fraction(mask, abs(value) / MASK_UNITS_PER_PIXEL, _side_kernel(side, grow), grow=grow)
    mask = mask[pad:pad + resolution, pad:pad + resolution]

    if blur > 0:
        sigma = blur / 6.0 / MASK_UNITS_PER_PIXEL
        band = min(int(math.ceil(blur / 2.0 / MASK_UNITS_PER_PIXEL)), (resolution + 1) // 2)
        mask = mask.copy()
        mask[:band, :] = 0.0
        mask[-band:, :] = 0.0
        mask[:, :band] = 0.0
        mask[:, -band:] = 0.0
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)[..., None]


def combine_masks(
    mask_mode: str,
    hull: np.ndarray | None,
    learned_predicted: np.ndarray | None,
    learned_dst: np.ndarray | None,
) -> np.ndarray:
    """The raw face mask a mask mode asks for, before `process_mask`.

    hull: (R, R, 1) float32 [0, 1], the landmark hull of the dst face in aligned-face space;
    learned_predicted, learned_dst: (R, R, 1) float32 [0, 1], the model's mask for the swapped face
    and for the dst reconstruction. Inputs the mode does not use may be None (any one of them is
    still needed for `full`, to know R). Sums are clipped to 1. Returns (R, R, 1) float32.
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mask_mode!r}: choose one of {', '.join(MASK_MODES)}")
    given = {"hull": hull, "learned_predicted": learned_predicted, "learned_dst": learned_dst}
    masks = {name: None if value is None else _as_mask(name, value) for name, value in given.items()}
    shapes = {mask.shape for mask in masks.values() if mask is not None}
    if len(shapes) > 1:
        raise ValueError(f"masks must share one shape, got {sorted(shapes)}")

    def need(name: str) -> np.ndarray:
        if masks[name] is None:
            raise ValueError(f"mask mode {mask_mode} needs the {name} mask")
        return masks[name]

    if mask_mode == "full":
        if not shapes:
            raise ValueError("mask mode full needs one mask to know the face size")
        result = np.ones(next(iter(shapes)), dtype=np.float32)
    elif mask_mode == "dst":
        result = need("hull")
    elif mask_mode == "learned-prd":
        result = need("learned_predicted")
    elif mask_mode == "learned-dst":
        result = need("learned_dst")
    elif mask_mode == "learned-prd*learned-dst":
        result = need("learned_predicted") * need("learned_dst")
    elif mask_mode == "learned-prd+learned-dst":
        result = need("learned_predicted") + need("learned_dst")
    else:
        result = need("hull") * need("learned_predicted")
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def warp_to_frame(
    face_image: np.ndarray,
    frame_to_face: np.ndarray,
    frame_shape: tuple[int, ...],
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """An aligned-face image put back into frame coordinates.

    face_image: (R, R, C) float32 in aligned-face space. frame_to_face: the (2, 3) matrix mapping
    frame pixels to aligned-face pixels, as `curate.faces.align.face_transform` returns it; it is used
    with WARP_INVERSE_MAP, so no inversion is needed. frame_shape: (H, W, ...) of the frame.
    Pixels that map outside the face square are 0. Returns (H, W, C) float32.
    """
    face = _as_image("face_image", face_image, channels=None)
    matrix = _as_matrix(frame_to_face)
    height, width = int(frame_shape[0]), int(frame_shape[1])
    warped = cv2.warpAffine(face, matrix, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if warped.ndim == 2:
        warped = warped[..., None]
    return warped.astype(np.float32)


def scale_face_matrix(frame_to_face: np.ndarray, resolution: int, face_scale: int | float) -> np.ndarray:
    """The frame->face matrix that draws the face `1 + 0.01·face_scale` times larger about its centre.

    frame_to_face: (2, 3) frame pixels -> aligned-face pixels; resolution: R of the face square;
    face_scale: the merge setting (−50..50). The face centre (R/2, R/2) stays where it was in the
    frame; a frame point at distance d from it reads the face at distance d/scale. Returns (2, 3) float64.
    """
    matrix = _as_matrix(frame_to_face)
    scale = 1.0 + 0.01 * float(face_scale)
    if scale <= 0:
        raise ValueError(f"face_scale {face_scale} gives a non-positive scale")
    centre = resolution / 2.0
    shrink = np.array([[1.0 / scale, 0.0, centre - centre / scale], [0.0, 1.0 / scale, centre - centre / scale],
                       [0.0, 0.0, 1.0]])
    return (shrink @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


def _odd(value: float) -> int:
    size = max(1, int(round(value)))
    return size + 1 - size % 2


def sharpen(image: np.ndarray, mode: str, amount: int | float, kernel_size: int | None = None) -> np.ndarray:
    """Unsharp-mask (amount > 0) or blur (amount < 0) an image.

    image: (H, W, C) float32 [0, 1]. mode: none, box or gaussian, the blur the unsharp mask uses.
    amount −100..100: positive gives image + (amount/100)·(image − blurred); negative blends towards
    the blurred image by |amount|/100. kernel_size defaults to the image side / 32 (at least 3),
    made odd, so the effect scales with the face resolution. Returns (H, W, C) float32 in [0, 1].
    """
    if mode not in SHARPEN_MODES:
        raise ValueError(f"unknown sharpen mode {mode!r}: choose one of {', '.join(SHARPEN_MODES)}")
    image = _as_image("image", image, channels=None)
    if mode == "none" or amount == 0:
        return image.copy()
    size = _odd(kernel_size if kernel_size is not None else max(3, min(image.shape[:2]) // 32))
    if mode == "box":
        blurred = cv2.blur(image, (size, size), borderType=cv2.BORDER_REFLECT)
    else:
        blurred = cv2.GaussianBlur(image, (size, size), 0, borderType=cv2.BORDER_REFLECT)
    blurred = blurred.reshape(image.shape)
    strength = float(amount) / 100.0
    if strength > 0:
        result = image + strength * (image - blurred)
    else:
        result = image + (-strength) * (blurred - image)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def _motion_kernel(length: int, direction: np.ndarray) -> np.ndarray:
    """A normalised line of `length` taps through the centre of an odd square kernel."""
    size = length + 1 - length % 2
    kernel = np.zeros((size, size), dtype=np.float64)
    centre = (size - 1) / 2.0
    for t in np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, length):
        x, y = centre + t * direction[0], centre + t * direction[1]
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        # Bilinear splat: diagonal lines stay as long and as centred as straight ones.
        for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                               (1, 1, fx * fy)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                kernel[y0 + dy, x0 + dx] += weight
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(image: np.ndarray, mask: np.ndarray, vector_xy: tuple[float, float], power: float) -> np.ndarray:
    """Blur an image along a motion vector, inside a mask only.

    image: (H, W, C) float32 [0, 1]; mask: (H, W, 1) float32 [0, 1] in the same space.
    vector_xy: the motion (x, y) in the image's pixels; power: a factor (the merge setting / 100).
    The kernel is a line of clip(int(power·|v|) + 1, 2, 50) taps along v; the result is
    image + (blurred − image)·mask, so pixels where the mask is 0 keep their exact value. A zero
    vector has no direction and returns a copy. Returns (H, W, C) float32.
    """
    image = _as_image("image", image, channels=None)
    mask = _as_mask("mask", mask)
    if mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape}")
    vector = np.asarray(vector_xy, dtype=np.float64).reshape(2)
    norm = float(np.hypot(*vector))
    if not math.isfinite(norm) or norm == 0.0:
        return image.copy()
    length = int(np.clip(int(power * norm) + 1, _MOTION_KERNEL_MIN, _MOTION_KERNEL_MAX))
    kernel = _motion_kernel(length, vector / norm)
    blurred = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT).reshape(image.shape)
    return (image + (blurred - image) * mask).astype(np.float32)


def histogram_match(source: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                    threshold: int = 255) -> np.ndarray:
    """Match each channel's histogram of `source` to `target`'s.

    source, target: (R, R, C) float32 [0, 1] in the same aligned-face space. mask: (R, R, 1) float32
    [0, 1] or None; pixels with mask > 0.5 give both histograms (None: every pixel). Each source
    value is placed at its quantile q among the selected source values and replaced by the target's
    value at quantile q·threshold/255, so threshold 255 is a plain match and lower values pull the
    brightest source values down to lower target quantiles. The mapping recolours every source pixel.
    Returns (R, R, C) float32 in [0, 1].
    """
    source = _as_image("source", source, channels=None)
    target = _as_image("target", target, channels=source.shape[2])
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be in 0..255, got {threshold}")
    if mask is None:
        source_select = np.ones(source.shape[:2], dtype=bool)
        target_select = np.ones(target.shape[:2], dtype=bool)
    else:
        mask = _as_mask("mask", mask)
        if mask.shape[:2] != source.shape[:2] or target.shape[:2] != source.shape[:2]:
            raise ValueError(f"a mask needs source, target and mask of one size, got {source.shape}, "
                             f"{target.shape}, {mask.shape}")
        source_select = target_select = mask[..., 0] > 0.5
    if source_select.sum() < 2:
        raise ValueError("the mask selects fewer than 2 pixels; histograms need more")
    levels = np.linspace(0.0, 1.0, 256)
    # np.interp needs strictly increasing knots; flat stretches (ties) get a negligible ramp.
    ramp = np.arange(levels.size) * 1e-9
    result = np.empty_like(source)
    for channel in range(source.shape[2]):
        values = source[..., channel].astype(np.float64)
        source_quantiles = np.quantile(values[source_select], levels) + ramp
        target_quantiles = np.quantile(target[..., channel][target_select].astype(np.float64), levels)
        rank = np.interp(values, source_quantiles, levels) * (threshold / 255.0)
        result[..., channel] = np.interp(rank, levels, target_quantiles)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def _statistics_mask(mask: np.ndarray) -> np.ndarray | None:
    """The mask rescaled to a peak of 1, so its > 0.5 part is the face even after heavy feathering.

    None when too few pixels remain for colour statistics.
    """
    peak = float(mask.max())
    if peak <= _MASK_FLOOR:
        return None
    relative = mask / peak
    if int((relative > 0.5).sum()) < _MIN_STATISTIC_PIXELS:
        return None
    return relative


def _overlay(frame: np.ndarray, warped: np.ndarray, frame_mask: np.ndarray) -> np.ndarray:
    return frame * (1.0 - frame_mask) + warped * frame_mask


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _seamless_clone(frame: np.ndarray, warped: np.ndarray, frame_mask: np.ndarray) -> np.ndarray | None:
    """cv2.seamlessClone (NORMAL_CLONE) of the warped face into the frame; None when it cannot run.

    The mask is binarised at the first of 0.5, 0.4, ..., 0.1 that selects a pixel. None (the caller
    then overlays) when no threshold selects anything or the binary mask has no interior pixel.
    Frame, face and mask are padded by a few replicated (mask: zero) pixels first, because OpenCV
    can throw when the mask's bounding box reaches the image border; the padding lets faces cut by
    the frame edge clone too, instead of dropping to overlay.
    """
    binary = None
    for threshold in _SEAMLESS_THRESHOLDS:
        candidate = frame_mask[..., 0] > threshold
        if candidate.any():
            binary = candidate
            break
    # OpenCV also throws on masks with no interior (nothing survives a 3×3 erosion, e.g. a line).
    if binary is None or not cv2.erode(binary.astype(np.uint8), np.ones((3, 3), np.uint8)).any():
        return None
    pad = _SEAMLESS_PAD
    padded_frame = cv2.copyMakeBorder(_to_uint8(frame), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    padded_face = cv2.copyMakeBorder(_to_uint8(warped), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    padded_mask = cv2.copyMakeBorder(binary.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                     value=0)
    x, y, width, height = cv2.boundingRect(padded_mask)
    # The box centre puts the cloned patch back exactly where the mask is (checked in the tests).
    centre = (x + width // 2, y + height // 2)
    cloned = cv2.seamlessClone(padded_face, padded_frame, padded_mask, centre, cv2.NORMAL_CLONE)
    return cloned[pad:-pad, pad:-pad].astype(np.float32) / 255.0


def _recolour_in_frame(merged: np.ndarray, frame: np.ndarray, frame_mask: np.ndarray, dst_face: np.ndarray,
                       dst_mask: np.ndarray, mode: str, rng: np.random.Generator | None) -> np.ndarray:
    """Colour-transfer the composited face region of `merged` towards the dst face, in frame space.

    Doing it on the frame crop (rather than cutting the face out and warping it back) avoids a
    second resampling of the face.
    """
    rows, columns = np.nonzero(frame_mask[..., 0] > _MASK_FLOOR)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    region_mask = frame_mask[top:bottom, left:right]
    statistics = _statistics_mask(region_mask)
    if statistics is None:
        return merged
    region = merged[top:bottom, left:right]
    recoloured = color_transfer(mode, region, dst_face, statistics, dst_mask, rng=rng)
    result = merged.copy()
    result[top:bottom, left:right] = _overlay(frame[top:bottom, left:right], recoloured, region_mask)
    return result


def blend_face(
    frame: np.ndarray,
    predicted_face: np.ndarray,
    frame_to_face: np.ndarray,
    mask_face: np.ndarray,
    settings: MergeSettings,
    dst_face: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    motion_vector: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite one predicted face into a frame.

    frame: (H, W, 3) float32 BGR [0, 1]. predicted_face: (R, R, 3) float32 BGR [0, 1] in aligned-face
    space. frame_to_face: (2, 3) frame pixels -> aligned-face pixels (`curate.faces.align.face_transform`).
    mask_face: (R, R, 1) float32 [0, 1], already through `process_mask`. dst_face: (R, R, 3) the
    aligned dst crop, needed for colour transfer and the hist-match modes. rng: for the random colour
    transfers (idt, sot). motion_vector: the face's motion (x, y) in frame pixels per frame, used when
    settings.motion_blur > 0; it is turned into face space with the matrix's linear part.

    Order: colour transfer of the face (face space, statistics inside the mask); hist-match modes
    then match histograms to the dst face; sharpen and motion blur; the face and mask are warped into
    the frame (scaled by settings.face_scale); then the mode composites:
    - original: the frame, unchanged, with a zero mask;
    - overlay, hist-match: frame·(1−m) + face·m;
    - seamless, seamless-hist-match: Poisson cloning of the warped face, then blended with m; colour
      transfer runs after compositing here, on the composited face region (SAEHD.md §6). A mask
      with no pixel above 0.1 or no interior (thinner than 3 px) falls back to overlay, where
      cv2.seamlessClone would throw; faces cut by the frame edge still clone (see `_seamless_clone`);
    - raw-rgb: the warped predicted face over its whole square, no mask, no colour work or sharpening;
    - raw-predict: the predicted face itself, (R, R, 3), is returned as the "frame", with a mask of ones
      (R, R, 1); nothing is warped.
    A mask that is empty (peak below 1/255) leaves the frame unchanged.
    Returns (merged (H, W, 3) float32 [0, 1], frame mask (H, W, 1) float32 [0, 1]).
    """
    if settings.mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {settings.mode!r}")
    frame = _as_image("frame", frame)
    face = np.clip(_as_image("predicted_face", predicted_face), 0.0, 1.0)
    resolution = face.shape[0]
    if face.shape[1] != resolution:
        raise ValueError(f"predicted_face must be square, got {face.shape}")
    mask = _as_mask("mask_face", mask_face)
    if mask.shape[:2] != face.shape[:2]:
        raise ValueError(f"mask_face {mask.shape} does not match predicted_face {face.shape}")
    mode = settings.mode
    if mode == "raw-predict":
        return face.copy(), np.ones((resolution, resolution, 1), dtype=np.float32)
    if mode == "original":
        return frame.copy(), np.zeros((*frame.shape[:2], 1), dtype=np.float32)
    matrix = scale_face_matrix(frame_to_face, resolution, settings.face_scale)
    if mode == "raw-rgb":
        square = warp_to_frame(np.ones_like(mask), matrix, frame.shape)
        warped = np.clip(warp_to_frame(face, matrix, frame.shape, cv2.INTER_CUBIC), 0.0, 1.0)
        return np.clip(_overlay(frame, warped, square), 0.0, 1.0).astype(np.float32), square

    statistics = _statistics_mask(mask)
    if statistics is None:
        return frame.copy(), np.zeros((*frame.shape[:2], 1), dtype=np.float32)
    seamless = mode in ("seamless", "seamless-hist-match")
    needs_dst = settings.color_transfer != "none" or mode in ("hist-match", "seamless-hist-match")
    if needs_dst:
        if dst_face is None:
            raise ValueError(f"mode {mode} with colour transfer {settings.color_transfer} needs dst_face")
        dst_face = _as_image("dst_face", dst_face)
    if settings.color_transfer != "none" and not seamless:
        face = color_transfer(settings.color_transfer, face, dst_face, statistics, statistics, rng=rng)
    if mode in ("hist-match", "seamless-hist-match"):
        face = histogram_match(face, dst_face, statistics if settings.masked_hist_match else None,
                               settings.hist_match_threshold)
    if settings.sharpen_mode != "none" and settings.sharpen_amount != 0:
        face = sharpen(face, settings.sharpen_mode, settings.sharpen_amount)
    if settings.motion_blur > 0 and motion_vector is not None:
        face_vector = _as_matrix(frame_to_face)[:, :2] @ np.asarray(motion_vector, dtype=np.float64)
        face = motion_blur(face, mask, (float(face_vector[0]), float(face_vector[1])),
                           settings.motion_blur / 100.0)

    frame_mask = np.clip(warp_to_frame(mask, matrix, frame.shape), 0.0, 1.0)
    warped = np.clip(warp_to_frame(face, matrix, frame.shape, cv2.INTER_CUBIC), 0.0, 1.0)
    merged = _overlay(frame, warped, frame_mask)
    if seamless:
        cloned = _seamless_clone(frame, warped, frame_mask)
        if cloned is not None:
            merged = _overlay(frame, cloned, frame_mask)
            if settings.color_transfer != "none":
                merged = _recolour_in_frame(merged, frame, frame_mask, dst_face, statistics,
                                            settings.color_transfer, rng)
    return np.clip(merged, 0.0, 1.0).astype(np.float32), frame_mask.astype(np.float32)


def blend_faces(
    frame: np.ndarray,
    faces: list[FaceToBlend],
    settings: MergeSettings,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite several faces into one frame, in list order: each later face goes over the result so far.

    frame: (H, W, 3) float32 BGR [0, 1]. The frame mask is the alpha "over" union of the face masks,
    m = m_so_far + m_face·(1 − m_so_far). No faces: the frame unchanged with a zero mask.
    raw-predict has no frame to composite into: it returns the predicted faces side by side,
    (R, R·n, 3), with a mask of ones.
    Returns (merged (H, W, 3) float32, mask (H, W, 1) float32).
    """
    frame = _as_image("frame", frame)
    if not faces:
        return frame.copy(), np.zeros((*frame.shape[:2], 1), dtype=np.float32)
    if settings.mode == "raw-predict":
        predictions = [np.clip(_as_image("predicted_face", face.predicted_face), 0.0, 1.0) for face in faces]
        joined = np.concatenate(predictions, axis=1)
        return joined, np.ones((*joined.shape[:2], 1), dtype=np.float32)
    merged = frame
    total_mask = np.zeros((*frame.shape[:2], 1), dtype=np.float32)
    for face in faces:
        merged, face_mask = blend_face(merged, face.predicted_face, face.frame_to_face, face.mask_face, settings,
                                       face.dst_face, rng=rng, motion_vector=face.motion_vector)
        total_mask = total_mask + face_mask * (1.0 - total_mask)
    return merged, total_mask
