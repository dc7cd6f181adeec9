"""Tiny ONNX graphs with the same input/output signatures as insightface's buffalo_l models.

They compute something simple and predictable from their input so tests can run the real
onnxruntime path end to end:

* `scrfd_graph` — SCRFD-shaped detector (input 1×3×H×W, 9 outputs: scores, boxes, keypoints
  for strides 8/16/32, two anchors per cell). The score of an anchor is
  sigmoid(sharpness · (mean of the normalised grey image over a `window`×`window` square centred
  on the anchor − level)), so a bright square of side `window` (in detector-input pixels) centred
  on an anchor scores ≈ 1 there. Boxes and keypoints are constant distances (in pixels,
  divided by the stride as SCRFD emits them).
* `landmark_graph` — 1k3d68-shaped (N×3×192×192 → N×3309): a fixed pattern
  (`landmark_pattern`) in the last 68 triples, except point `CENTROID_POINT`, whose x, y are the
  brightness-weighted centroid of the crop in the −1..1 crop space (so crop and inverse crop can
  be checked).
* `arcface_graph` — recogniser-shaped (N×3×112×112 → N×D): 4×4 average pool, flatten, and a
  seeded random projection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
STRIDES = (8, 16, 32)
ANCHORS = 2
LANDMARK_OUTPUT = 3309
CENTROID_POINT = 30  # nose tip in the iBUG-68 layout

# Keypoint offsets from the anchor centre in detector-input pixels: eyes, nose, mouth corners.
DEFAULT_KEYPOINTS = ((-12.0, -8.0), (12.0, -8.0), (0.0, 4.0), (-10.0, 16.0), (10.0, 16.0))


def _model(nodes, inputs, outputs, initializers, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _ints(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)


def scrfd_graph(
    *,
    input_size: int | None = None,
    box: Sequence[float] = (32.0, 32.0, 32.0, 32.0),
    keypoints: Sequence[Sequence[float]] = DEFAULT_KEYPOINTS,
    window: int = 64,
    sharpness: float = 20.0,
    level: float = 0.5,
    with_keypoints: bool = True,
    batch_in_outputs: bool = False,
) -> onnx.ModelProto:
    """An SCRFD-shaped detector; `box` = (left, top, right, bottom) distances in input pixels."""
    height = input_size if input_size else "height"
    width = input_size if input_size else "width"
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, height, width])
    half = window // 2
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["grey"], axes=[1], keepdims=1)]
    inits = [
        _const("level", level),
        _const("sharpness", sharpness),
        _const("zero", 0.0),
        _ints("shape_scores", [1, -1, 1] if batch_in_outputs else [-1, 1]),
        _ints("shape_boxes", [1, -1, 4] if batch_in_outputs else [-1, 4]),
        _ints("shape_kps", [1, -1, 10] if batch_in_outputs else [-1, 10]),
    ]
    score_outs, box_outs, kps_outs = [], [], []
    for stride in STRIDES:
        s = str(stride)
        nodes += [
            # A window×window mean centred on each anchor (x·stride, y·stride): H/stride outputs.
            helper.make_node(
                "AveragePool",
                ["grey"],
                [f"pool{s}"],
                kernel_shape=[window, window],
                strides=[stride, stride],
                pads=[half, half, half - stride, half - stride],
            ),
            helper.make_node("Sub", [f"pool{s}", "level"], [f"centred{s}"]),
            helper.make_node("Mul", [f"centred{s}", "sharpness"], [f"logit{s}"]),
            helper.make_node("Sigmoid", [f"logit{s}"], [f"prob{s}"]),
            helper.make_node("Concat", [f"prob{s}"] * ANCHORS, [f"probs{s}"], axis=1),
            helper.make_node("Transpose", [f"probs{s}"], [f"probs_t{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"probs_t{s}", "shape_scores"], [f"score_{s}"]),
            helper.make_node("Mul", [f"pool{s}", "zero"], [f"nil{s}"]),
            helper.make_node("Add", [f"nil{s}", f"box_const{s}"], [f"box_map{s}"]),
            helper.make_node("Transpose", [f"box_map{s}"], [f"box_t{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"box_t{s}", "shape_boxes"], [f"bbox_{s}"]),
        ]
        distances = np.tile(np.asarray(box, np.float32) / stride, ANCHORS)
        inits.append(_const(f"box_const{s}", distances.reshape(1, 4 * ANCHORS, 1, 1)))
        score_outs.append(f"score_{s}")
        box_outs.append(f"bbox_{s}")
        if with_keypoints:
            nodes += [
                helper.make_node("Add", [f"nil{s}", f"kps_const{s}"], [f"kps_map{s}"]),
                helper.make_node("Transpose", [f"kps_map{s}"], [f"kps_t{s}"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"kps_t{s}", "shape_kps"], [f"kps_{s}"]),
            ]
            offsets = np.tile(np.asarray(keypoints, np.float32).reshape(10) / stride, ANCHORS)
            inits.append(_const(f"kps_const{s}", offsets.reshape(1, 10 * ANCHORS, 1, 1)))
            kps_outs.append(f"kps_{s}")

    def out(name: str, width_: int) -> onnx.ValueInfoProto:
        shape = [1, f"K_{name}", width_] if batch_in_outputs else [f"K_{name}", width_]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    outputs = [out(n, 1) for n in score_outs] + [out(n, 4) for n in box_outs]
    outputs += [out(n, 10) for n in kps_outs]
    return _model(nodes, [image], outputs, inits, "scrfd_like")


def landmark_pattern() -> np.ndarray:
    """(68, 3) points in crop space −1..1 that `landmark_graph` emits (x, y of the centroid point
    are replaced by the crop's brightness centroid)."""
    angles = np.linspace(0.0, 2.0 * np.pi, 68, endpoint=False)
    radius = 0.2 + 0.2 * (np.arange(68) % 3) / 2.0
    pattern = np.stack(
        [radius * np.cos(angles), radius * np.sin(angles), np.arange(68) / 680.0], axis=1
    )
    pattern[CENTROID_POINT, :2] = 0.0
    return pattern.astype(np.float32)


def landmark_graph(
    *, size: int = 192, batch: int | None = None, outputs: int = LANDMARK_OUTPUT
) -> onnx.ModelProto:
    """A 1k3d68-shaped landmark model (input N×3×size×size, raw 0..255 RGB in)."""
    n = batch if batch else "None"
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, [n, 3, size, size])
    result = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [n, outputs])
    grid = (np.arange(size, dtype=np.float32) - size / 2.0) / (size / 2.0)
    pattern = np.full(outputs, 5.0, np.float32)  # leading values that must be skipped
    unit_x = np.zeros((1, outputs), np.float32)
    unit_y = np.zeros((1, outputs), np.float32)
    if outputs >= 68 * 3:  # (a smaller output only serves to test the contract check)
        pattern[-68 * 3 :] = landmark_pattern().reshape(-1)
        index = outputs - 68 * 3 + 3 * CENTROID_POINT
        unit_x[0, index] = 1.0
        unit_y[0, index + 1] = 1.0
    inits = [
        _const("grid_x", np.broadcast_to(grid[None, :], (size, size)).reshape(1, 1, size, size)),
        _const("grid_y", np.broadcast_to(grid[:, None], (size, size)).reshape(1, 1, size, size)),
        _const("eps", 1e-6),
        _const("pattern", pattern.reshape(1, outputs)),
        _const("unit_x", unit_x),
        _const("unit_y", unit_y),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("ReduceMean", ["grey"], ["mass"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Add", ["mass", "eps"], ["mass_eps"]),
        helper.make_node("Mul", ["grey", "grid_x"], ["grey_x"]),
        helper.make_node("Mul", ["grey", "grid_y"], ["grey_y"]),
        helper.make_node("ReduceMean", ["grey_x"], ["moment_x"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("ReduceMean", ["grey_y"], ["moment_y"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Div", ["moment_x", "mass_eps"], ["cx4"]),
        helper.make_node("Div", ["moment_y", "mass_eps"], ["cy4"]),
        helper.make_node("Flatten", ["cx4"], ["cx"], axis=1),
        helper.make_node("Flatten", ["cy4"], ["cy"], axis=1),
        helper.make_node("Mul", ["cx", "unit_x"], ["part_x"]),
        helper.make_node("Mul", ["cy", "unit_y"], ["part_y"]),
        helper.make_node("Add", ["part_x", "part_y"], ["parts"]),
        helper.make_node("Add", ["parts", "pattern"], ["fc1"]),
    ]
    return _model(nodes, [image], [result], inits, "landmark_like")


def arcface_graph(
    *, size: int = 112, dim: int = 512, seed: int = 0, batch: int | None = None
) -> onnx.ModelProto:
    """An ArcFace-shaped recogniser: average pool 4×4, flatten, seeded random projection."""
    n = batch if batch else "None"
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [n, 3, size, size])
    result = helper.make_tensor_value_info("683", TensorProto.FLOAT, [n, dim])
    features = 3 * (size // 4) ** 2
    projection = np.random.default_rng(seed).standard_normal((features, dim)).astype(np.float32)
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "projection"], ["683"]),
    ]
    inits = [_const("projection", projection / np.sqrt(features))]
    return _model(nodes, [image], [result], inits, "arcface_like")


def write_pack(
    root: Path,
    pack: str = "buffalo_l",
    *,
    detector: onnx.ModelProto | None = None,
    landmarks: onnx.ModelProto | None = None,
    recogniser: onnx.ModelProto | None = None,
    detector_name: str = "det_10g.onnx",
    landmarks_name: str = "1k3d68.onnx",
    recogniser_name: str = "w600k_r50.onnx",
) -> Path:
    """Write the graphs as root/pack/<name> (a None graph leaves its file out); returns root."""
    folder = Path(root) / pack
    folder.mkdir(parents=True, exist_ok=True)
    for model, name in (
        (detector, detector_name),
        (landmarks, landmarks_name),
        (recogniser, recogniser_name),
    ):
        if model is not None:
            onnx.save(model, str(folder / name))
    return Path(root)


def full_pack(root: Path, pack: str = "buffalo_l", **detector_options) -> Path:
    """A complete pack of all three tiny graphs under root/pack."""
    return write_pack(
        root,
        pack,
        detector=scrfd_graph(**detector_options),
        landmarks=landmark_graph(),
        recogniser=arcface_graph(),
    )
