"""Collapse checks flag non-finite losses, loss spikes and flat outputs, and nothing healthy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.collapse import (
    CollapsePolicy,
    CollapseVerdict,
    check_collapse,
    spike_threshold,
)


def stable_history(rows: int = 200, seed: int = 0) -> np.ndarray:
    """(rows, 2) losses around src 0.015 and dst 0.02 with 5% noise."""
    rng = np.random.default_rng(seed)
    return np.array([0.015, 0.02]) * (1.0 + 0.05 * rng.standard_normal((rows, 2)))


@pytest.mark.parametrize(("src", "dst", "side"), [(math.nan, 0.02, "src"), (0.015, math.inf, "dst"),
                                                  (-math.inf, 0.02, "src")])
def test_non_finite_loss(src: float, dst: float, side: str) -> None:
    verdict = check_collapse(1200, src, dst, stable_history(), output_std=0.2)
    assert verdict is not None
    assert verdict.reason == "non-finite-loss" and verdict.iteration == 1200
    assert side in verdict.detail and "1200" in verdict.detail


def test_tenfold_jump_is_a_spike() -> None:
    recent = stable_history()
    verdict = check_collapse(5000, 0.015, 0.2, recent, output_std=0.2)
    assert verdict is not None and verdict.reason == "loss-spike"
    assert "dst" in verdict.detail and "5000" in verdict.detail
    ratio = 0.2 / float(np.median(recent[:, 1]))
    assert f"{ratio:.1f}x" in verdict.detail


def test_wiggle_is_not_a_spike() -> None:
    recent = stable_history()
    assert check_collapse(5000, 1.5 * 0.015, 1.5 * 0.02, recent, output_std=0.2) is None


def test_threshold_is_factor_times_median_plus_mad_margin() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    # Finite values: median 3, absolute deviations 2, 1, 0, 1, 97 → MAD 1.
    assert spike_threshold(values, 4.0, 3.0) == pytest.approx(4.0 * (3.0 + 3.0 * 1.4826))
    recent = np.column_stack([np.tile([1.0, 2.0, 3.0, 4.0, 100.0], 20), np.ones(100)])
    limit = 4.0 * (3.0 + 3.0 * 1.4826)
    assert check_collapse(10, limit * 0.99, 1.0, recent, None) is None
    assert check_collapse(10, limit * 1.01, 1.0, recent, None).reason == "loss-spike"


def test_no_spike_before_min_history() -> None:
    recent = stable_history(rows=49)
    assert check_collapse(60, 0.015, 0.2, recent, output_std=0.2) is None
    recent_nan = np.vstack([stable_history(rows=49), np.full((10, 2), np.nan)])
    assert check_collapse(60, 0.015, 0.2, recent_nan, output_std=0.2) is None  # NaN rows do not count
    recent = stable_history(rows=50)
    assert check_collapse(60, 0.015, 0.2, recent, output_std=0.2).reason == "loss-spike"
    assert check_collapse(60, 0.015, 0.2, np.zeros((0, 2)), output_std=0.2) is None


def test_uniform_output() -> None:
    flat = np.full((4, 32, 32, 3), 0.5, dtype=np.float32)
    flat[0, 0, 0, 0] = 0.51
    verdict = check_collapse(7000, 0.015, 0.02, stable_history(), output_std=float(flat.std()))
    assert verdict is not None and verdict.reason == "uniform-output" and verdict.iteration == 7000
    nan_output = check_collapse(7000, 0.015, 0.02, stable_history(), output_std=math.nan)
    assert nan_output is not None and nan_output.reason == "non-finite-output"


def test_normal_iteration_is_healthy() -> None:
    rng = np.random.default_rng(9)
    faces = rng.random((4, 32, 32, 3)).astype(np.float32)
    assert check_collapse(7000, 0.016, 0.019, stable_history(), output_std=float(faces.std())) is None
    assert check_collapse(7000, 0.016, 0.019, stable_history(), output_std=None) is None


def test_policy_defaults_help_and_check() -> None:
    policy = CollapsePolicy()
    assert (policy.spike_factor, policy.min_history, policy.uniform_std) == (4.0, 50, 0.01)
    assert "spike" in CollapsePolicy.help("spike_factor")
    assert CollapsePolicy.help("uniform_std")
    with pytest.raises(ValueError):
        CollapsePolicy.help("nope")
    # A 1.5x wiggle passes the defaults but not a policy that flags anything 1.2x its median.
    assert policy.check(1, 1.5 * 0.015, 0.02, stable_history(), None) is None
    verdict = CollapsePolicy(spike_factor=1.2, mad_sigmas=0.0).check(1, 1.5 * 0.015, 0.02, stable_history(), None)
    assert isinstance(verdict, CollapseVerdict) and (verdict.reason, verdict.iteration) == ("loss-spike", 1)
    with pytest.raises(ValueError):
        CollapsePolicy(spike_factor=0.5)
    with pytest.raises(ValueError):
        check_collapse(1, 0.1, 0.1, np.ones((60, 3)), None)
