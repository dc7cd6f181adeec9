"""Graph rewrites that make the shipped int8 embedder fast on a CPU without changing its output.

The embedded SFace model ships block-quantised int8 weights for size. onnxruntime runs the same
network faster from fp32 weights (folded once at load), with a dynamic batch axis so a scan embeds
all faces of a batch in one call, and with each PRelu spelled as ops that onnxruntime's blocked
(NCHWc) convolution layout keeps: its PRelu kernel forces a layout reorder around every call and
took half of the run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def dequantize_blocks(
    quantized: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, axis: int, block: int
) -> np.ndarray:
    """(q − zero_point) · scale, where each scale covers `block` consecutive elements on `axis`.

    block == 0 means per-axis (or per-tensor, for scalar scales) quantisation.
    """
    quantized = quantized.astype(np.float32)
    zero = np.zeros_like(scales) if zero_points is None else zero_points
    if block > 0:
        scales = np.repeat(scales, block, axis=axis)
        zero = np.repeat(zero, block, axis=axis)
        keep = [slice(None)] * quantized.ndim
        keep[axis] = slice(0, quantized.shape[axis])
        scales, zero = scales[tuple(keep)], zero[tuple(keep)]
    elif scales.ndim == 1 and quantized.ndim > 1:
        shape = [1] * quantized.ndim
        shape[axis] = -1
        scales, zero = scales.reshape(shape), zero.reshape(shape)
    return ((quantized - zero.astype(np.float32)) * scales.astype(np.float32)).astype(np.float32)


def fold_weight_dequantization(model: onnx.ModelProto, batch_axis_name: str = "batch") -> onnx.ModelProto:
    """A copy of `model` with constant DequantizeLinear/Reshape folded into fp32 initializers.

    Graph inputs that are really weights are dropped, and the first axis of the remaining inputs
    and of the outputs is renamed to a dynamic `batch_axis_name`.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    kept = []
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs_constant = all(name in constants for name in node.input if name)
        if node.op_type == "DequantizeLinear" and inputs_constant:
            quantized, scales = constants[node.input[0]], constants[node.input[1]]
            zero = constants[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            constants[node.output[0]] = dequantize_blocks(
                quantized, scales, zero, attributes.get("axis", 1), attributes.get("block_size", 0)
            )
        elif node.op_type == "Reshape" and inputs_constant:
            constants[node.output[0]] = constants[node.input[0]].reshape(constants[node.input[1]])
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(
        numpy_helper.from_array(np.asarray(value), name)
        for name, value in constants.items()
        if name in used
    )
    weights = {tensor.name for tensor in graph.initializer}
    real_inputs = [value for value in graph.input if value.name in used and value.name not in weights]
    del graph.input[:]
    graph.input.extend(real_inputs)
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = batch_axis_name
    return model


def expand_prelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every PRelu of constant per-channel slope s rewritten as
    (1 − s)·Relu(x) + s·x, the two scalings as BatchNormalization (scale only), which
    onnxruntime runs in the blocked layout. Mathematically equal; numerically within float32
    rounding."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    nodes = []
    for node in graph.node:
        slope_name = node.input[1] if node.op_type == "PRelu" else None
        if slope_name not in constants or numpy_helper.to_array(constants[slope_name]).size < 2:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        slope = numpy_helper.to_array(constants[slope_name]).reshape(-1).astype(np.float32)
        channels = slope.size
        graph.initializer.extend([
            numpy_helper.from_array(1.0 - slope, f"{y}/relu_scale"),
            numpy_helper.from_array(slope, f"{y}/linear_scale"),
            numpy_helper.from_array(np.zeros(channels, np.float32), f"{y}/zeros"),
            numpy_helper.from_array(np.ones(channels, np.float32), f"{y}/ones"),
        ])
        scale_only = [f"{y}/zeros", f"{y}/zeros", f"{y}/ones"]  # bias, mean, variance
        nodes += [
            helper.make_node("Relu", [x], [f"{y}/relu"]),
            helper.make_node("BatchNormalization", [f"{y}/relu", f"{y}/relu_scale", *scale_only],
                             [f"{y}/relu_scaled"], epsilon=0.0),
            helper.make_node("BatchNormalization", [x, f"{y}/linear_scale", *scale_only],
                             [f"{y}/linear_scaled"], epsilon=0.0),
            helper.make_node("Add", [f"{y}/relu_scaled", f"{y}/linear_scaled"], [y]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def load_fp32(path: Path) -> bytes:
    """The serialised fp32 graph of an int8 weight-quantised ONNX file, with a dynamic batch."""
    return fold_weight_dequantization(onnx.load(str(path))).SerializeToString()


def load_fast_fp32(path: Path) -> bytes:
    """load_fp32 with onnxruntime-friendly PRelu (see expand_prelu)."""
    return expand_prelu(fold_weight_dequantization(onnx.load(str(path)))).SerializeToString()


def load_yunet_fp32(path: Path) -> bytes:
    """The YuNet detector as fp32 with dynamic height and width (its reshapes are size-free)."""
    model = fold_weight_dequantization(onnx.load(str(path)))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "anchors"
    return model.SerializeToString()
