"""Where an ONNX graph runs: onnxruntime (CPU or CUDA providers) or OpenVINO's CPU plugin.

onnxruntime is the default everywhere and the only runtime for the GPU. On a CPU, OpenVINO runs
the large embedders several times faster: it computes in bfloat16 on processors with AMX or
AVX-512 BF16 (5× onnxruntime's fp32 for SFace here, embeddings 0.999+ cosine to fp32), and its
fp32 kernels beat onnxruntime's on the same graph (1.5×). Small graphs such as the YuNet detector
stay on onnxruntime, which is faster for them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import numpy as np

from curate.errors import FacesmithError, ModelPackError
from curate.faces.providers import CUDA

logger = logging.getLogger(__name__)

Runtime = Literal["auto", "onnxruntime", "openvino"]
RUNTIMES: tuple[str, ...] = ("auto", "onnxruntime", "openvino")


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: its name and shape, each dimension a size or a symbolic name."""

    name: str
    shape: tuple[int | str | None, ...]


class GraphRunner(Protocol):
    """One loaded graph with a single input, safe to run from several threads at once."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    providers: list[str]  # what runs it, e.g. ['CPUExecutionProvider'] or ['OpenVINO/CPU/bf16']

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: str, providers: Sequence[str], have_openvino: bool) -> str:
    """The runtime a large model gets: 'auto' takes onnxruntime's CUDA provider when it is in
    `providers`, else OpenVINO when installed, else onnxruntime on the CPU."""
    if runtime not in RUNTIMES:
        raise FacesmithError(f"unknown runtime {runtime!r}: use {', '.join(RUNTIMES)}")
    on_gpu = CUDA in providers
    if runtime == "openvino":
        if on_gpu:
            raise FacesmithError("the OpenVINO runtime runs on the CPU: use --device cpu with it, "
                                 "or --runtime onnxruntime for the GPU")
        if not have_openvino:
            raise FacesmithError("--runtime openvino needs the 'openvino' package: "
                                 "pip install 'facesmith[cpu]' (or pip install openvino)")
        return "openvino"
    if runtime == "onnxruntime" or on_gpu or not have_openvino:
        return "onnxruntime"
    return "openvino"


class OnnxRuntimeRunner:
    """An onnxruntime InferenceSession (thread-safe for run)."""

    def __init__(self, model: str | bytes, providers: Sequence[str], threads: int | None, label: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
        # Scans run models beside decoding threads; spinning idle workers would steal their cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if CUDA in providers and hasattr(onnxruntime, "preload_dlls"):
            # Load CUDA and cuDNN from the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]) before
            # the first session, so a machine with only the driver still gets the GPU.
            onnxruntime.preload_dlls()
        try:
            self.session = onnxruntime.InferenceSession(model, options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own untyped errors for bad graphs
            raise ModelPackError(f"cannot load {label}: {error}") from error
        self.providers = list(self.session.get_providers())
        self.inputs = [TensorInfo(i.name, tuple(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, tuple(o.shape)) for o in self.session.get_outputs()]
        self._output_names = [output.name for output in self.outputs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._output_names, {self.inputs[0].name: batch})


def openvino_precision(capabilities: Sequence[str]) -> str:
    """bf16 where the CPU computes it natively (AMX, AVX-512 BF16), else f32."""
    return "bf16" if "BF16" in capabilities else "f32"


class OpenVinoRunner:
    """A graph compiled by OpenVINO for the CPU; each calling thread gets its own infer request."""

    def __init__(self, model: str | bytes, threads: int | None, label: str) -> None:
        import openvino

        core = openvino.Core()
        self.precision = openvino_precision(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        config = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            # The scan's own threads share these cores; pinned inference threads would fight them.
            "ENABLE_CPU_PINNING": False,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(core.read_model(model), "CPU", config)
        except Exception as error:  # OpenVINO raises RuntimeError for anything it cannot read or build
            raise ModelPackError(f"cannot load {label} with OpenVINO: {error}") from error
        self.providers = [f"OpenVINO/CPU/{self.precision}"]
        self.inputs = [TensorInfo(port.get_any_name(), _dims(port)) for port in self.compiled.inputs]
        self.outputs = [TensorInfo(port.get_any_name(), _dims(port)) for port in self.compiled.outputs]
        self._local = threading.local()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        results = request.infer({0: batch})
        # The request reuses its output buffers on the next call: hand back copies.
        return [np.array(results[port]) for port in self.compiled.outputs]


def _dims(port) -> tuple[int | str, ...]:
    return tuple(dim.get_length() if dim.is_static else "?" for dim in port.get_partial_shape())
