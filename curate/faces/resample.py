"""Shrinking images fast without aliasing: area averaging by whole factors, bilinear for the rest."""

from __future__ import annotations

import cv2
import numpy as np


def reduce_image(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """`image` (H, W[, C]) shrunk to `size` (width, height), and the (x, y) factors output/input.

    OpenCV's area averaging costs ~4 ms on a 1080p photo at a fractional ratio but ~0.5 ms at a
    whole one, where it is a plain box filter. So the image is box-averaged by the largest whole
    factor k that does not pass `size`, after dropping the last (< k) rows and columns so the
    factor is exact, and bilinear interpolation does the remaining reduction, which is under 2×
    and so samples every source pixel. The factors account for the dropped border, so a point p
    of the input lands at p · factors in the output.
    """
    height, width = image.shape[:2]
    out_width, out_height = size
    if out_width > width or out_height > height or out_width < 1 or out_height < 1:
        raise ValueError(f"cannot reduce {width}x{height} to {out_width}x{out_height}")
    whole = int(min(width // out_width, height // out_height))
    reduced, used_width, used_height = image, width, height
    if whole >= 2:
        used_width, used_height = width // whole * whole, height // whole * whole
        reduced = cv2.resize(image[:used_height, :used_width], (used_width // whole, used_height // whole),
                             interpolation=cv2.INTER_AREA)
    if reduced.shape[1] != out_width or reduced.shape[0] != out_height:
        reduced = cv2.resize(reduced, (out_width, out_height), interpolation=cv2.INTER_LINEAR)
    return reduced, (out_width / used_width, out_height / used_height)
