"""One base for every ONNX model: loading on a runtime, providers, input contract and normalisation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import cv2
import numpy as np

from curate.errors import ModelContractError, ModelPackError
from curate.faces.providers import resolve_providers
from curate.faces.runtimes import (
    GraphRunner,
    OnnxRuntimeRunner,
    OpenVinoRunner,
    TensorInfo,
    openvino_available,
    resolve_runtime,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputNormalisation:
    """pixel_in_model = (pixel - mean) / std, per channel, after an optional BGR->RGB swap."""

    mean: float = 0.0
    std: float = 1.0
    swap_rb: bool = True


class OnnxModel:
    """A wrapper around one loaded graph (see curate.faces.runtimes) with a declared input/output contract.

    Subclasses state `role`, the expected input rank and spatial size (None where dynamic) and
    the number of outputs; shapes only validate, they never select a behaviour.
    """

    role: ClassVar[str] = "model"
    input_channels: ClassVar[int] = 3
    min_outputs: ClassVar[int] = 1
    normalisation: ClassVar[InputNormalisation] = InputNormalisation()

    def __init__(
        self,
        model: str | Path | bytes,
        device: str = "auto",
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        runtime: str = "onnxruntime",
    ) -> None:
        self.source = "<memory>" if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise ModelPackError(f"{self.role} model not found: {model}")
        wanted = list(providers) if providers else resolve_providers(device)
        source = model if isinstance(model, bytes) else str(model)
        label = f"{self.role} model {self.source}"
        self.runtime = resolve_runtime(runtime, wanted, runtime != "onnxruntime" and openvino_available())
        self.runner: GraphRunner
        if self.runtime == "openvino":
            try:
                self.runner = OpenVinoRunner(source, threads, label)
            except ModelPackError as error:
                if runtime == "openvino":  # asked for by name: say so rather than quietly run elsewhere
                    raise
                logger.warning("%s; running it on onnxruntime instead", error)
                self.runtime = "onnxruntime"
        if self.runtime == "onnxruntime":
            self.runner = OnnxRuntimeRunner(source, wanted, threads, label)
            if wanted[0] not in self.runner.providers:
                logger.warning("%s: asked for %s, running on %s", self.role, wanted[0], self.runner.providers[0])
        self.providers: list[str] = list(self.runner.providers)
        inputs = self.runner.inputs
        if len(inputs) != 1:
            raise ModelContractError(
                f"{self.role} model {self.source} must have 1 input, has {len(inputs)}"
            )
        self.input_name: str = inputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.outputs: list[TensorInfo] = list(self.runner.outputs)
        self.output_names: list[str] = [output.name for output in self.outputs]
        if len(self.input_shape) != 4 or self.input_shape[1] != self.input_channels:
            raise ModelContractError(
                f"{self.role} model {self.source}: input must be N×{self.input_channels}×H×W, "
                f"got {self.input_shape}"
            )
        if len(self.output_names) < self.min_outputs:
            raise ModelContractError(
                f"{self.role} model {self.source}: needs ≥{self.min_outputs} outputs, "
                f"has {len(self.output_names)}"
            )
        self.validate()

    def validate(self) -> None:
        """Subclasses check their own contract here and raise ModelContractError."""

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) when the graph fixes them, else None."""
        height, width = self.input_shape[2], self.input_shape[3]
        if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
            return height, width
        return None

    @property
    def fixed_batch(self) -> int | None:
        batch = self.input_shape[0]
        return batch if isinstance(batch, int) and batch > 0 else None

    def blob(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 H×W×3 BGR images of one size -> float32 N×3×H×W, normalised for this model."""
        # OpenCV's blob maker converts, swaps, normalises and transposes in one C++ pass: 4× faster
        # than the same steps in numpy on a detector's 640×480 input.
        norm = self.normalisation
        images = [np.ascontiguousarray(image) for image in images_bgr]
        return cv2.dnn.blobFromImages(images, scalefactor=1.0 / norm.std, mean=(norm.mean,) * 3,
                                      swapRB=norm.swap_rb, crop=False)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph on a prepared N×C×H×W batch; splits it when the graph fixes N."""
        fixed = self.fixed_batch
        if fixed is None or batch.shape[0] == fixed:
            return self.runner.run(batch)
        parts = [self.runner.run(batch[i : i + 1]) for i in range(batch.shape[0])]
        return [np.concatenate([part[k] for part in parts]) for k in range(len(self.output_names))]
