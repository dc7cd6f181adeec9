"""The face index the review app shows: one column per fact, one entry per face, read through the reader.

Everything here is read from the faceset through `curate.faceset.FacesetReader`; whether a face
trains, and why not, comes only from `FacesetReader.statuses()` (the app shows it, it never
re-derives it). The columns are plain lists so the page can filter 10 000 faces in a few
milliseconds without asking the server again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from curate.faceset import FaceDecisions, FacesetReader, FaceStatus, FaceTable, table_exists

# One letter per verdict in the per-face verdict strings ('-': the measure was not checked).
VERDICT_LETTERS = {"ok": "o", "warn": "w", "bad": "b"}
# How the pose heat map bins faces: the `coverage` view's bins (15°, yaw −90..90, pitch −60..60).
POSE_BINS = {"yaw_bin": 15, "pitch_bin": 15, "yaw_range": [-90, 90], "pitch_range": [-60, 60]}


def _rounded(values: np.ndarray, digits: int) -> list[float | None]:
    """Floats rounded for the page (JSON has no NaN: unknown values become null)."""
    return [None if not math.isfinite(v) else round(float(v), digits) for v in values]


def embedding_map(embeddings: np.ndarray) -> np.ndarray:
    """(N, 2) float64 coordinates in −1..1: the first two principal components of the identity
    embeddings. Deterministic and instant at 10 000 faces; people sit apart from the main group."""
    count = len(embeddings)
    if count < 3:
        return np.zeros((count, 2))
    data = np.asarray(embeddings, np.float64)
    centred = data - data.mean(axis=0)
    # The 2 leading right singular vectors via the small D×D covariance (N×D SVD costs more).
    _, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, ::-1][:, :2]
    # Fix each axis' sign (eigenvectors have none of their own) so the map does not flip between runs.
    components *= np.where(components[np.abs(components).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)
    points = centred @ components
    # One scale for both axes: distances on the map keep their proportions.
    scale = np.abs(points).max()
    return points / scale if scale > 0 else points


@dataclass(frozen=True)
class StaticColumns:
    """What changes only with a scan: the faces' own numbers and the map (cached by the server)."""

    face_ids: list[str]
    columns: dict[str, list]

    @classmethod
    def build(cls, table: FaceTable) -> "StaticColumns":
        # here, not at import: coverage brings OpenCV, and a warm server start never builds this
        from curate.analysis.coverage import light_bins

        points = embedding_map(table.embeddings)
        columns: dict[str, list] = {
            "id": list(table.face_ids),
            "path": list(table.paths),
            "index": table.face_index.tolist(),
            "yaw": _rounded(table.yaw, 1),
            "pitch": _rounded(table.pitch, 1),
            "roll": _rounded(table.roll, 1),
            "sharpness": _rounded(table.sharpness, 1),
            "brightness": _rounded(table.brightness, 3),
            "contrast": _rounded(table.contrast, 3),
            "size": _rounded(table.face_size, 0),
            "det": _rounded(table.det_score, 3),
            "light": light_bins(table.lighting_lr, table.lighting_tb),
            "x": _rounded(points[:, 0], 4) if len(points) else [],
            "y": _rounded(points[:, 1], 4) if len(points) else [],
        }
        return cls(list(table.face_ids), columns)


def analysis_columns(reader: FacesetReader, face_ids: Sequence[str]) -> tuple[list[str], dict[str, list]]:
    """The analyses' verdicts per face: identity label, duplicate group, selection, check verdicts.
    Returns (the check measures in verdict-string order, the columns)."""
    connection = reader.connection
    position = {face_id: i for i, face_id in enumerate(face_ids)}
    count = len(face_ids)
    labels = reader.identity_labels()
    columns: dict[str, list] = {
        "label": [labels[f][0] if f in labels else "" for f in face_ids],
        "distance": [round(labels[f][1], 3) if f in labels else None for f in face_ids],
        "group": [""] * count, "kind": [""] * count, "keep": [False] * count,
        "similarity": [None] * count, "phash_bits": [None] * count,
        "pick": [None] * count,
    }
    if table_exists(connection, "duplicates"):
        for face_id, group, kind, keep, similarity, bits in connection.execute(
                "SELECT face_id, group_id, kind, keep, similarity, phash_distance FROM duplicates").fetchall():
            i = position.get(face_id)
            if i is not None:
                columns["group"][i], columns["kind"][i], columns["keep"][i] = group, kind, bool(keep)
                columns["similarity"][i] = None if similarity is None else round(float(similarity), 3)
                columns["phash_bits"][i] = bits
    for face_id, pick in reader.selected().items():
        if face_id in position:
            columns["pick"][position[face_id]] = pick
    measures = [m for (m,) in connection.execute(
        "SELECT DISTINCT measure FROM face_checks ORDER BY measure").fetchall()]
    # One letter per measure per face, pivoted in the database (120 000 check rows at 10 000 faces).
    verdicts = connection.execute("""
        SELECT f.face_id, string_agg(CASE c.verdict WHEN 'ok' THEN 'o' WHEN 'warn' THEN 'w'
                                                    WHEN 'bad' THEN 'b' ELSE '-' END, '' ORDER BY m.measure)
        FROM faces f CROSS JOIN (SELECT DISTINCT measure FROM face_checks) m
        LEFT JOIN face_checks c ON c.face_id = f.face_id AND c.measure = m.measure
        GROUP BY f.face_id""").fetchall()
    letters = ["-" * len(measures)] * count
    for face_id, text in verdicts:
        i = position.get(face_id)
        if i is not None:
            letters[i] = text
    columns["verdicts"] = letters
    return measures, columns


def status_columns(statuses: Sequence[FaceStatus], decisions: dict[str, FaceDecisions]) -> dict[str, list]:
    """Whether each face trains and why not (from the reader), and the decisions standing on it."""
    nothing = FaceDecisions()
    return {
        "trains": [s.trains for s in statuses],
        "reason": [s.reason for s in statuses],
        "reason_kinds": [",".join(sorted({r.kind for r in s.reasons})) for s in statuses],
        "decided": [s.decided for s in statuses],
        "inclusion": [decisions.get(s.face_id, nothing).inclusion or "" for s in statuses],
        "hand_label": [decisions.get(s.face_id, nothing).label or "" for s in statuses],
        "keeper": [decisions.get(s.face_id, nothing).keeper for s in statuses],
        "tags": [list(decisions.get(s.face_id, nothing).tags) for s in statuses],
    }


def statuses_for(reader: FacesetReader, face_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """{"id": [...], <status columns>} for `face_ids` (default: every face), in face_id order."""
    statuses = reader.statuses(face_ids=face_ids)
    return {"id": [s.face_id for s in statuses], **status_columns(statuses, reader.decisions())}


def patch_statuses(index: dict[str, Any], statuses: dict[str, Any], decisions: int) -> None:
    """Write the new status columns of some faces (statuses_for's answer) into a built index."""
    columns = index["columns"]
    position = {face_id: i for i, face_id in enumerate(columns["id"])}
    for k, face_id in enumerate(statuses["id"]):
        i = position[face_id]
        for name, values in statuses.items():
            if name != "id":
                columns[name][i] = values[k]
    index["faceset"]["decisions"] = decisions


def faceset_summary(reader: FacesetReader) -> dict[str, Any]:
    """The faceset's settings and counts for the page's header."""
    info = reader.info()
    connection = reader.connection
    images, rejected, without_faces = connection.execute(
        "SELECT count(*), count(*) FILTER (status = 'rejected'), "
        "count(*) FILTER (status = 'ok' AND face_count = 0) FROM images").fetchone()
    return {**info.to_dict(), "name": info.path.name, "images": images, "images_rejected": rejected,
            "images_without_faces": without_faces, "decisions": len(reader.decision_log()),
            "pose_bins": POSE_BINS}


def build_index(reader: FacesetReader, static: StaticColumns) -> dict[str, Any]:
    """The whole index the page loads: summary, check measures and every column."""
    measures, analyses = analysis_columns(reader, static.face_ids)
    statuses = reader.statuses()
    return {
        "faceset": faceset_summary(reader),
        "measures": measures,
        "columns": {**static.columns, **analyses, **status_columns(statuses, reader.decisions())},
    }
