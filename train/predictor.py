"""A trained model's swap function, loaded from a model folder's newest checkpoint (for merging)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.model_folder import read_model_folder


@dataclass(frozen=True)
class SwapResult:
    """The model's answer for a batch of aligned dst faces, float32 NHWC in 0..1."""

    faces: np.ndarray  # (B, R, R, 3) the src identity in the dst pose and expression
    face_masks: np.ndarray  # (B, R, R, 1) learned mask of the predicted face
    dst_masks: np.ndarray  # (B, R, R, 1) learned mask of the dst face


class Predictor:
    """The SAEHD model of a model folder, ready to swap aligned faces."""

    def __init__(self, model_dir: Path, step: int | None = None, model=None, config: TrainConfig | None = None,
                 iteration: int | None = None):
        """Load the newest (or `step`) checkpoint; or wrap an in-memory `model` (merge checks in training).

        Runs on whichever Keras backend this process uses (`train.backend.choose_backend`): a checkpoint
        from any backend loads.
        """
        self.model_dir = Path(model_dir)
        if model is None:
            config = read_model_folder(self.model_dir).config()
            from train.model import SAEHDModel
            from train.shape import model_shape

            model = SAEHDModel(model_shape(config), seed=config.seed)
            expected = {f"model/{name}": tuple(variable.shape) for name, variable in model.named_variables().items()}
            checkpoint = load_checkpoint(self.model_dir, step, expected=expected)
            for name, variable in model.named_variables().items():
                variable.assign(np.asarray(checkpoint.arrays[f"model/{name}"], np.float32))
            iteration = checkpoint.step
        from train.gradients import compiled

        self.config = config
        self.model = model
        self.iteration = int(iteration or 0)
        self._swap = compiled(model.swap, list(model.named_variables().values()))

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def face_type(self) -> str:
        return self.config.face_type

    def swap(self, dst_faces: np.ndarray, batch_size: int = 16) -> SwapResult:
        """Swap (B, R, R, 3) float32 aligned dst faces, in batches."""
        from train.layers import to_host

        parts = []
        for start in range(0, len(dst_faces), batch_size):
            chunk = np.asarray(dst_faces[start:start + batch_size], dtype=np.float32)
            parts.append([to_host(value) for value in self._swap(chunk)])
        if not parts:
            empty = np.zeros((0, self.resolution, self.resolution, 1), np.float32)
            return SwapResult(np.zeros((0, self.resolution, self.resolution, 3), np.float32), empty, empty)
        faces, face_masks, dst_masks = (np.concatenate(column) for column in zip(*parts, strict=True))
        return SwapResult(faces=faces, face_masks=face_masks, dst_masks=dst_masks)
