"""Helpers for the curate tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def load_bgr(path: Path) -> np.ndarray:
    """Any sample (JPEG, PNG, PPM, greyscale) as uint8 H×W×3 BGR."""
    return cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)
