"""Choose onnxruntime execution providers: CUDA when asked for (or 'auto' and present), else CPU."""

from __future__ import annotations

import logging
from typing import Literal

from curate.errors import FacesmithError

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def resolve_providers(device: Device = "auto", available: list[str] | None = None) -> list[str]:
    """Providers to pass to an InferenceSession, best first.

    'cuda' without a CUDA build falls back to CPU with a warning rather than failing, because a
    long unattended scan is better slow than not at all; the providers actually used are
    recorded per run so the fallback is visible afterwards.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise FacesmithError(f"unknown device {device!r}: use auto, cpu or cuda")
    available = available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        logger.warning("CUDA was asked for but onnxruntime has no CUDA provider here; using CPU")
    return [CPU]
