"""The merge-quality score's normalisation, weights and rule, on given numbers (the real runs are in
test_overtraining.py)."""

from __future__ import annotations

import math

import pytest

from merge.checks import judge, quality_verdict
from merge.quality import (
    CheckSettings,
    CheckSettingsError,
    QualityComponents,
    combine,
    components,
    identity_component,
    quality_scores,
    resolve_check_settings,
)


def check(iteration, loss=2.0, identity=0.4, expression=0.05, sharpness=0.8, clipped=0.0, training=3.0):
    return {"iteration": iteration, "validation_src_loss": loss, "identity_similarity": identity,
            "dst_identity_similarity": 0.1, "src_identity_similarity": 0.9, "expression_error": expression,
            "sharpness_ratio": sharpness, "artefact_score": clipped, "training_loss": training}


def test_components_run_from_the_unmerged_dst_to_a_real_src_photo():
    assert identity_component(0.1, 0.1, 0.9) == 0 and identity_component(0.9, 0.1, 0.9) == 1
    assert identity_component(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert identity_component(0.05, 0.1, 0.9) == 0 and identity_component(0.95, 0.1, 0.9) == 1  # clipped
    assert math.isnan(identity_component(0.5, 0.5, 0.52))  # the embedder cannot tell the two apart
    parts = components(check(100), best_loss=2.0, settings=CheckSettings())
    assert parts.heldout_loss == 1  # the best held-out loss so far
    above = components(check(100, loss=2.2), best_loss=2.0, settings=CheckSettings(check_loss_scale=4))
    assert above.heldout_loss == pytest.approx(1 - 4 * math.log(1.1))  # 10 % above its best
    assert components(check(100, loss=3.0), 2.0, CheckSettings()).heldout_loss == 0
    assert parts.sharpness == pytest.approx(0.8)
    too_sharp = components(check(100, sharpness=1.25), 2.0, CheckSettings())
    assert too_sharp.sharpness == pytest.approx(0.8)  # noise counts like blur
    assert 0 < parts.expression < 1 and parts.artefacts == 1


def test_every_component_moves_the_score_its_way():
    settings = CheckSettings()
    base = quality_scores([check(100)], settings)[0]
    for worse in (dict(identity=0.2), dict(expression=0.15), dict(sharpness=0.4), dict(clipped=0.02)):
        assert quality_scores([check(100, **worse)], settings)[0] < base, worse
    # the held-out loss is measured against its best so far: a rise costs, a new best does not
    assert quality_scores([check(100), check(200, loss=2.3)], settings)[1] < base
    assert quality_scores([check(100), check(200, loss=1.0)], settings)[1] == pytest.approx(base)
    # and a stored score never changes later: the best counts the checks up to it only
    assert quality_scores([check(100), check(200, loss=2.3), check(300, loss=1.0)], settings)[:2] == \
        quality_scores([check(100), check(200, loss=2.3)], settings)


def test_unmeasured_components_leave_the_weighted_mean_of_the_rest():
    parts = QualityComponents(identity=math.nan, expression=0.5, sharpness=math.nan, artefacts=1.0,
                              heldout_loss=math.nan)
    weights = CheckSettings().weights
    expected = (weights["expression"] * 0.5 + weights["artefacts"]) / (weights["expression"] + weights["artefacts"])
    assert combine(parts, weights) == pytest.approx(expected)
    assert math.isnan(combine(QualityComponents(*([math.nan] * 5)), weights))


def test_the_quality_rule_flags_a_falling_score_while_training_loss_falls():
    iterations = [100, 200, 300, 400, 500, 600]
    scores = [0.40, 0.50, 0.47, 0.40, 0.39, 0.38]
    training = [5.0, 4.0, 3.5, 3.0, 2.6, 2.2]
    verdict = quality_verdict(iterations, scores, training, margin=0.05)
    assert verdict.flagged and verdict.best_iteration == 200 and verdict.change_since_best == pytest.approx(-0.12)
    assert not quality_verdict(iterations, scores, [5.0, 4.0, 3.5, 3.6, 3.8, 4.0], margin=0.05).flagged  # training not falling
    assert not quality_verdict(iterations[:5], scores[:5], training[:5], margin=0.05).flagged  # two checks below, not three
    assert not quality_verdict(iterations, [0.40, 0.50, 0.47, 0.47, 0.48, 0.47], training, margin=0.05).flagged  # within the margin


def test_the_rule_option_chooses_what_decides():
    # held-out loss keeps falling while the merged frames get worse: only the quality rule sees it
    checks = [check(100 * (i + 1), loss=2.0 - 0.05 * i, expression=0.04 + 0.05 * i, training=5.0 - 0.4 * i)
              for i in range(6)]
    by_quality = judge(checks, CheckSettings())
    by_loss = judge(checks, CheckSettings(check_rule="heldout-loss"))
    assert by_quality.flagged and by_quality.best_iteration == 100
    assert not by_loss.flagged and by_loss.best_iteration == 600


def test_check_options_are_validated():
    assert resolve_check_settings({"check_rule": "heldout-loss"}).check_rule == "heldout-loss"
    assert resolve_check_settings({"check_weight_identity": "0.5"}).check_weight_identity == 0.5
    with pytest.raises(CheckSettingsError, match="check_rule"):
        resolve_check_settings({"check_rule": "vibes"})
    with pytest.raises(CheckSettingsError, match="unknown"):
        resolve_check_settings({"weight": 1})
    zero = {f"check_weight_{name}": 0 for name in CheckSettings().weights}
    with pytest.raises(CheckSettingsError, match="at least one"):
        resolve_check_settings(zero)
