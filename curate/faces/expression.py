"""Expression features from 68 landmarks: how open the eyes and mouth are, how wide the mouth, how raised the brows.

Each feature is a ratio of landmark distances inside the face, so it does not depend on the face's
size, position or in-plane rotation, and moves little with a small change of yaw or pitch. They
answer two questions: are two faces the same expression (near duplicates must be), and which
expression does a face show (the selection spreads its picks over them).

Values on the sample photos: open eyes 0.18–0.45 (a blink takes both below 0.15); a closed mouth
0.0–0.1, a talking or laughing one 0.15–0.45; mouth width 0.57–0.68 at rest, 0.74–0.89 in a smile;
brows 0.16–0.35.
"""

from __future__ import annotations

import numpy as np

# Feature order of expression_features(); each column's tolerance below is the change that counts
# as a new expression. Between re-encoded, resized and cropped copies of one photo, faces of 350 px
# and more move by at most 0.05 / 0.045 / 0.03 / 0.015; 140–180 px faces up to twice that (the
# tolerances widen for them, see expression_delta). A blink moves an eye by 0.15 or more, speech
# opens the mouth by 0.1–0.4, a smile widens it by 0.05–0.15.
FEATURES = ("eye_left", "eye_right", "mouth_open", "mouth_width", "brows")
TOLERANCES = np.array([0.07, 0.07, 0.07, 0.05, 0.05])
TOLERANCES.setflags(write=False)
# Landmark noise grows as a face gets smaller: below this many source pixels the tolerances widen
# in proportion, up to MAX_WIDENING times.
FULL_PRECISION_SIZE = 256.0
MAX_WIDENING = 2.0

EXPRESSION_BINS = ("neutral", "mouth-open", "eyes-closed", "smile", "unknown")
EYES_CLOSED_BELOW = 0.15
MOUTH_OPEN_ABOVE = 0.15
SMILE_WIDTH_ABOVE = 0.72


def _distance(points: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)


def expression_features(landmarks68: np.ndarray) -> np.ndarray:
    """(..., 5) float64 features (FEATURES order) of (..., 68, 2) iBUG landmarks; NaN where the
    landmarks are degenerate (eyes or mouth collapsed to a point).

    eye_*: mean lid gap over eye width (image-left eye, then image-right);
    mouth_open: inner-lip gap over inner mouth width; mouth_width: mouth-corner distance over the
    outer eye-corner distance; brows: brow-to-upper-lid distance over the outer eye-corner distance.
    """
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must be (..., 68, 2), got {points.shape}")
    eye_span = _distance(points, 36, 45)
    with np.errstate(divide="ignore", invalid="ignore"):
        eye_left = (_distance(points, 37, 41) + _distance(points, 38, 40)) / (2 * _distance(points, 36, 39))
        eye_right = (_distance(points, 43, 47) + _distance(points, 44, 46)) / (2 * _distance(points, 42, 45))
        mouth_open = _distance(points, 62, 66) / _distance(points, 60, 64)
        mouth_width = _distance(points, 48, 54) / eye_span
        brows = (_distance(points, 19, 37) + _distance(points, 24, 44)) / (2 * eye_span)
    features = np.stack([eye_left, eye_right, mouth_open, mouth_width, brows], axis=-1)
    return np.where(np.isfinite(features), features, np.nan)


def difference_or_unknown(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """|first − second| where both are known, 0 where neither is (nothing tells them apart), inf
    where only one is (they cannot be called the same)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    one_missing = np.isnan(first) != np.isnan(second)
    return np.where(one_missing, np.inf, np.nan_to_num(np.abs(first - second), nan=0.0))


def widening(face_size: np.ndarray) -> np.ndarray:
    """How much the tolerances widen for faces of `face_size` source pixels (1 to MAX_WIDENING)."""
    size = np.asarray(face_size, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = FULL_PRECISION_SIZE / size
    return np.clip(np.nan_to_num(factor, nan=MAX_WIDENING, posinf=MAX_WIDENING), 1.0, MAX_WIDENING)


def expression_delta(first: np.ndarray, second: np.ndarray, widen: np.ndarray | float = 1.0) -> np.ndarray:
    """How far apart two faces' expressions are, in units of the tolerances (times `widen`, one
    factor per pair, see widening()): the largest |difference| / tolerance over the features
    (≤ 1: the same expression). Broadcasts over leading axes of (..., 5) feature arrays. A
    feature unknown for one face counts as infinitely far; unknown for both, as no difference
    (nothing tells them apart)."""
    scale = TOLERANCES * np.asarray(widen, np.float64)[..., None]
    return (difference_or_unknown(first, second) / scale).max(axis=-1)


def expression_bin(features: np.ndarray) -> str:
    """One of EXPRESSION_BINS for one face's (5,) features: eyes closed wins over a smile (a wide
    mouth, open or not), which wins over an open mouth (talking)."""
    eye_left, eye_right, mouth_open, mouth_width, _ = (float(v) for v in features)
    if any(np.isnan(v) for v in (eye_left, eye_right, mouth_open, mouth_width)):
        return "unknown"
    if max(eye_left, eye_right) < EYES_CLOSED_BELOW:
        return "eyes-closed"
    if mouth_width > SMILE_WIDTH_ABOVE:
        return "smile"
    if mouth_open > MOUTH_OPEN_ABOVE:
        return "mouth-open"
    return "neutral"
