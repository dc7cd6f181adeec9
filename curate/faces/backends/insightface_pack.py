"""insightface model packs (`buffalo_l` and relatives) through onnxruntime.

The user supplies the pack folder (`--models DIR`, default `~/.insightface/models`); nothing is
downloaded. Each model has its own small `OnnxModel` subclass that states its contract; the role of
every file comes from its file name, and tensor shapes only validate it.

Contracts, as the insightface 0.7 python package (`python-package/insightface/model_zoo/`) runs
these models:

* SCRFD detector (`det_10g.onnx`): input 1×3×H×W, RGB, (pixel − 127.5) / 128; 9 outputs,
  ordered scores(8, 16, 32), boxes(8, 16, 32), keypoints(8, 16, 32), each (K, 1|4|10) with
  K = (H/stride)·(W/stride)·2 (two anchors per grid cell, cell-major). Boxes are distances
  (left, top, right, bottom) and keypoints offsets (x, y)·5 from the anchor centre
  (x·stride, y·stride), both in units of the stride. Image letterboxed into the input (top-left,
  aspect kept), score threshold, NMS at IoU 0.4, then divided back by the resize factor.
* 3-D 68-point landmarks (`1k3d68.onnx`): input N×3×192×192, RGB, mean 0, std 1 (the graph
  normalises itself); crop centred on the box centre with scale 192 / (1.5·max(w, h)); output
  (N, 3309) = 1103 (x, y, z) triples of which the last 68 are the iBUG-68 points in crop space
  −1..1, mapped to crop pixels by (v + 1)·96 (z by v·96) and back through the inverse crop.
* ArcFace recogniser (`w600k_r50.onnx`): input N×3×112×112, RGB, (pixel − 127.5) / 127.5, on
  the ArcFace 5-point similarity crop; output (N, 512), L2-normalised here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import cv2
import numpy as np

from curate.faces.align import invert_affine, transform_points
from curate.faces.backends.base import FaceAnalyzer, ModelInfo
from curate.faces.boxes import nms
from curate.errors import FacesmithError, ModelContractError, ModelPackError
from curate.faces.onnx_model import InputNormalisation, OnnxModel
from curate.faces.providers import resolve_providers
from curate.records import LocatedFace

logger = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = Path("~/.insightface/models")
LICENCE = (
    "insightface buffalo_l: non-commercial research use only — see insightface's model licence"
)
RELEASES_URL = "https://github.com/deepinsight/insightface/releases"

# File names per role, in order of preference (the first one present is used). Detector: the most
# accurate SCRFD first — det_10g (buffalo_l), scrfd_10g_bnkps (antelopev2, same graph family),
# det_2.5g (buffalo_m), det_500m (buffalo_s). Recogniser: w600k_r50 (buffalo_l/m), any other
# w600k_* (w600k_mbf in buffalo_s/sc) in name order, then glintr100 (antelopev2).
DETECTOR_FILES = ("det_10g.onnx", "scrfd_10g_bnkps.onnx", "det_2.5g.onnx", "det_500m.onnx")
LANDMARK_FILES = ("1k3d68.onnx",)
RECOGNISER_FILES = ("w600k_r50.onnx", "w600k_*.onnx", "glintr100.onnx")


def _shape_text(shape: Sequence[object]) -> str:
    return "×".join("?" if not isinstance(d, int) else str(d) for d in shape)


def _known(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in source pixels, highest score first."""

    boxes: np.ndarray  # (M, 4) float32
    scores: np.ndarray  # (M,) float32
    keypoints: np.ndarray  # (M, 5, 2) float32

    def __len__(self) -> int:
        return len(self.scores)


class ScrfdDetector(OnnxModel):
    """SCRFD with keypoints (det_10g / det_2.5g / det_500m / scrfd_10g_bnkps).

    Contract: input 1×3×H×W (H, W dynamic, or fixed and divisible by 32), RGB,
    (pixel − 127.5) / 128. Nine outputs: scores for strides 8, 16, 32 (K, 1), then boxes (K, 4),
    then keypoints (K, 10), K = (H/s)·(W/s)·2; a leading batch dimension of 1 is accepted.
    """

    role: ClassVar[str] = "detector"
    min_outputs: ClassVar[int] = 1  # the exact count (9) is checked in validate(), with a reason
    normalisation: ClassVar[InputNormalisation] = InputNormalisation(mean=127.5, std=128.0)
    strides: ClassVar[tuple[int, ...]] = (8, 16, 32)
    anchors_per_cell: ClassVar[int] = 2
    output_widths: ClassVar[tuple[int, int, int]] = (1, 4, 10)  # score, box, keypoints

    def __init__(
        self,
        model: str | Path | bytes,
        device: str = "auto",
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        det_size: int = 640,
        threshold: float = 0.5,
        nms_iou: float = 0.4,
    ) -> None:
        if det_size <= 0 or det_size % max(self.strides):
            raise FacesmithError(
                f"det_size must be a positive multiple of {max(self.strides)}, got {det_size}"
            )
        if not 0.0 <= threshold <= 1.0:
            raise FacesmithError(f"detection threshold must be within 0..1, got {threshold}")
        self.det_size = det_size
        self.threshold = threshold
        self.nms_iou = nms_iou
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}
        super().__init__(model, device=device, threads=threads, providers=providers)

    def validate(self) -> None:
        count = len(self.output_names)
        levels = len(self.strides)
        if count == 2 * levels:
            raise ModelContractError(
                f"detector {self.source} has {count} outputs (scores and boxes only): an SCRFD "
                f"model with keypoints (*kps*, {3 * levels} outputs) is needed for alignment"
            )
        if count != 3 * levels:
            raise ModelContractError(
                f"detector {self.source}: expected {3 * levels} outputs (scores, boxes, keypoints "
                f"for strides {self.strides}), has {count}"
            )
        if self.fixed_batch not in (None, 1):
            raise ModelContractError(
                f"detector {self.source}: batch must be 1 or dynamic, got {self.input_shape[0]}"
            )
        for dim in self.input_shape[2:]:
            if _known(dim) is not None and dim % max(self.strides):
                raise ModelContractError(
                    f"detector {self.source}: input size {self.input_shape} is not divisible by "
                    f"{max(self.strides)}"
                )
        for index, output in enumerate(self.outputs):
            width = self.output_widths[index // levels]
            last = _known(output.shape[-1]) if output.shape else None
            if len(output.shape) not in (2, 3) or (last is not None and last != width):
                kind = ("scores", "boxes", "keypoints")[index // levels]
                raise ModelContractError(
                    f"detector {self.source}: output {index} ({output.name}) should be {kind} "
                    f"(K, {width}) for stride {self.strides[index % levels]}, got "
                    f"{_shape_text(output.shape)} — outputs must be ordered scores, boxes, "
                    "keypoints"
                )
        fixed = self.fixed_size
        if fixed is not None and fixed != (self.det_size, self.det_size):
            logger.warning(
                "detector %s fixes its input at %s×%s; det_size=%s is ignored",
                self.source,
                fixed[1],
                fixed[0],
                self.det_size,
            )

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.fixed_size or (self.det_size, self.det_size)

    def _anchor_centres(self, grid_h: int, grid_w: int, stride: int) -> np.ndarray:
        key = (grid_h, grid_w, stride)
        if key not in self._centres:
            ys, xs = np.mgrid[:grid_h, :grid_w]
            centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            self._centres[key] = np.repeat(centres, self.anchors_per_cell, axis=0)
        return self._centres[key]

    def letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Resize keeping the aspect into the input size, padded right/bottom with black.

        Returns the padded image and the x and y resize factors (input px per source px).
        """
        height, width = image_bgr.shape[:2]
        in_h, in_w = self.input_hw
        scale = min(in_w / width, in_h / height)
        new_w = min(in_w, max(1, int(round(width * scale))))
        new_h = min(in_h, max(1, int(round(height * scale))))
        padded = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        padded[:new_h, :new_w] = cv2.resize(
            image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR
        )
        return padded, new_w / width, new_h / height

    def candidates(self, image_bgr: np.ndarray) -> Detections:
        """Every anchor at or above the threshold, before NMS, in source pixels (unsorted)."""
        padded, scale_x, scale_y = self.letterbox(image_bgr)
        outputs = self.run(self.blob([padded]))
        in_h, in_w = self.input_hw
        levels = len(self.strides)
        scores, boxes, keypoints = [], [], []
        for level, stride in enumerate(self.strides):
            grid_h, grid_w = in_h // stride, in_w // stride
            count = grid_h * grid_w * self.anchors_per_cell
            tensors = [outputs[level + k * levels] for k in range(3)]
            for k, (tensor, width) in enumerate(zip(tensors, self.output_widths, strict=True)):
                if tensor.size != count * width:
                    raise ModelContractError(
                        f"detector {self.source}: output {self.output_names[level + k * levels]} "
                        f"has shape {tensor.shape}, expected ({count}, {width}) for stride "
                        f"{stride} at input {in_w}×{in_h}"
                    )
            level_scores = tensors[0].reshape(-1)
            hits = np.flatnonzero(level_scores >= self.threshold)
            if hits.size == 0:
                continue
            centres = self._anchor_centres(grid_h, grid_w, stride)[hits]
            distances = tensors[1].reshape(-1, 4)[hits] * stride
            offsets = tensors[2].reshape(-1, 5, 2)[hits] * stride
            scores.append(level_scores[hits])
            boxes.append(
                np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], axis=1)
            )
            keypoints.append(centres[:, None, :] + offsets)
        if not scores:
            return Detections(
                np.zeros((0, 4), np.float32),
                np.zeros((0,), np.float32),
                np.zeros((0, 5, 2), np.float32),
            )
        box_array = np.concatenate(boxes).astype(np.float64)
        kps_array = np.concatenate(keypoints).astype(np.float64)
        box_array[:, 0::2] /= scale_x
        box_array[:, 1::2] /= scale_y
        kps_array[..., 0] /= scale_x
        kps_array[..., 1] /= scale_y
        return Detections(
            box_array.astype(np.float32),
            np.concatenate(scores).astype(np.float32),
            kps_array.astype(np.float32),
        )

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Faces in one uint8 BGR image after NMS, highest score first, in source pixels."""
        found = self.candidates(image_bgr)
        keep = nms(found.boxes, found.scores, self.nms_iou)
        return Detections(found.boxes[keep], found.scores[keep], found.keypoints[keep])


class Landmark3D68(OnnxModel):
    """insightface 1k3d68: 68 iBUG points with depth from a loose 192×192 box crop.

    Contract: input N×3×192×192 (N dynamic or fixed), RGB, mean 0, std 1 (the graph holds its own
    normalisation); one output (N, D), D divisible by 3, the last 68 triples are the points in crop
    space −1..1 (the real model: D = 3309 = 1103·3).
    """

    role: ClassVar[str] = "landmarks68"
    normalisation: ClassVar[InputNormalisation] = InputNormalisation(mean=0.0, std=1.0)
    input_size: ClassVar[int] = 192
    box_scale: ClassVar[float] = 1.5  # the crop spans 1.5 × the longer box side
    num_points: ClassVar[int] = 68

    def validate(self) -> None:
        fixed = self.fixed_size
        if fixed is not None and fixed != (self.input_size, self.input_size):
            raise ModelContractError(
                f"landmarks68 model {self.source}: input must be N×3×{self.input_size}×"
                f"{self.input_size}, got {_shape_text(self.input_shape)}"
            )
        shape = self.outputs[0].shape
        width = _known(shape[-1]) if shape else None
        if len(shape) != 2 or (width is not None and (width % 3 or width < 3 * self.num_points)):
            raise ModelContractError(
                f"landmarks68 model {self.source}: output must be (N, 3·k) with k ≥ "
                f"{self.num_points} (1k3d68: N×3309), got {_shape_text(shape)}"
            )

    def crop_matrix(self, bbox: np.ndarray) -> np.ndarray:
        """2×3 affine from source pixels to the 192 crop centred on the box centre."""
        x1, y1, x2, y2 = (float(v) for v in bbox)
        side = max(x2 - x1, y2 - y1, 1e-6)
        scale = self.input_size / (self.box_scale * side)
        half = self.input_size / 2.0
        centre_x, centre_y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        return np.array(
            [[scale, 0.0, half - scale * centre_x], [0.0, scale, half - scale * centre_y]],
            dtype=np.float64,
        )

    def crop(self, image_bgr: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        matrix = self.crop_matrix(bbox)
        size = self.input_size
        crop = cv2.warpAffine(
            image_bgr, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0
        )
        return crop, matrix

    def predict(self, crops: Sequence[np.ndarray], matrices: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 68, 3) points in source pixels (z scaled like x and y) for N crops."""
        if not crops:
            return np.zeros((0, self.num_points, 3), np.float32)
        raw = np.asarray(self.run(self.blob(crops))[0], dtype=np.float64)
        raw = raw.reshape(len(crops), -1)
        if raw.shape[1] % 3 or raw.shape[1] < 3 * self.num_points:
            raise ModelContractError(
                f"landmarks68 model {self.source}: output has {raw.shape[1]} values per face, "
                f"needs 3·k with k ≥ {self.num_points}"
            )
        points = raw.reshape(len(crops), -1, 3)[:, -self.num_points :, :]
        half = self.input_size / 2.0
        result = np.empty_like(points)
        for index, matrix in enumerate(matrices):
            inverse = invert_affine(matrix)
            crop_xy = (points[index, :, :2] + 1.0) * half
            result[index, :, :2] = transform_points(inverse, crop_xy)
            result[index, :, 2] = points[index, :, 2] * half / matrix[0, 0]
        return result.astype(np.float32)


class ArcFaceEmbedder(OnnxModel):
    """ArcFace recogniser (w600k_r50, w600k_mbf, glintr100) on the 112×112 5-point crop.

    Contract: input N×3×112×112 (N dynamic or fixed), RGB, (pixel − 127.5) / 127.5; one output
    (N, D) (512 for the insightface packs); embeddings are L2-normalised here.
    """

    role: ClassVar[str] = "embedder"
    normalisation: ClassVar[InputNormalisation] = InputNormalisation(mean=127.5, std=127.5)
    input_size: ClassVar[int] = 112
    max_batch: ClassVar[int] = 256  # faces per session run, to bound memory on huge batches

    def validate(self) -> None:
        fixed = self.fixed_size
        if fixed is not None and fixed != (self.input_size, self.input_size):
            raise ModelContractError(
                f"embedder {self.source}: input must be N×3×{self.input_size}×"
                f"{self.input_size}, got {_shape_text(self.input_shape)}"
            )
        shape = self.outputs[0].shape
        if len(shape) != 2:
            raise ModelContractError(
                f"embedder {self.source}: output must be (N, D), got {_shape_text(shape)}"
            )
        dim = _known(shape[1])
        if dim is None:  # dynamic embedding width: ask the graph once
            probe = np.zeros((1, 3, self.input_size, self.input_size), np.float32)
            dim = int(np.asarray(self.run(probe)[0]).reshape(1, -1).shape[1])
        self.embedding_dim: int = dim

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of N uint8 112×112 BGR crops."""
        if not crops:
            return np.zeros((0, self.embedding_dim), np.float32)
        parts = []
        for start in range(0, len(crops), self.max_batch):
            chunk = crops[start : start + self.max_batch]
            parts.append(
                np.asarray(self.run(self.blob(chunk))[0], np.float32).reshape(len(chunk), -1)
            )
        vectors = np.concatenate(parts)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class PackFiles:
    detector: Path
    landmarks: Path
    recogniser: Path


def _find(directory: Path, patterns: Sequence[str]) -> Path | None:
    for pattern in patterns:
        hits = sorted(p for p in directory.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    return None


def locate_pack(models_dir: Path, pack: str) -> PackFiles:
    """The three model files of `models_dir/pack`, or one ModelPackError saying what is missing."""
    pack_dir = models_dir / pack
    roles = (
        ("detector (SCRFD with keypoints)", DETECTOR_FILES),
        ("landmarks68 (3-D 68 points)", LANDMARK_FILES),
        ("embedder (ArcFace)", RECOGNISER_FILES),
    )
    found = [_find(pack_dir, patterns) if pack_dir.is_dir() else None for _, patterns in roles]
    if all(path is not None for path in found):
        return PackFiles(*found)  # type: ignore[arg-type]

    if not models_dir.is_dir():
        problem = f"models directory {models_dir} does not exist"
    elif not pack_dir.is_dir():
        problem = f"model pack folder {pack_dir} does not exist"
    else:
        problem = f"model pack {pack!r} in {pack_dir} is incomplete"
    lines = [f"insightface {problem}. Expected in {pack_dir}:"]
    for (label, patterns), path in zip(roles, found, strict=True):
        status = f"found {path.name}" if path is not None else "MISSING"
        lines.append(f"  - {label}: {' or '.join(patterns)} — {status}")
    if pack_dir.is_dir():
        present = sorted(p.name for p in pack_dir.iterdir() if p.is_file())
        lines.append(f"  files there: {', '.join(present) if present else 'none'}")
    # Two common slips: --models naming the pack folder itself, or a zip unpacked one level deep.
    if models_dir.is_dir() and models_dir.name == pack and _find(models_dir, DETECTOR_FILES):
        lines.append(f"  {models_dir} itself holds the pack: pass its parent, {models_dir.parent}")
    nested = pack_dir / pack
    if nested.is_dir() and _find(nested, DETECTOR_FILES):
        lines.append(
            f"  the files are one level too deep, in {nested}: move them up into {pack_dir}"
        )
    lines.append(
        f"To get it: download {pack}.zip from {RELEASES_URL} (buffalo_l.zip: release v0.7) and "
        f"unzip it into {pack_dir} (mkdir -p {pack_dir} && unzip {pack}.zip -d {pack_dir}) so that "
        f"{pack_dir / DETECTOR_FILES[0]} exists. The insightface Python package keeps the same "
        f"layout under {DEFAULT_MODELS_DIR} (the default models directory). The weights are for "
        f"non-commercial research use only."
    )
    raise ModelPackError("\n".join(lines))


class InsightFacePack(FaceAnalyzer):
    """FaceAnalyzer over an insightface pack: SCRFD boxes + 5 points, 1k3d68 68 points, ArcFace."""

    name = "insightface"

    def __init__(
        self,
        models_dir: str | Path = DEFAULT_MODELS_DIR,
        pack: str = "buffalo_l",
        device: str = "auto",
        det_size: int = 640,
        det_threshold: float = 0.5,
        runtime: str = "auto",
    ) -> None:
        self.models_dir = Path(models_dir).expanduser()
        self.pack = pack
        self.files = locate_pack(self.models_dir, pack)
        wanted = resolve_providers(device)  # type: ignore[arg-type]
        self.detector = ScrfdDetector(
            self.files.detector, providers=wanted, det_size=det_size, threshold=det_threshold
        )
        self.landmarker = Landmark3D68(self.files.landmarks, providers=wanted)
        # The recogniser is the pack's largest network per face: it runs where curate.faces.runtimes
        # says large models run best (OpenVINO on a CPU, when installed).
        self.embedder = ArcFaceEmbedder(self.files.recogniser, providers=wanted, runtime=runtime)
        self.embedding_dim: int = self.embedder.embedding_dim

    @property
    def providers(self) -> list[str]:
        """Providers the sessions actually run on (union, in order of first use)."""
        used: list[str] = []
        for model in (self.detector, self.landmarker, self.embedder):
            used += [p for p in model.providers if p not in used]
        return used

    @property
    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                role=model.role,
                name=f"{self.pack}/{Path(model.source).name}",
                licence=LICENCE,
                runtime=model.runtime,
            )
            for model in (self.detector, self.landmarker, self.embedder)
        ]

    def locate(self, image_bgr: np.ndarray) -> list[LocatedFace]:
        """SCRFD boxes and 5 points, then 68 points from 1k3d68 for all faces of the image.

        onnxruntime sessions may be run from several threads at once, so this is thread-safe.
        """
        if (
            not isinstance(image_bgr, np.ndarray)
            or image_bgr.dtype != np.uint8
            or image_bgr.ndim != 3
            or image_bgr.shape[2] != 3
        ):
            shape = getattr(image_bgr, "shape", None)
            dtype = getattr(image_bgr, "dtype", type(image_bgr).__name__)
            raise ValueError(f"expected a uint8 H×W×3 BGR image, got {dtype} {shape}")
        found = self.detector.detect(image_bgr)
        if not len(found):
            return []
        crops, matrices = zip(*(self.landmarker.crop(image_bgr, box) for box in found.boxes))
        points68 = self.landmarker.predict(list(crops), list(matrices))
        faces = [
            LocatedFace(
                bbox=found.boxes[j].astype(np.float32),
                det_score=float(found.scores[j]),
                landmarks5=found.keypoints[j].astype(np.float32),
                landmarks68=points68[j, :, :2].astype(np.float32),
            )
            for j in range(len(found))
        ]
        return sorted(faces, key=lambda face: -face.det_score)

    def embed(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.embedder.embed(crops_bgr)
