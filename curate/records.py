"""Typed records that flow through a scan and match the DuckDB columns one to one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ImageStatus = Literal["ok", "rejected"]


@dataclass(frozen=True)
class LocatedFace:
    """A face a backend found in one image, all in source-image pixel coordinates."""

    bbox: np.ndarray  # (4,) float32: x1, y1, x2, y2 in source pixels
    det_score: float
    landmarks5: np.ndarray  # (5, 2) float32, source px: eye, eye, nose tip, mouth corner, mouth corner
    #                         (image-left first: subject's right eye, then left eye)
    landmarks68: np.ndarray  # (68, 2) float32, source px, iBUG 68-point layout (as DFL uses)


@dataclass(frozen=True)
class DetectedFace(LocatedFace):
    """A located face with its identity embedding."""

    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (D,) float32, L2-normalised

    @classmethod
    def with_embedding(cls, face: LocatedFace, embedding: np.ndarray) -> "DetectedFace":
        return cls(face.bbox, face.det_score, face.landmarks5, face.landmarks68, embedding)


@dataclass(frozen=True)
class ImageRecord:
    """One file under the scanned root: decoded and analysed, or rejected with a reason."""

    image_id: str
    path: str  # relative to the scanned root, '/'-separated
    content_hash: str | None  # sha256 hex of the file bytes; None when the bytes cannot be read
    bytes: int
    mtime_ns: int
    width: int | None
    height: int | None
    format: str | None
    mode: str | None  # the decoder's colour mode before conversion (e.g. 'CMYK', 'I;16', 'P')
    status: ImageStatus
    reject_reason: str | None
    face_count: int
    run_id: str

    def to_row(self) -> tuple:
        return (
            self.image_id, self.path, self.content_hash, self.bytes, self.mtime_ns, self.width,
            self.height, self.format, self.mode, self.status, self.reject_reason, self.face_count,
            self.run_id,
        )

    @classmethod
    def from_row(cls, row: tuple) -> "ImageRecord":
        """The inverse of to_row, for rows selected in the same column order."""
        return cls(*row)


@dataclass(frozen=True)
class QualityScores:
    """Raw quality measurements of one aligned face (see curate.faces.quality for each check)."""

    sharpness: float
    motion_blur: float
    brightness: float
    shadows_clipped: float
    highlights_clipped: float
    contrast: float
    lighting_lr: float
    lighting_tb: float
    color_cast: float
    phash: str  # 16 hex digits (64-bit DCT perceptual hash)


@dataclass(frozen=True)
class FaceRecord:
    """One detected face with its pose, alignment, embedding and quality scores."""

    face_id: str
    image_id: str
    face_index: int
    det_score: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in source pixels
    landmarks5: list[float]  # 10 floats, (x, y) pairs in source pixels
    landmarks68: list[float]  # 136 floats, (x, y) pairs in source pixels
    yaw: float | None  # degrees, positive when the face turns towards image right; None: no pose
    pitch: float | None  # degrees, positive when the face looks up
    roll: float | None  # degrees, positive for clockwise in-plane rotation as seen
    face_size: float  # source pixels: side of the aligned square mapped back to the source
    quality: QualityScores
    embedding: list[float]  # D floats, L2-normalised
    face_type: str
    resolution: int
    image_to_face: list[float]  # 6 floats: the 2×3 affine from source pixels to aligned pixels
    aligned_path: str  # relative to the database's folder

    def to_row(self) -> tuple:
        q = self.quality
        return (
            self.face_id, self.image_id, self.face_index, self.det_score, list(self.bbox),
            self.landmarks5, self.landmarks68, self.yaw, self.pitch, self.roll, self.face_size,
            q.sharpness, q.motion_blur, q.brightness, q.shadows_clipped, q.highlights_clipped,
            q.contrast, q.lighting_lr, q.lighting_tb, q.color_cast, q.phash, self.embedding,
            self.face_type, self.resolution, self.image_to_face, self.aligned_path,
        )

    @classmethod
    def from_row(cls, row: tuple) -> "FaceRecord":
        """The inverse of to_row, for rows selected in the same column order."""
        (face_id, image_id, face_index, det_score, bbox, landmarks5, landmarks68, yaw, pitch, roll,
         face_size, *quality, embedding, face_type, resolution, image_to_face, aligned_path) = row
        return cls(
            face_id, image_id, face_index, det_score, tuple(bbox), list(landmarks5), list(landmarks68),
            yaw, pitch, roll, face_size, QualityScores(*quality), list(embedding), face_type, resolution,
            list(image_to_face), aligned_path,
        )
