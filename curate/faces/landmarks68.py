"""Facts about the iBUG 68-point layout: named index ranges and the left-right mirror order."""

from __future__ import annotations

import numpy as np

JAW = range(0, 17)
BROWS = range(17, 27)
NOSE = range(27, 36)
RIGHT_EYE = range(36, 42)  # the subject's right eye, on the image's left
LEFT_EYE = range(42, 48)
MOUTH = range(48, 68)
INNER_MOUTH = range(60, 68)


def _mirror_order() -> np.ndarray:
    order = list(range(68))
    pairs = [
        *zip(range(0, 17), range(16, -1, -1)),
        *zip(range(17, 22), range(26, 21, -1)),
        *zip(range(31, 36), range(35, 30, -1)),
        *zip((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46)),
        *zip(range(48, 55), range(54, 47, -1)),
        *zip(range(55, 60), range(59, 54, -1)),
        *zip(range(60, 65), range(64, 59, -1)),
        *zip((65, 66, 67), (67, 66, 65)),
    ]
    for a, b in pairs:
        order[a], order[b] = b, a
    return np.array(order)


# landmarks_of_mirrored_image = flip_x(landmarks)[MIRROR_ORDER]
MIRROR_ORDER = _mirror_order()


def mirror(landmarks: np.ndarray, width: int) -> np.ndarray:
    """(68, 2) landmarks of the horizontally flipped image of the given width."""
    flipped = np.asarray(landmarks, dtype=np.float64).copy()
    flipped[:, 0] = (width - 1) - flipped[:, 0]
    return flipped[MIRROR_ORDER]
