"""Loss trends over log-iterations tell a falling loss from a plateau and phrase the phase advice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.plateau import (
    PHASE_ORDER,
    detect_plateau,
    format_iterations,
    loss_trend,
    next_phase,
)


def power_law(end: int, rng: np.random.Generator, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Loss 2 · iteration^(−0.3) with 5% multiplicative noise, for src and dst (dst 1.2× src)."""
    iterations = np.arange(1, end + 1, step)
    base = 2.0 * iterations.astype(np.float64) ** -0.3
    noise = 1.0 + 0.05 * rng.standard_normal((iterations.size, 2))
    return iterations, np.stack([base, 1.2 * base], axis=1) * noise


def flattening(end: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exponential decay onto a floor of 0.05 (time constant 2000) plus noise of 0.002."""
    iterations = np.arange(1, end + 1)
    losses = 0.05 + np.exp(-iterations / 2000.0) + 0.002 * rng.standard_normal(iterations.size)
    return iterations, losses


def test_power_law_trend_matches_its_exponent() -> None:
    iterations, losses = power_law(50_000, np.random.default_rng(0))
    trend = loss_trend(iterations, losses)
    assert trend is not None
    # d ln L / d log10(it) = −0.3 · ln 10 for L ∝ it^−0.3.
    assert trend.relative_slope == pytest.approx(-0.3 * math.log(10.0), abs=0.05)
    assert (trend.window_start, trend.window_end, trend.samples) == (25_000, 50_000, 25_001)
    # Level: the mean of src and dst at the end, 1.1 · 2 · 50000^−0.3, within the noise.
    assert trend.level == pytest.approx(1.1 * 2.0 * 50_000**-0.3, rel=0.03)
    # Slope in loss units: the derivative at the window's middle (≈ 35355 in log space).
    middle = 1.1 * 2.0 * math.sqrt(25_000 * 50_000) ** -0.3
    assert trend.slope_per_decade == pytest.approx(-0.3 * math.log(10.0) * middle, rel=0.08)


def test_power_law_is_still_falling() -> None:
    iterations, losses = power_law(50_000, np.random.default_rng(1), step=5)
    verdict = detect_plateau(iterations, losses, "rw", min_iterations=10_000)
    assert not verdict.plateaued and verdict.at_iteration is None and verdict.next_phase is None
    assert verdict.advice.startswith("loss still falling (-")
    assert verdict.advice.endswith("% per decade): keep training")
    percent = float(verdict.advice.split("(-")[1].split("%")[0])
    assert percent == pytest.approx(69.1, abs=5.0)


def test_flattening_curve_plateaus_at_the_end() -> None:
    iterations, losses = flattening(41_000, np.random.default_rng(2))
    verdict = detect_plateau(iterations, losses, "rw", min_iterations=20_000)
    assert verdict.plateaued
    assert verdict.at_iteration == 41_000
    assert verdict.trend is not None and abs(verdict.trend.relative_slope) < 0.05
    assert verdict.advice == "RW plateaued at 41k: move to LRD"
    assert verdict.next_phase == "lrd"


def test_advice_names_each_phase() -> None:
    iterations, losses = flattening(41_000, np.random.default_rng(3))
    lrd = detect_plateau(iterations, losses, "lrd", min_iterations=1000)
    assert lrd.advice == "LRD plateaued at 41k: move to GAN (gan_power 0.1 is the common choice)"
    assert lrd.next_phase == "gan"
    gan = detect_plateau(iterations, losses, "gan", min_iterations=1000)
    assert gan.advice == "GAN plateaued at 41k: training is done; judge by merge checks"
    assert gan.plateaued and gan.next_phase is None


def test_flat_phase_waits_for_min_iterations() -> None:
    iterations, losses = flattening(41_000, np.random.default_rng(4))
    verdict = detect_plateau(iterations, losses, "rw", min_iterations=50_000)
    assert not verdict.plateaued and verdict.trend is not None
    assert "keep training" in verdict.advice and "50k" in verdict.advice
    # The phase began at 30k: only 11k done, and the window starts at the phase start.
    verdict = detect_plateau(iterations, losses, "lrd", min_iterations=20_000, phase_start=30_000)
    assert not verdict.plateaued
    assert verdict.trend is not None and verdict.trend.window_start == 30_000


def test_rising_loss_counts_as_plateau() -> None:
    iterations = np.arange(1, 20_001)
    losses = 0.05 + 1e-6 * iterations
    verdict = detect_plateau(iterations, losses, "rw", min_iterations=0)
    assert verdict.plateaued and verdict.trend is not None and verdict.trend.slope_per_decade > 0


def test_short_history_has_no_trend() -> None:
    iterations = np.arange(1, 150)
    losses = 1.0 / iterations
    assert loss_trend(iterations, losses) is None
    assert loss_trend(np.arange(0, 10_000, 1000), np.ones(10)) is None  # 10 samples < 20
    assert loss_trend(np.zeros(0), np.zeros((0, 2))) is None
    assert loss_trend(np.arange(1, 1000), np.full(999, np.nan)) is None
    verdict = detect_plateau(iterations, losses, "rw", min_iterations=0)
    assert verdict == type(verdict)(False, None, None, "not enough history yet", None)


def test_nan_rows_are_ignored() -> None:
    iterations, losses = power_law(20_000, np.random.default_rng(5), step=2)
    clean = loss_trend(iterations, losses)
    dirty = losses.copy()
    dirty[::3] = np.nan
    trend = loss_trend(iterations, dirty)
    assert clean is not None and trend is not None
    kept = iterations[np.isfinite(dirty[:, 0])]
    assert trend.window_end == kept.max()
    assert trend.samples == np.count_nonzero(kept >= kept.max() / 2)
    assert trend.relative_slope == pytest.approx(clean.relative_slope, abs=0.05)


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0"), (850, "850"), (999, "999"), (1000, "1k"), (41_000, "41k"), (41_500, "41.5k"),
     (123_456, "123k"), (999_960, "1M"), (1_200_000, "1.2M"), (2_420_000, "2.4M")],
)
def test_format_iterations(count: int, text: str) -> None:
    assert format_iterations(count) == text


def test_phase_order() -> None:
    assert PHASE_ORDER == ("rw", "lrd", "gan")
    assert [next_phase(phase) for phase in PHASE_ORDER] == ["lrd", "gan", None]
    with pytest.raises(ValueError):
        next_phase("pretrain")
    with pytest.raises(ValueError):
        detect_plateau(np.arange(1, 10), np.ones(9), "warp", min_iterations=0)
