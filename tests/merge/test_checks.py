"""Merge checks: the overtraining rule on given histories, and real checks of a trained tiny model."""

from __future__ import annotations

import math

import cv2
import pytest

from merge.checks import MergeChecker, check_model, overtraining_verdict, read_checks


def test_rising_heldout_loss_with_falling_training_loss_is_overtraining():
    verdict = overtraining_verdict([100, 200, 300, 400], [0.50, 0.40, 0.45, 0.52], [2.0, 1.8, 1.6, 1.5])
    assert verdict.flagged and verdict.best_iteration == 200
    assert "best so far at iteration 200" in verdict.detail


@pytest.mark.parametrize("validation, training", [
    ([0.50, 0.40, 0.35, 0.30], [2.0, 1.8, 1.6, 1.5]),  # both falling: healthy
    ([0.50, 0.40, 0.45, 0.52], [2.0, 1.8, 1.9, 2.1]),  # both rising: a collapse or bad data, not overfitting
    ([0.50, 0.40, 0.45, 0.44], [2.0, 1.8, 1.6, 1.5]),  # one rise only
    ([0.40, 0.401, 0.402, 0.403], [2.0, 1.8, 1.6, 1.5]),  # rises within noise
])
def test_other_histories_are_not_overtraining(validation, training):
    verdict = overtraining_verdict([100, 200, 300, 400], validation, training)
    assert not verdict.flagged
    assert verdict.best_iteration == 100 + 100 * validation.index(min(validation))


def test_too_few_checks_and_nan_values():
    assert not overtraining_verdict([100], [0.5], [1.0]).flagged
    verdict = overtraining_verdict([100, 200], [math.nan, 0.4], [1.0, 0.9])
    assert verdict.best_iteration == 200


def test_a_real_check_is_scored_and_stored(tiny_model, analyzer):
    result = check_model(tiny_model, analyzer=analyzer)
    assert result.iteration == 30 and result.frames >= 1
    assert 0 < result.train_src_loss < 20 and 0 < result.validation_src_loss < 20
    assert result.generalisation_gap == pytest.approx(result.validation_src_loss - result.train_src_loss)
    assert -1 <= result.identity_similarity <= 1 and -1 <= result.dst_identity_similarity <= 1
    assert 0 <= result.artefact_score <= 1 and result.sharpness_ratio > 0
    assert not result.overtraining and result.best_iteration == 30
    rows = read_checks(tiny_model)
    assert [row["iteration"] for row in rows] == [30]
    sheet = cv2.imread(str(tiny_model / result.contact_sheet))
    assert sheet is not None and sheet.shape[1] == 3 * 64


def test_checks_need_held_out_faces(tmp_path, training_facesets):
    from merge.checks import MergeCheckError
    from tests.train.conftest import TINY_OPTIONS
    from train.loop import close_session, open_session

    session = open_session(tmp_path / "m", dict(TINY_OPTIONS, validation_share=0.0), *training_facesets)
    try:
        with pytest.raises(MergeCheckError, match="holds out no src faces"):
            MergeChecker(session, every=10)
    finally:
        close_session(session)
