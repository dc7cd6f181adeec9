"""Load a scanned faceset's faces into column arrays for whole-set analysis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from curate.errors import StoreError


@dataclass(frozen=True, eq=False)
class FaceTable:
    """Every face of a faceset, one array entry per face, ordered by face_id (deterministic)."""

    face_ids: list[str]
    image_ids: list[str]
    paths: list[str]  # image path relative to the scanned root
    content_hashes: list[str]  # sha256 of the image file
    face_index: np.ndarray  # (N,) int32, index of the face within its image
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    phash: np.ndarray  # (N,) uint64 perceptual hash of the aligned crop
    yaw: np.ndarray  # (N,) float64 degrees (NaN where unknown)
    pitch: np.ndarray  # (N,) float64 degrees
    roll: np.ndarray  # (N,) float64 degrees
    sharpness: np.ndarray  # (N,) float64
    brightness: np.ndarray  # (N,) float64, 0..1
    contrast: np.ndarray  # (N,) float64
    lighting_lr: np.ndarray  # (N,) float64, −1..1, > 0 brighter on image right
    lighting_tb: np.ndarray  # (N,) float64, −1..1, > 0 brighter at the top
    face_size: np.ndarray  # (N,) float64 source pixels
    det_score: np.ndarray  # (N,) float64
    aligned_paths: list[str]  # relative to the database's folder
    image_sizes: np.ndarray  # (N, 2) int64 width, height of the source image

    def __len__(self) -> int:
        return len(self.face_ids)


_QUERY = """
    SELECT f.face_id, f.image_id, i.path, i.content_hash, f.face_index, f.embedding, f.phash,
           f.yaw, f.pitch, f.roll, f.sharpness, f.brightness, f.contrast, f.lighting_lr,
           f.lighting_tb, f.face_size, f.det_score, f.aligned_path, i.width, i.height
    FROM faces f JOIN images i USING (image_id)
    ORDER BY f.face_id
"""


def load_faces(connection: duckdb.DuckDBPyConnection) -> FaceTable:
    """All faces of the faceset behind `connection` (read-only or not)."""
    rows = connection.execute(_QUERY).fetchall()
    columns = list(zip(*rows)) if rows else [[] for _ in range(20)]

    def floats(index: int) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in columns[index]], dtype=np.float64)

    # An empty faceset still has a (0, D) embedding matrix, so shape arithmetic downstream holds.
    dimension = int(connection.execute("SELECT coalesce(max(value::INTEGER), 0) FROM meta "
                                       "WHERE key = 'embedding_dim'").fetchone()[0])
    embeddings = (np.array(columns[5], dtype=np.float32) if rows
                  else np.zeros((0, dimension), np.float32))
    return FaceTable(
        face_ids=list(columns[0]),
        image_ids=list(columns[1]),
        paths=list(columns[2]),
        content_hashes=list(columns[3]),
        face_index=np.array(columns[4], dtype=np.int32),
        embeddings=embeddings.reshape(len(rows), -1) if rows else embeddings,
        phash=np.array([int(h, 16) if h else 0 for h in columns[6]], dtype=np.uint64),
        yaw=floats(7),
        pitch=floats(8),
        roll=floats(9),
        sharpness=floats(10),
        brightness=floats(11),
        contrast=floats(12),
        lighting_lr=floats(13),
        lighting_tb=floats(14),
        face_size=floats(15),
        det_score=floats(16),
        aligned_paths=list(columns[17]),
        image_sizes=np.array(list(zip(columns[18], columns[19])), dtype=np.int64).reshape(len(rows), 2),
    )


def open_faceset(path: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to an existing faceset file (a clear error when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no faceset at {path}: run 'facesmith curate scan' first")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as error:
        raise StoreError(f"cannot open {path}: {error}") from error



def table_exists(connection: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the faceset behind `connection` has a table or view called `name`."""
    return bool(connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])
