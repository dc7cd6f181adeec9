"""Training masks from 68 aligned-face landmarks: full face, eyes, mouth and the eyes+mouth priority mask."""

from __future__ import annotations

import cv2
import numpy as np

from curate.faces.align import hull_mask
from curate.faces.landmarks68 import INNER_MOUTH, LEFT_EYE, RIGHT_EYE


def _check_landmarks(landmarks68: np.ndarray, size: int) -> np.ndarray:
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks contain NaN or infinite values")
    if size < 1:
        raise ValueError(f"mask size must be >= 1, got {size}")
    return points


def face_mask(landmarks68: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 1) float32 binary {0, 1} full-face mask from (68, 2) aligned-pixel landmarks.

    The convex hull of all 68 points with the brows pushed up by half their distance to the upper
    eyelids (curate.faces.align.hull_mask). DFL fills the union of 8 landmark-group hulls instead; the
    face outline is convex, so the two differ only in slivers along the jaw-to-brow edge.
    """
    points = _check_landmarks(landmarks68, size)
    return hull_mask(points, size)[..., None]


def _feature_mask(points: np.ndarray, groups: tuple[range, ...], size: int) -> np.ndarray:
    """Filled hulls of landmark groups, grown by an h//32 ellipse and blurred with an h//16 kernel."""
    mask = np.zeros((size, size), dtype=np.float32)
    for group in groups:
        hull = cv2.convexHull(np.round(points[list(group)]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0)
    dilation = size // 32
    if dilation > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dilation, dilation)))
    blur = size // 16
    blur += 1 - blur % 2  # made odd; sizes below 16 get a 1×1 kernel, i.e. no blur
    if blur > 1:
        mask = cv2.GaussianBlur(mask, (blur, blur), 0)
    return np.clip(mask, 0.0, 1.0)[..., None]


def eyes_mask(landmarks68: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 1) float32 [0, 1]: hulls of both eyes (36–41, 42–47), dilated and blurred."""
    points = _check_landmarks(landmarks68, size)
    return _feature_mask(points, (RIGHT_EYE, LEFT_EYE), size)


def mouth_mask(landmarks68: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 1) float32 [0, 1]: hull of the inner lips (60–67), dilated and blurred."""
    points = _check_landmarks(landmarks68, size)
    return _feature_mask(points, (INNER_MOUTH,), size)


def normalise_peak(mask: np.ndarray) -> np.ndarray:
    """mask / max(mask) as float32 when the maximum is positive, else an all-zero copy.

    SAEHD re-normalises the eyes+mouth mask after the sample's affine warp, which can shave the
    peak off; any shape.
    """
    mask = np.asarray(mask, dtype=np.float32)
    peak = float(mask.max()) if mask.size else 0.0
    return mask / peak if peak > 0.0 else np.zeros_like(mask)


def eyes_mouth_mask(landmarks68: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 1) float32 [0, 1] eyes+mouth priority mask with a maximum of 1 (or all zero).

    clip(eyes + mouth, 0, 1), cut to the binarised full-face mask, then scaled to peak at 1.
    """
    points = _check_landmarks(landmarks68, size)
    features = np.clip(eyes_mask(points, size) + mouth_mask(points, size), 0.0, 1.0)
    inside_face = (face_mask(points, size) > 0.5).astype(np.float32)
    return normalise_peak(features * inside_face)
