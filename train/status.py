"""What a model folder says about its training: phase, iterations, speed, loss trend, advice, rollbacks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from train.checkpoint import list_checkpoints
from train.history import ModelHistory
from train.model_folder import open_model_folder
from train.plateau import detect_plateau

RECENT_ITERATIONS = 100


@dataclass(frozen=True)
class TrainStatus:
    """A model folder's state, for `facesmith train status` (read-only; TensorFlow never imported)."""

    model_dir: str
    phase: str
    iteration: int
    checkpoints: list[int]  # newest first
    ms_per_iteration: float | None  # median over the last 100 iterations
    src_loss: float | None  # mean over the last 100 iterations
    dst_loss: float | None
    last_src_loss: float | None  # the last iteration's, what `train run` reports as it stops
    last_dst_loss: float | None
    trend_per_decade: float | None  # fractional loss change per ×10 iterations in this phase
    plateaued: bool
    advice: str
    rollbacks: list[str]  # "at N: reason" for every rollback
    sessions: int
    architecture: str
    resolution: int
    best_iteration: int | None  # the best held-out result so far (from periodic evaluations)
    flag: str | None  # e.g. the overtraining warning of the latest evaluation, None when clear
    device: str | None  # where the latest session trained (device, strategy and replicas), None before any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _last(values: np.ndarray) -> float | None:
    return float(values[-1]) if values.size and np.isfinite(values[-1]) else None


def training_status(model_dir: Path) -> TrainStatus:
    """The status of the model at `model_dir` (a clear error when it is not a model folder)."""
    model_dir = Path(model_dir)
    folder = open_model_folder(model_dir)
    history = ModelHistory(model_dir, read_only=True) if folder.history_file.is_file() else None
    if not folder.exists or history is None:
        from train.model_folder import ModelFolderError

        raise ModelFolderError(f"{model_dir} is not a model folder: train one with 'facesmith train run'")
    try:
        config = folder.config()
        iterations, losses, ms = history.losses()
        row = history.connection.execute(
            "SELECT phase FROM history ORDER BY iteration DESC LIMIT 1").fetchone()
        phase = row[0] if row else config.phase
        phase_iterations, phase_losses, _ = history.losses(phase=phase)
        verdict = detect_plateau(phase_iterations, phase_losses, phase, config.plateau_min_iterations,
                                 threshold=config.plateau_threshold, phase_start=history.phase_start(phase))
        recent = slice(-RECENT_ITERATIONS, None)
        sessions = int(history.connection.execute("SELECT count(*) FROM sessions").fetchone()[0])
        latest = history.connection.execute(
            "SELECT device FROM sessions ORDER BY session_id DESC LIMIT 1").fetchone()
        rollbacks = [f"at {iteration}: {detail}" for iteration, _, detail in history.events("rollback")]
        return TrainStatus(
            model_dir=str(model_dir), phase=phase,
            iteration=int(iterations[-1]) if iterations.size else 0,
            checkpoints=list_checkpoints(model_dir),
            ms_per_iteration=float(np.median(ms[recent])) if ms.size else None,
            src_loss=_mean(losses[recent, 0]) if losses.size else None,
            dst_loss=_mean(losses[recent, 1]) if losses.size else None,
            last_src_loss=_last(losses[:, 0]) if losses.size else None,
            last_dst_loss=_last(losses[:, 1]) if losses.size else None,
            trend_per_decade=None if verdict.trend is None else verdict.trend.relative_slope,
            plateaued=verdict.plateaued, advice=verdict.advice, rollbacks=rollbacks, sessions=sessions,
            architecture=config.archi, resolution=config.resolution,
            best_iteration=int(history.meta("best_iteration")) if history.meta("best_iteration") else None,
            flag=history.meta("flag") or None, device=latest[0] if latest else None)
    finally:
        history.close()
