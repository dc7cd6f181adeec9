"""Import DFL aligned folders into a faceset and export faces as DFL aligned JPEGs."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from curate.faces.align import transform_points
from curate.faces.backends.base import FaceAnalyzer
from curate.interop.dfl.errors import DflError
from curate.interop.dfl.jpeg_segments import SOI
from curate.limits import MAX_JPEG_HEADER_BYTES as MAX_HEADER_BYTES
from curate.interop.dfl.metadata import (
    DFL_FACE_TYPES,
    DflFaceMetadata,
    encode_dfl_jpeg,
    parse_dfl_metadata,
)
from curate.errors import FacesmithError
from curate.faceset import FacesetReader, open_faceset
from curate.fileio import write_atomically
from curate.scan.ingest import FileEntry, walk_files
from curate.progress import ProgressCallback
from curate.scan.pipeline import (
    ScanSettings,
    ScanSummary,
    default_aligned_dir,
    faceset_own_files,
    image_id_for,
    scan_folder,
)
from curate.store import DFL_FACE_COLUMNS, FacesetStore

logger = logging.getLogger(__name__)

# -- import -----------------------------------------------------------------------------------

DflStatus = Literal["ok", "no-metadata", "rejected"]


@dataclass(frozen=True)
class DflFaceRow:
    """One aligned file of an imported DFL folder: its metadata as read, or why there is none."""

    image_id: str  # the file's images row
    status: DflStatus
    reason: str | None  # why 'no-metadata' or 'rejected' (e.g. 'unsafe-metadata: refused global os.system')
    face_type: str | None = None  # DFL's face type name
    source_filename: str | None = None
    source_rect: list[float] | None = None  # 4 floats: left, top, right, bottom, frame pixels
    source_landmarks: list[float] | None = None  # 136 floats, (x, y) pairs, frame pixels
    aligned_landmarks: list[float] | None = None  # 136 floats, (x, y) pairs, aligned pixels
    image_to_face: list[float] | None = None  # 6 floats: 2×3 affine, frame px -> aligned px
    eyebrows_expand_mod: float | None = None

    @classmethod
    def from_metadata(cls, image_id: str, metadata: DflFaceMetadata) -> DflFaceRow:
        def flat(array: np.ndarray | None) -> list[float] | None:
            return None if array is None else [float(v) for v in array.ravel()]

        return cls(
            image_id=image_id, status="ok", reason=None, face_type=metadata.face_type,
            source_filename=metadata.source_filename, source_rect=flat(metadata.source_rect),
            source_landmarks=flat(metadata.source_landmarks), aligned_landmarks=flat(metadata.landmarks),
            image_to_face=flat(metadata.image_to_face_mat), eyebrows_expand_mod=metadata.eyebrows_expand_mod,
        )

    def to_row(self) -> tuple:
        return (
            self.image_id, self.face_type, self.source_filename, self.source_rect, self.source_landmarks,
            self.aligned_landmarks, self.image_to_face, self.eyebrows_expand_mod, self.status, self.reason,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DflFaceRow:
        (image_id, face_type, source_filename, source_rect, source_landmarks, aligned_landmarks,
         image_to_face, eyebrows_expand_mod, status, reason) = row
        return cls(
            image_id=image_id, status=status, reason=reason, face_type=face_type,
            source_filename=source_filename, source_rect=source_rect, source_landmarks=source_landmarks,
            aligned_landmarks=aligned_landmarks, image_to_face=image_to_face,
            eyebrows_expand_mod=eyebrows_expand_mod,
        )


def read_dfl_rows(database: Path) -> list[DflFaceRow]:
    """Every dfl_faces row of a faceset, by image_id."""
    connection = open_faceset(database, read_only=True)
    try:
        rows = connection.execute(f"SELECT {DFL_FACE_COLUMNS} FROM dfl_faces ORDER BY image_id").fetchall()
    finally:
        connection.close()
    return [DflFaceRow.from_row(row) for row in rows]


@dataclass(frozen=True)
class DflImportSummary:
    folder: str
    database: str
    files: int  # files found in the folder
    with_metadata: int  # status 'ok'
    without_metadata: int  # status 'no-metadata'
    rejected: int  # status 'rejected': unsafe or malformed metadata, corrupt JPEG header
    reasons: dict[str, int]  # reason -> files, for 'no-metadata' and 'rejected' rows
    faces: int  # faces the scan found in the aligned images
    scan: ScanSummary

    def to_dict(self) -> dict:
        return asdict(self)


def _dfl_row(entry: FileEntry) -> DflFaceRow:
    """Read one file's DFL metadata; every failure becomes the row's status and reason."""
    image_id = image_id_for(entry.rel_path)
    if entry.problem:
        return DflFaceRow(image_id, "no-metadata", f"not read: {entry.problem}")
    try:
        with open(entry.abs_path, "rb") as handle:
            if handle.read(2) != SOI:
                return DflFaceRow(image_id, "no-metadata", "not a JPEG file")
            # The metadata sits in the header, before the image data: read no further than the
            # header can reach, so a multi-GiB (or sparse) "JPEG" costs a few MiB, not its size.
            data = SOI + handle.read(MAX_HEADER_BYTES)
    except OSError as error:
        return DflFaceRow(image_id, "no-metadata", f"unreadable: {error.strerror or error}")
    try:
        metadata = parse_dfl_metadata(data)
    except DflError as error:
        logger.warning("%s: %s", entry.rel_path, error)
        return DflFaceRow(image_id, "rejected", error.reason)
    except (MemoryError, RecursionError) as error:
        # safe_loads bounds what a payload can build; should a value still prove too big for this
        # machine, it costs this file its metadata, not the import of every other file.
        logger.warning("%s: metadata too large to read: %s", entry.rel_path, type(error).__name__)
        return DflFaceRow(image_id, "rejected", f"too-large: metadata too large to read ({type(error).__name__})")
    if metadata is None:
        return DflFaceRow(image_id, "no-metadata", "no APP15 segment")
    return DflFaceRow.from_metadata(image_id, metadata)


def import_dfl_folder(
    folder: Path,
    database: Path,
    settings: ScanSettings = ScanSettings(),
    analyzer: FaceAnalyzer | None = None,
    aligned_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> DflImportSummary:
    """Import a DFL aligned folder: scan its images like any folder (faces, embeddings,
    quality, …) and store each file's DFL metadata in `dfl_faces`.

    Metadata is read with `safe_loads`: a file whose pickle asks for code, or whose dict is
    malformed, gets status 'rejected' and the reason; nothing in it runs and the other files
    import as usual. A JPEG without APP15 gets status 'no-metadata'.
    """
    folder, database = Path(folder), Path(database)
    if not folder.is_dir():
        raise FacesmithError(f"not a folder: {folder}")
    aligned_dir = Path(aligned_dir) if aligned_dir else default_aligned_dir(database)
    scan = scan_folder(folder, database, settings, analyzer, aligned_dir, on_progress)
    # The same files the scan saw (it leaves out the faceset's own files in the same way).
    rows = [_dfl_row(entry) for entry in walk_files(folder, exclude=faceset_own_files(database, aligned_dir))]
    with FacesetStore(database) as store:
        store.write_dfl_faces([row.to_row() for row in rows])
    statuses = Counter(row.status for row in rows)
    reasons = Counter(row.reason for row in rows if row.reason)
    return DflImportSummary(
        folder=str(folder), database=str(database), files=len(rows),
        with_metadata=statuses["ok"], without_metadata=statuses["no-metadata"],
        rejected=statuses["rejected"], reasons=dict(sorted(reasons.items())), faces=scan.faces, scan=scan,
    )


# -- export ---------------------------------------------------------------------------------

_FACES_QUERY = """
    SELECT f.face_id, i.path, f.bbox, f.landmarks68, f.image_to_face, f.face_type, f.aligned_path
    FROM faces f JOIN images i USING (image_id)
"""


@dataclass(frozen=True, eq=False)
class _ExportFace:
    face_id: str
    crop_path: Path
    metadata: DflFaceMetadata


def _faces_to_export(reader: FacesetReader, face_ids: Sequence[str] | None, all_faces: bool) -> list[str]:
    if face_ids is not None:
        return list(dict.fromkeys(face_ids))
    if all_faces:
        return list(reader.faces().face_ids)
    picks = reader.selected()
    trainable = reader.trainable_ids(use_selection=True)
    return sorted(trainable, key=lambda face_id: (picks.get(face_id) is None, picks.get(face_id) or 0, face_id))


def export_metadata(
    source_path: str, bbox: Sequence[float], landmarks68: Sequence[float], image_to_face: Sequence[float],
    face_type: str,
) -> DflFaceMetadata:
    """DFL metadata for one of our faces (the flat DuckDB columns: bbox 4, landmarks68 136,
    image_to_face 6), with the landmarks carried into the aligned crop."""
    if face_type not in DFL_FACE_TYPES:
        raise FacesmithError(f"face type {face_type!r} has no DFL equivalent")
    landmarks = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    matrix = np.asarray(image_to_face, dtype=np.float64).reshape(2, 3)
    return DflFaceMetadata(
        face_type=DFL_FACE_TYPES[face_type],
        landmarks=transform_points(matrix, landmarks),
        source_filename=source_path,
        source_rect=np.asarray(bbox, dtype=np.float64).reshape(4),
        source_landmarks=landmarks,
        image_to_face_mat=matrix,
        eyebrows_expand_mod=1.0,
    )


def export_dfl(
    database: Path,
    out_dir: Path,
    face_ids: Sequence[str] | None = None,
    quality: int = 90,
    all_faces: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[Path]:
    """Write faces as DFL aligned JPEGs `<out_dir>/00000.jpg`, `00001.jpg`, …; returns the paths.

    Faces: `face_ids` in that order; else, unless `all_faces`, the faces that train
    (curate.faceset.FacesetReader: the selection in pick order when one was made, the analysis'
    exclusions and a person's decisions honoured); else every face (by face_id). Each file is the
    face's aligned crop re-encoded at `quality` (DFL's extractor uses 90) with DFL's metadata
    dict in APP15, written under a temporary name and renamed. `out_dir` must hold no JPEGs yet, so that an
    export never mixes with an older one.
    """
    database, out_dir = Path(database), Path(out_dir)
    if not 1 <= int(quality) <= 100:
        raise FacesmithError(f"JPEG quality must be in 1..100, got {quality}")
    with FacesetReader(database) as reader:
        chosen = _faces_to_export(reader, face_ids, all_faces)
        rows = {row[0]: row for row in reader.connection.execute(
            _FACES_QUERY + " WHERE list_contains(?, f.face_id)", [chosen]
        ).fetchall()} if chosen else {}
    missing = [face_id for face_id in chosen if face_id not in rows]
    if missing:
        raise FacesmithError(
            f"{len(missing)} face id(s) not in {database}: {', '.join(missing[:5])}"
            + (" …" if len(missing) > 5 else "")
        )
    faces = []
    for face_id in chosen:
        _, source_path, bbox, landmarks68, image_to_face, face_type, aligned_path = rows[face_id]
        crop_path = database.parent / aligned_path
        if not crop_path.is_file():
            raise FacesmithError(f"the aligned crop of face {face_id} is missing: {crop_path}")
        faces.append(_ExportFace(
            face_id, crop_path, export_metadata(source_path, bbox, landmarks68, image_to_face, face_type)
        ))
    if out_dir.exists() and not out_dir.is_dir():
        raise FacesmithError(f"not a folder: {out_dir}")
    if out_dir.is_dir() and any(path.suffix.lower() in (".jpg", ".jpeg") for path in out_dir.iterdir()):
        raise FacesmithError(f"{out_dir} already holds JPEG files: export into an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    if on_progress:
        on_progress(0, len(faces))
    for number, face in enumerate(faces):
        crop = cv2.imdecode(np.fromfile(face.crop_path, dtype=np.uint8), cv2.IMREAD_COLOR)
        if crop is None:
            raise FacesmithError(f"cannot decode the aligned crop of face {face.face_id}: {face.crop_path}")
        target = out_dir / f"{number:05d}.jpg"
        write_atomically(target, encode_dfl_jpeg(crop, face.metadata, quality))
        written.append(target)
        if on_progress:
            on_progress(number + 1, len(faces))
    logger.info("exported %d faces to %s", len(written), out_dir)
    return written
