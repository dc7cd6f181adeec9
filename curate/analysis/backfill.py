"""Add the landmark checks (frame edge, alignment, detection) to facesets scanned before those checks existed.

They are computed from columns every faceset has (the 68 landmarks, the image size, the detector
score), so an analysis can fill them in without reading an image; a scan writes them itself.
"""

from __future__ import annotations

import logging

import numpy as np

from curate.faces.pose import estimate_pose
from curate.faces.quality import FaceGeometry, frame_edge_share, geometry_check_rows
from curate.store import FacesetStore

logger = logging.getLogger(__name__)

GEOMETRY_MEASURES = ("frame_edge", "alignment", "detection")


def backfill_geometry_checks(store: FacesetStore) -> int:
    """Write the missing geometry check rows of every face in one transaction; the number of
    faces that got them (0, at the cost of one query, when none was missing)."""
    rows = store.connection.execute(
        "SELECT f.face_id, f.landmarks68, f.det_score, i.width, i.height FROM faces f JOIN images i USING (image_id) "
        "WHERE f.face_id NOT IN (SELECT face_id FROM face_checks WHERE measure = 'alignment') "
        "ORDER BY f.face_id").fetchall()
    if not rows:
        return 0
    checks = []
    for face_id, landmarks68, det_score, width, height in rows:
        points = np.asarray(landmarks68, np.float64).reshape(68, 2)
        geometry = FaceGeometry(frame_edge=frame_edge_share(points, int(width or 0), int(height or 0)),
                                alignment=estimate_pose(points).fit_error, detection=float(det_score))
        checks.extend(geometry_check_rows(face_id, geometry))
    store.add_checks(checks, GEOMETRY_MEASURES)
    logger.info("added frame-edge, alignment and detection checks to %d faces of %s", len(rows), store.path)
    return len(rows)

