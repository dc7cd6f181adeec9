"""The training library's error base (framework-free, so option and folder checks can raise it early)."""

from __future__ import annotations

from curate.errors import FacesmithError


class TrainingError(FacesmithError):
    """Training cannot start or cannot go on (no faces, repeated collapse, a mismatched model)."""
