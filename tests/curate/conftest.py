"""Fixtures for the curate tests: one embedded analyzer per session (its models take ~2 s to load)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def analyzer():
    from curate.backends.embedded import EmbeddedFaceAnalyzer

    return EmbeddedFaceAnalyzer(device="cpu")


def load_bgr(path: Path) -> np.ndarray:
    """Any sample (JPEG, PNG, PPM, greyscale) as uint8 H×W×3 BGR."""
    return cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)
