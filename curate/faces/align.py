"""Similarity transforms and aligned crops: the ArcFace 112 crop for embedders and DFL face types."""

from __future__ import annotations

import cv2
import numpy as np

# Canonical 5-point positions of the 112×112 ArcFace crop (subject's right eye, left eye, nose
# tip, right and left mouth corner, in image-left-first order). Both SFace and insightface's
# recognition models were trained on crops made with these positions.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping source -> target.

    source, target: (N, 2) point sets in their own coordinates, N >= 2.
    Returns the 2×3 float64 matrix M with target ≈ M @ [x, y, 1] (Umeyama's closed form,
    reflection excluded).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"point sets must both be (N, 2), got {source.shape} and {target.shape}")
    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    source_centred = source - source_mean
    target_centred = target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    variance = (source_centred**2).sum() / len(source)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def arcface_crop(image_bgr: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """The size×size crop that ArcFace-style embedders expect, from 5 source-pixel landmarks."""
    matrix = similarity_transform(landmarks5, ARCFACE_112 * (size / 112.0))
    return cv2.warpAffine(image_bgr, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


FACE_TYPES: tuple[str, ...] = ("half", "mid_full", "full", "whole_face", "head")

# Padding of the unit square around the template, per face type (see ../shared/SAEHD.md §4).
_PADDING = {"half": 0.0, "mid_full": 0.0675, "full": 0.2109375, "whole_face": 0.40, "head": 0.70}

# The 33 landmarks (eyebrows, nose, eyes, one mouth corner) that fix the face's frame: they move
# little with expression, unlike the jaw and the lips.
TEMPLATE_INDICES = np.array(list(range(17, 49)) + [54])


def face_transform(
    landmarks68: np.ndarray,
    face_type: str = "whole_face",
    resolution: int = 256,
    yaw_degrees: float = 0.0,
) -> np.ndarray:
    """The 2×3 matrix mapping source pixels to a `resolution`² aligned crop of `face_type`.

    landmarks68: (68, 2) source-pixel landmarks in the iBUG layout.
    A similarity fit of 33 stable landmarks to the mean-face template defines a unit square in
    the source image; the square is padded per face type (and, for whole_face and head, moved
    towards the forehead) and mapped onto the output square.
    """
    from curate.faces.mean_face import MEAN_FACE_33

    if face_type not in _PADDING:
        raise ValueError(f"unknown face type {face_type!r}: choose one of {', '.join(FACE_TYPES)}")
    landmarks68 = np.asarray(landmarks68, dtype=np.float64)
    to_unit = similarity_transform(landmarks68[TEMPLATE_INDICES], MEAN_FACE_33)
    from_unit = invert_affine(to_unit)
    top_left, top_right, bottom_right, bottom_left, centre = transform_points(
        from_unit, np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]])
    )
    side = float(np.linalg.norm(top_left - bottom_left))
    up = (top_left - bottom_left) / side
    right = (top_right - top_left) / float(np.linalg.norm(top_right - top_left))
    if face_type == "whole_face":
        centre = centre + up * side * 0.07
    elif face_type == "head":
        yaw = np.radians(yaw_degrees)
        centre = centre + up * side * 0.5 + right * side * 0.5 * yaw * abs(np.tanh(2 * yaw))
    # Half the padded square's diagonal; the unit square's own half-diagonal is side·√2/2.
    diagonal = float(np.linalg.norm(top_left - bottom_right))
    half_diagonal = diagonal * (_PADDING[face_type] * np.sqrt(2.0) + 0.5)
    down_right = (bottom_right - top_left) / diagonal
    up_right = (top_right - bottom_left) / diagonal
    corners = np.array(
        [centre - down_right * half_diagonal, centre + up_right * half_diagonal,
         centre + down_right * half_diagonal],
        dtype=np.float32,
    )
    output = np.array([[0, 0], [resolution, 0], [resolution, resolution]], dtype=np.float32)
    return cv2.getAffineTransform(corners, output).astype(np.float64)


def aligned_face_size(matrix: np.ndarray, resolution: int) -> float:
    """Side, in source pixels, of the square that a source->aligned matrix maps to the crop."""
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))
    return resolution / scale


def warp_face(image_bgr: np.ndarray, matrix: np.ndarray, resolution: int) -> np.ndarray:
    """Cut the aligned resolution² crop that the source->aligned `matrix` describes.

    Faces are usually shrunk (a 900 px face into 256 px). A plain warp would alias, and a
    Lanczos warp costs ~5 ms; instead the face's region is first reduced with area averaging to
    about the output scale, then warped with bicubic interpolation.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.8:
        corners = transform_points(
            invert_affine(matrix), np.array([[0, 0], [resolution, 0], [resolution, resolution], [0, resolution]])
        )
        height, width = image_bgr.shape[:2]
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            shrink = scale / 0.8
            region = image_bgr[y0:y1, x0:x1]
            size = (max(1, round(region.shape[1] * shrink)), max(1, round(region.shape[0] * shrink)))
            reduced = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            # source px -> region px -> reduced px, then on through the original matrix
            factors = np.array([size[0] / region.shape[1], size[1] / region.shape[0]])
            to_reduced = np.array([[factors[0], 0, -x0 * factors[0]], [0, factors[1], -y0 * factors[1]]])
            matrix = matrix @ np.vstack([invert_affine(to_reduced), [0, 0, 1]])
            image_bgr = reduced
    return cv2.warpAffine(
        image_bgr, matrix, (resolution, resolution), flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )


def hull_mask(landmarks: np.ndarray, resolution: int) -> np.ndarray:
    """float32 resolution² mask, 1 inside the convex hull of (68, 2) aligned-pixel landmarks.

    The brows are raised by half their distance to the upper eyelids so the forehead band that
    blur and lighting checks care about is inside the mask.
    """
    points = np.asarray(landmarks, dtype=np.float64).copy()
    lids = np.concatenate([points[37:39], points[43:45]]).mean(axis=0)
    points[17:27] += (points[17:27] - lids) * 0.5
    mask = np.zeros((resolution, resolution), dtype=np.float32)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1.0)
    return mask
