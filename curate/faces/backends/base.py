"""The FaceAnalyzer interface every backend implements: locate faces per image, embed in batches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from curate.faces.align import arcface_crop
from curate.records import DetectedFace, LocatedFace


@dataclass(frozen=True)
class ModelInfo:
    """One model file a backend runs, for the run row and the README."""

    role: str  # detector, landmarks68, embedder, ...
    name: str
    licence: str
    runtime: str  # onnxruntime, opencv, dlib


class FaceAnalyzer(ABC):
    """Two stages, so a scan can spread the per-image work over threads and batch the embedder.

    `locate` must be safe to call from several threads at once; `embed` is called from one.
    """

    name: str
    embedding_dim: int

    @property
    @abstractmethod
    def providers(self) -> list[str]:
        """Execution providers actually in use, e.g. ['CPUExecutionProvider']."""

    @property
    @abstractmethod
    def models(self) -> list[ModelInfo]: ...

    @abstractmethod
    def locate(self, image_bgr: np.ndarray) -> list[LocatedFace]:
        """Boxes and landmarks of every face in one uint8 H×W×3 BGR image, best score first."""

    @abstractmethod
    def embed(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """(N, embedding_dim) float32 L2-normalised embeddings of N 112×112 ArcFace crops."""

    def analyze(self, images_bgr: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """Locate and embed every face; one list per image (empty where none is found)."""
        located = [self.locate(image) for image in images_bgr]
        crops = [arcface_crop(image, face.landmarks5) for image, faces in zip(images_bgr, located)
                 for face in faces]
        embeddings = iter(self.embed(crops))
        return [[DetectedFace.with_embedding(face, next(embeddings)) for face in faces]
                for faces in located]
