"""One base for every ONNX model: session creation, providers, input contract and normalisation."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from curate.errors import ModelContractError, ModelPackError
from curate.providers import resolve_providers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputNormalisation:
    """pixel_in_model = (pixel - mean) / std, per channel, after an optional BGR->RGB swap."""

    mean: float = 0.0
    std: float = 1.0
    swap_rb: bool = True


class OnnxModel:
    """A wrapper around one onnxruntime session with a declared input/output contract.

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
    ) -> None:
        import onnxruntime

        self.source = "<memory>" if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise ModelPackError(f"{self.role} model not found: {model}")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
        # Scans run models beside decoding threads; spinning idle workers would steal their cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = list(providers) if providers else resolve_providers(device)
        if "CUDAExecutionProvider" in wanted and hasattr(onnxruntime, "preload_dlls"):
            # Load CUDA and cuDNN from the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]) before
            # the first session, so a machine with only the driver still gets the GPU.
            onnxruntime.preload_dlls()
        try:
            self.session = onnxruntime.InferenceSession(
                model if isinstance(model, bytes) else str(model), options, providers=wanted
            )
        except Exception as error:  # onnxruntime raises its own untyped errors for bad graphs
            raise ModelPackError(f"cannot load {self.role} model {self.source}: {error}") from error
        self.providers: list[str] = list(self.session.get_providers())
        if wanted[0] not in self.providers:
            logger.warning("%s: asked for %s, running on %s", self.role, wanted[0], self.providers[0])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelContractError(
                f"{self.role} model {self.source} must have 1 input, has {len(inputs)}"
            )
        self.input_name: str = inputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.output_names: list[str] = [output.name for output in self.session.get_outputs()]
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
        stack = np.stack(images_bgr).astype(np.float32)
        if self.normalisation.swap_rb:
            stack = stack[..., ::-1]
        stack = (stack - self.normalisation.mean) / self.normalisation.std
        return np.ascontiguousarray(stack.transpose(0, 3, 1, 2))

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph on a prepared N×C×H×W batch; splits it when the graph fixes N."""
        fixed = self.fixed_batch
        if fixed is None or batch.shape[0] == fixed:
            return self.session.run(self.output_names, {self.input_name: batch})
        parts = [
            self.session.run(self.output_names, {self.input_name: batch[i : i + 1]})
            for i in range(batch.shape[0])
        ]
        return [np.concatenate([part[k] for part in parts]) for k in range(len(self.output_names))]
