"""Loss trend over log-iterations, plateau detection and the phase advice (RW → LRD → GAN) it gives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

PHASE_ORDER: tuple[str, ...] = ("rw", "lrd", "gan")
_PHASE_TITLES = MappingProxyType({"rw": "RW", "lrd": "LRD", "gan": "GAN"})

# A trend needs at least this many iterations behind it and this many finite samples in its
# window; below that the fit follows the first steep drop or the noise rather than the trend.
MIN_TREND_ITERATIONS = 200
MIN_TREND_SAMPLES = 20
# The window is cut into this many equal slices of log10(iteration); each slice contributes its
# median, so single bad batches and lr_dropout's 500-iteration cosine cycle do not tilt the fit.
TREND_BINS = 16
DEFAULT_WINDOW_FRACTION = 0.5
# Relative fall per decade of iterations below which a phase counts as plateaued (5%).
DEFAULT_PLATEAU_THRESHOLD = 0.05
GAN_POWER_ADVICE = 0.1  # the usual end-of-training GAN strength (DFL #945)


@dataclass(frozen=True)
class LossTrend:
    """Straight-line fit of the smoothed loss against log10(iteration) over a recent window."""

    slope_per_decade: float  # loss units per ×10 iterations; negative while the loss falls
    relative_slope: float  # slope_per_decade / fitted loss at the window's middle: fraction per decade
    level: float  # current smoothed loss: median of the last slice of the window
    window_start: int  # first iteration in the window
    window_end: int  # last iteration in the window (the newest sample)
    samples: int  # finite samples inside the window


@dataclass(frozen=True)
class PlateauVerdict:
    """Whether the current phase has stopped improving, and what to do about it."""

    plateaued: bool
    at_iteration: int | None  # the iteration the plateau was seen at (the newest sample)
    trend: LossTrend | None
    advice: str
    next_phase: str | None  # the phase to move to; None while training on or after GAN


def format_iterations(count: int) -> str:
    """Compact iteration count: 850 → "850", 41000 → "41k", 41500 → "41.5k", 1_200_000 → "1.2M"."""
    if count < 0:
        raise ValueError(f"iteration count must be >= 0, got {count}")
    if count < 1000:
        return str(int(count))
    units = ((1_000, "k"), (1_000_000, "M"), (1_000_000_000, "G"))
    for position, (divisor, suffix) in enumerate(units):
        value = count / divisor
        # One decimal below 100 units, none from there on; rounding can carry into the next unit.
        text = f"{value:.1f}" if value < 99.95 else f"{value:.0f}"
        if float(text) < 1000 or position == len(units) - 1:
            break
    return text.removesuffix(".0") + suffix


def next_phase(phase: str) -> str | None:
    """The phase after `phase` in PHASE_ORDER ("rw" → "lrd" → "gan"), None after "gan"."""
    if phase not in PHASE_ORDER:
        raise ValueError(f"unknown training phase {phase!r}; expected one of {PHASE_ORDER}")
    index = PHASE_ORDER.index(phase)
    return PHASE_ORDER[index + 1] if index + 1 < len(PHASE_ORDER) else None


def _combined_series(iterations: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, per-row mean of the finite series) with rows of no finite loss removed."""
    iterations = np.asarray(iterations, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim == 1:
        losses = losses[:, None]
    if iterations.ndim != 1 or losses.ndim != 2 or losses.shape[0] != iterations.shape[0]:
        raise ValueError(
            f"loss trend needs iterations (N,) and losses (N,) or (N, K); got {iterations.shape} "
            f"and {losses.shape}"
        )
    finite = np.isfinite(losses)
    counts = finite.sum(axis=1)
    sums = np.where(finite, losses, 0.0).sum(axis=1)
    keep = (counts > 0) & np.isfinite(iterations) & (iterations > 0)
    return iterations[keep], sums[keep] / counts[keep]


def _theil_sen_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Median of the pairwise slopes; x must hold at least two distinct values."""
    first, second = np.triu_indices(x.size, k=1)
    dx = x[second] - x[first]
    valid = dx != 0
    return float(np.median((y[second] - y[first])[valid] / dx[valid]))


def loss_trend(
    iterations: np.ndarray,
    losses: np.ndarray,
    window_fraction: float = DEFAULT_WINDOW_FRACTION,
    start_iteration: int = 0,
) -> LossTrend | None:
    """Fit the recent loss against log10(iteration) robustly.

    iterations: (N,) positive integers; losses: (N,) or (N, K) floats (K series such as src and
    dst are averaged per row, non-finite entries ignored). The window is the last
    `window_fraction` of the iterations done, [end · (1 − window_fraction), end], cut at
    `start_iteration` (the start of the current phase, whose loss level differs from the last
    one's). The window is split into TREND_BINS equal slices of log10(iteration); a Theil–Sen
    line through the slice medians gives the slope; dividing it by the line's value at the window's
    middle gives the relative slope (d ln loss / d log10 iteration).
    Returns None while the history is too short: the newest iteration is below
    MIN_TREND_ITERATIONS (200) iterations past `start_iteration`, or the window holds fewer than
    MIN_TREND_SAMPLES (20) finite samples or fewer than 3 non-empty slices.
    """
    if not 0.0 < window_fraction < 1.0:
        raise ValueError(f"window_fraction must be in (0, 1), got {window_fraction}")
    its, values = _combined_series(iterations, losses)
    if its.size == 0:
        return None
    end = float(its.max())
    if end - start_iteration < MIN_TREND_ITERATIONS:
        return None
    start = max(end * (1.0 - window_fraction), float(start_iteration), 1.0)
    inside = its >= start
    its, values = its[inside], values[inside]
    if its.size < MIN_TREND_SAMPLES:
        return None
    logs = np.log10(its)
    low, high = float(logs.min()), float(logs.max())
    if high <= low:
        return None
    slices = np.minimum(((logs - low) / (high - low) * TREND_BINS).astype(np.int64), TREND_BINS - 1)
    centres, medians = [], []
    for index in range(TREND_BINS):
        members = slices == index
        if np.any(members):
            centres.append(float(np.median(logs[members])))
            medians.append(float(np.median(values[members])))
    if len(centres) < 3:
        return None
    x, y = np.asarray(centres), np.asarray(medians)
    slope = _theil_sen_slope(x, y)
    # The slope is normalised by the fitted loss at the window's middle, where it was measured, so
    # a power law L ∝ iteration^(−p) reads −p·ln 10 per decade whatever the window width.
    middle = float(np.median(y - slope * x)) + slope * 0.5 * (low + high)
    level = medians[-1]
    if middle > 0:
        relative = slope / middle
    else:
        # A zero loss has nowhere left to fall; any rise from it is an unbounded relative change.
        relative = 0.0 if slope == 0 else math.copysign(math.inf, slope)
    return LossTrend(
        slope_per_decade=slope,
        relative_slope=relative,
        level=level,
        window_start=int(its.min()),
        window_end=int(its.max()),
        samples=int(its.size),
    )


def _plateau_advice(phase: str, at_iteration: int) -> str:
    title = _PHASE_TITLES[phase]
    where = format_iterations(at_iteration)
    following = next_phase(phase)
    if following == "gan":
        return f"{title} plateaued at {where}: move to GAN (gan_power {GAN_POWER_ADVICE} is the common choice)"
    if following is None:
        return f"{title} plateaued at {where}: training is done; judge by merge checks"
    return f"{title} plateaued at {where}: move to {_PHASE_TITLES[following]}"


def detect_plateau(
    iterations: np.ndarray,
    losses: np.ndarray,
    phase: str,
    min_iterations: int,
    threshold: float = DEFAULT_PLATEAU_THRESHOLD,
    phase_start: int = 0,
    window_fraction: float = DEFAULT_WINDOW_FRACTION,
) -> PlateauVerdict:
    """Decide whether `phase` has plateaued and phrase the advice for `facesmith train status`.

    iterations, losses: the loss history as for `loss_trend`. phase: one of PHASE_ORDER.
    min_iterations: iterations the phase must run (from `phase_start`) before a plateau counts.
    threshold: the phase has plateaued when the loss falls by less than this fraction of its level
    per ×10 iterations (a rising loss counts as plateaued too).
    Advice examples: "RW plateaued at 41k: move to LRD"; "loss still falling (-12.3% per decade):
    keep training"; "not enough history yet".
    """
    following = next_phase(phase)  # validates the phase name
    if min_iterations < 0:
        raise ValueError(f"min_iterations must be >= 0, got {min_iterations}")
    if threshold < 0:
        raise ValueError(f"plateau threshold must be >= 0, got {threshold}")
    trend = loss_trend(iterations, losses, window_fraction=window_fraction, start_iteration=phase_start)
    if trend is None:
        return PlateauVerdict(False, None, None, "not enough history yet", None)
    fall = -trend.relative_slope
    if fall >= threshold:
        advice = f"loss still falling (-{100.0 * fall:.1f}% per decade): keep training"
        return PlateauVerdict(False, None, trend, advice, None)
    done = trend.window_end - phase_start
    if done < min_iterations:
        advice = (
            f"loss flat, but {_PHASE_TITLES[phase]} has run {format_iterations(done)} of at least "
            f"{format_iterations(min_iterations)} iterations: keep training"
        )
        return PlateauVerdict(False, None, trend, advice, None)
    return PlateauVerdict(True, trend.window_end, trend, _plateau_advice(phase, trend.window_end), following)
