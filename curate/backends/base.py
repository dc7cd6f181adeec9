"""The FaceAnalyzer interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from curate.records import DetectedFace


@dataclass(frozen=True)
class ModelInfo:
    """One model file a backend runs, for the run row and the README."""

    role: str  # detector, landmarks68, embedder, ...
    name: str
    licence: str
    runtime: str  # onnxruntime, opencv, dlib


class FaceAnalyzer(Protocol):
    name: str
    embedding_dim: int

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use, e.g. ['CPUExecutionProvider']."""

    @property
    def models(self) -> list[ModelInfo]: ...

    def analyze(self, images_bgr: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """Detect, landmark and embed every face in each uint8 H×W×3 BGR image.

        Returns one list per input image (empty where no face is found), faces ordered by
        detection score, highest first.
        """
