"""Read a curated faceset (DuckDB + aligned crops) into training arrays at the model's face type and size."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from curate.faces.align import face_transform, invert_affine, transform_points
from curate.errors import FacesmithError
from curate.faceset import FacesetReader

log = logging.getLogger(__name__)


class FacesetDataError(FacesmithError):
    """A faceset cannot feed training: missing, empty, or its crops are unreadable."""


@dataclass(frozen=True)
class CuratedFace:
    """One face row of a faceset, as training needs it."""

    face_id: str
    crop_path: Path  # absolute path of the stored aligned crop
    crop_resolution: int
    crop_to_source: np.ndarray  # (2, 3) float64, stored-crop px -> source px
    landmarks68: np.ndarray  # (68, 2) float64, source px
    yaw: float  # degrees, NaN where unknown


def read_curated_faces(database: Path, use_selection: bool = True, role: str = "src") -> list[CuratedFace]:
    """The faces of the faceset at `database` that train, ordered by face_id: the faceset
    reader's rule (curate.faceset.FacesetReader), read as `role`. A src side trains on the main
    identity's faces that are no dropped duplicate, have no bad quality verdict and, with
    `use_selection` and a selection made, were selected; a dst side trains on every face. A
    person's decisions win over both.
    """
    database = Path(database)
    with FacesetReader(database) as reader:
        faces = reader.training_faces(use_selection, as_role=role)
    return [CuratedFace(face_id=face.face_id, crop_path=face.crop_path, crop_resolution=face.crop_resolution,
                        crop_to_source=invert_affine(face.image_to_face), landmarks68=face.landmarks68,
                        yaw=face.yaw)
            for face in faces]


def holdout_ids(face_ids: list[str], share: float, seed: int) -> set[str]:
    """The face ids held out for validation: a fixed share chosen by a seeded hash of each id.

    Hashing (rather than a shuffled slice) keeps a face's split stable when faces are added later.
    At least one face is held out when the share is positive and there are 10 faces or more.
    """
    if share <= 0 or not face_ids:
        return set()
    ranked = sorted(face_ids, key=lambda face_id: hashlib.sha256(f"{seed}:{face_id}".encode()).digest())
    count = int(round(len(face_ids) * share))
    if count == 0 and len(face_ids) >= 10:
        count = 1
    return set(ranked[:min(count, len(face_ids) - 1)])


@dataclass(frozen=True, eq=False)
class FaceArrays:
    """Faces cut to the model's face type and resolution, in memory for the sampler."""

    face_ids: list[str]
    images: np.ndarray  # (N, R, R, 3) uint8 BGR
    landmarks: np.ndarray  # (N, 68, 2) float32, training-crop px
    yaw: np.ndarray  # (N,) float32 degrees, NaN where unknown

    def __len__(self) -> int:
        return len(self.face_ids)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])


def crop_to_training(face: CuratedFace, face_type: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The matrix from the stored crop to the training crop, and the landmarks in training px.

    The training face type may differ from the curated one: the new square is computed from the
    source landmarks, then reached from the stored crop by way of the source frame.
    """
    source_to_training = face_transform(face.landmarks68, face_type, resolution,
                                        0.0 if np.isnan(face.yaw) else face.yaw)
    crop_to_training_matrix = source_to_training @ np.vstack([face.crop_to_source, [0, 0, 1]])
    return crop_to_training_matrix, transform_points(source_to_training, face.landmarks68)


def _load_one(face: CuratedFace, face_type: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.fromfile(face.crop_path, dtype=np.uint8) if face.crop_path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise FacesetDataError(f"cannot read the aligned crop {face.crop_path} of face {face.face_id}: "
                               "re-run 'facesmith curate scan' on its source folder")
    matrix, landmarks = crop_to_training(face, face_type, resolution)
    interpolation = cv2.INTER_AREA if matrix[0, 0] ** 2 + matrix[0, 1] ** 2 < 1 else cv2.INTER_CUBIC
    crop = cv2.warpAffine(image, matrix, (resolution, resolution), flags=interpolation,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, landmarks


def load_face_arrays(faces: list[CuratedFace], face_type: str, resolution: int,
                     workers: int = 2) -> FaceArrays:
    """Decode and re-cut every face (threads: OpenCV releases the GIL while decoding)."""
    if not faces:
        raise FacesetDataError("the faceset has no usable faces to train on")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        loaded = list(pool.map(lambda face: _load_one(face, face_type, resolution), faces))
    return FaceArrays(
        face_ids=[face.face_id for face in faces],
        images=np.stack([crop for crop, _ in loaded]),
        landmarks=np.stack([landmarks for _, landmarks in loaded]).astype(np.float32),
        yaw=np.array([face.yaw for face in faces], dtype=np.float32),
    )
