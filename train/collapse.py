"""Collapse detection for rollback: a non-finite loss, a loss spike far above its recent level, a flat output."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

# Scales a median absolute deviation to the standard deviation of normally distributed values.
_MAD_TO_STD = 1.4826

REASONS: tuple[str, ...] = ("non-finite-loss", "loss-spike", "uniform-output", "non-finite-output")


@dataclass(frozen=True)
class CollapseVerdict:
    """Why training is judged to have collapsed at one iteration."""

    reason: str  # one of REASONS
    detail: str  # a sentence with the numbers behind the verdict
    iteration: int


@dataclass(frozen=True)
class CollapsePolicy:
    """Thresholds for `check_collapse`, each declared once with its help text."""

    spike_factor: float = field(
        default=4.0,
        metadata={
            "help": "A loss above this many times its recent level (median plus a noise margin) "
            "counts as a spike. The collapses users report jump about 200x (0.015 to 3)."
        },
    )
    min_history: int = field(
        default=50,
        metadata={
            "help": "Finite losses per side needed in the recent window before spikes are judged; "
            "earlier the level is not known well enough."
        },
    )
    mad_sigmas: float = field(
        default=3.0,
        metadata={
            "help": "Noise margin added to the recent median, in robust standard deviations "
            "(1.4826 x median absolute deviation), so noisy histories do not raise false spikes."
        },
    )
    uniform_std: float = field(
        default=0.01,
        metadata={
            "help": "A predicted image batch whose pixel standard deviation (values in 0..1) is "
            "below this is a flat, collapsed output (the all-red or all-black preview)."
        },
    )

    def __post_init__(self) -> None:
        if not self.spike_factor > 1.0:
            raise ValueError(f"spike_factor must be > 1, got {self.spike_factor}")
        if self.min_history < 1:
            raise ValueError(f"min_history must be >= 1, got {self.min_history}")
        if not self.mad_sigmas >= 0.0:
            raise ValueError(f"mad_sigmas must be >= 0, got {self.mad_sigmas}")
        if not self.uniform_std >= 0.0:
            raise ValueError(f"uniform_std must be >= 0, got {self.uniform_std}")

    def check(
        self, iteration: int, src_loss: float, dst_loss: float, recent: np.ndarray, output_std: float | None
    ) -> CollapseVerdict | None:
        """`check_collapse` with this policy's thresholds."""
        return check_collapse(
            iteration, src_loss, dst_loss, recent, output_std,
            spike_factor=self.spike_factor, min_history=self.min_history,
            uniform_std=self.uniform_std, mad_sigmas=self.mad_sigmas,
        )

    @classmethod
    def help(cls, name: str) -> str:
        """Help text of the threshold called `name`."""
        for declared in fields(cls):
            if declared.name == name:
                return str(declared.metadata["help"])
        raise ValueError(f"CollapsePolicy has no threshold {name!r}")


def spike_threshold(recent: np.ndarray, spike_factor: float, mad_sigmas: float) -> float:
    """spike_factor × (median + mad_sigmas · 1.4826 · MAD) of the finite values in `recent` (1-D)."""
    values = np.asarray(recent, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("spike threshold needs at least one finite recent loss")
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return spike_factor * (median + mad_sigmas * _MAD_TO_STD * mad)


def check_collapse(
    iteration: int,
    src_loss: float,
    dst_loss: float,
    recent: np.ndarray,
    output_std: float | None,
    spike_factor: float = CollapsePolicy.spike_factor,
    min_history: int = CollapsePolicy.min_history,
    uniform_std: float = CollapsePolicy.uniform_std,
    mad_sigmas: float = CollapsePolicy.mad_sigmas,
) -> CollapseVerdict | None:
    """Judge one iteration; returns the first collapse found, or None when training looks healthy.

    src_loss, dst_loss: this iteration's losses. recent: (M, 2) losses [src, dst] of the
    iterations before this one (non-finite rows are ignored; M may be 0). output_std: standard
    deviation of a predicted image batch (float32 in [0, 1]), or None when not measured this
    iteration. Checks in order: a non-finite loss; a loss above
    spike_factor × (median + mad_sigmas · 1.4826 · MAD) of that side's recent window, judged only
    once the window holds `min_history` finite values; a non-finite or below-`uniform_std` output.
    The thresholds mean what CollapsePolicy's help texts say (`CollapsePolicy.check` passes them).
    """
    policy = CollapsePolicy(spike_factor, min_history, mad_sigmas, uniform_std)  # validates them
    recent = np.asarray(recent, dtype=np.float64)
    if recent.size == 0:
        recent = recent.reshape(0, 2)
    if recent.ndim != 2 or recent.shape[1] != 2:
        raise ValueError(f"recent losses must be (M, 2) [src, dst], got {recent.shape}")

    for side, loss in (("src", src_loss), ("dst", dst_loss)):
        if not math.isfinite(loss):
            return CollapseVerdict("non-finite-loss", f"{side} loss is {loss} at iteration {iteration}", iteration)

    for column, (side, loss) in enumerate((("src", src_loss), ("dst", dst_loss))):
        history = recent[:, column]
        history = history[np.isfinite(history)]
        if history.size < policy.min_history:
            continue
        threshold = spike_threshold(history, policy.spike_factor, policy.mad_sigmas)
        if loss > threshold:
            median = float(np.median(history))
            ratio = f"{loss / median:.1f}x" if median > 0 else "far above"
            detail = (
                f"{side} loss {loss:.4g} at iteration {iteration} is {ratio} its recent median {median:.4g} "
                f"over {history.size} iterations (spike threshold {threshold:.4g})"
            )
            return CollapseVerdict("loss-spike", detail, iteration)

    if output_std is not None:
        if not math.isfinite(output_std):
            detail = f"predicted images contain non-finite values (std {output_std}) at iteration {iteration}"
            return CollapseVerdict("non-finite-output", detail, iteration)
        if output_std < policy.uniform_std:
            detail = (
                f"predicted images are nearly uniform at iteration {iteration}: pixel std {output_std:.4g} "
                f"is below {policy.uniform_std:.4g}"
            )
            return CollapseVerdict("uniform-output", detail, iteration)
    return None
