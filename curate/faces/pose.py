"""Head pose (yaw, pitch, roll in degrees) from 68 landmarks by PnP against a sparse 3-D face."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# A sparse 3-D face in millimetres, written for this project from average adult facial
# proportions (not a scanned mean). Axes: x towards image right, y down, z away from the camera,
# origin at the nose tip, so a frontal face needs no rotation. Keys are iBUG-68 indices.
_FACE_3D_MM = {
    0: (-70.0, -30.0, 95.0), 16: (70.0, -30.0, 95.0),  # jaw at ear level
    4: (-60.0, 42.0, 75.0), 12: (60.0, 42.0, 75.0),  # jaw angle
    8: (0.0, 80.0, 25.0),  # chin
    17: (-55.0, -55.0, 35.0), 21: (-12.0, -58.0, 22.0),  # brow, image-left
    22: (12.0, -58.0, 22.0), 26: (55.0, -55.0, 35.0),  # brow, image-right
    27: (0.0, -48.0, 22.0),  # nasion
    30: (0.0, 0.0, 0.0),  # nose tip
    31: (-13.0, 10.0, 18.0), 33: (0.0, 14.0, 12.0), 35: (13.0, 10.0, 18.0),  # nostrils
    36: (-45.0, -36.0, 38.0), 39: (-15.0, -35.0, 30.0),  # eye corners, image-left
    42: (15.0, -35.0, 30.0), 45: (45.0, -36.0, 38.0),  # eye corners, image-right
    48: (-25.0, 36.0, 25.0), 54: (25.0, 36.0, 25.0),  # mouth corners
    51: (0.0, 29.0, 12.0), 57: (0.0, 48.0, 15.0),  # lips
}
_INDICES = np.array(sorted(_FACE_3D_MM))
_MODEL = np.array([_FACE_3D_MM[i] for i in _INDICES], dtype=np.float64)


@dataclass(frozen=True)
class Pose:
    yaw: float  # degrees, > 0 when the face points towards image right
    pitch: float  # degrees, > 0 when the face points up
    roll: float  # degrees, > 0 for a clockwise in-plane tilt as seen in the image
    # RMS distance between the landmarks and the 3-D face projected at this pose, over the width
    # of the landmarks: how face-like the landmark set is. Real faces fit to 0.03–0.065 on the
    # samples; landmarks jittered by 8 % of the face width, or lips moved a quarter width, to
    # ≥ 0.09: the 'alignment' check (curate.faces.quality.LandmarkFit) reads it.
    fit_error: float = float("nan")


def estimate_pose(landmarks68: np.ndarray) -> Pose:
    """Pose of a face from its (68, 2) landmarks, in any pixel frame.

    The camera is centred on the face with a focal length of six face widths — a mild
    perspective, so that the angles do not depend on where the face sits in the frame or on
    the unknown lens.
    """
    points = np.asarray(landmarks68, dtype=np.float64)[_INDICES]
    if not np.isfinite(points).all() or np.ptp(points, axis=0).min() < 1.0:
        return Pose(float("nan"), float("nan"), float("nan"))  # collapsed landmarks: no pose to solve
    centre = points.mean(axis=0)
    width = float(np.ptp(points[:, 0])) or 1.0
    focal = 6.0 * width
    camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], dtype=np.float64)
    ok, rotation_vector, translation = cv2.solvePnP(
        _MODEL, points, camera, None, flags=cv2.SOLVEPNP_EPNP
    )
    if ok:
        ok, rotation_vector, translation = cv2.solvePnP(
            _MODEL, points, camera, None, rotation_vector, translation,
            useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE,
        )
    if not ok:
        return Pose(float("nan"), float("nan"), float("nan"))
    projected, _ = cv2.projectPoints(_MODEL, rotation_vector, translation, camera, None)
    fit_error = float(np.sqrt(((projected.reshape(-1, 2) - points) ** 2).sum(axis=1).mean()) / width)
    rotation, _ = cv2.Rodrigues(rotation_vector)
    facing = -rotation[:, 2]  # where the nose points, in camera axes (z away from the camera)
    yaw = np.degrees(np.arctan2(facing[0], -facing[2]))
    pitch = np.degrees(np.arctan2(-facing[1], np.hypot(facing[0], facing[2])))
    across = rotation[:, 0]
    roll = np.degrees(np.arctan2(across[1], across[0]))
    return Pose(float(yaw), float(pitch), float(roll), fit_error)
