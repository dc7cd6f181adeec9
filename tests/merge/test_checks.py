"""Merge checks: the overtraining rule on given histories, and real checks of a trained tiny model."""

from __future__ import annotations

import math

import cv2
import pytest

from merge.checks import SHEET_LABEL_WIDTH, MergeChecker, check_model, overtraining_verdict, read_checks


def test_heldout_loss_staying_above_its_best_while_training_loss_falls_is_overtraining():
    # the shape of a real overfitted run (validation noisy, clearly above its best for three checks)
    validation = [2.51, 2.60, 2.56, 2.83, 2.79, 2.68]
    training = [4.98, 3.84, 3.36, 2.63, 2.03, 1.74]
    verdict = overtraining_verdict([100, 200, 300, 400, 500, 600], validation, training)
    assert verdict.flagged and verdict.best_iteration == 100
    assert "best so far at iteration 100" in verdict.detail
    assert not overtraining_verdict([100, 200, 300, 400, 500], validation[:5], training[:5]).flagged


@pytest.mark.parametrize("validation, training", [
    ([0.50, 0.40, 0.35, 0.30, 0.29], [2.0, 1.8, 1.6, 1.5, 1.4]),  # both falling: healthy
    ([0.40, 0.45, 0.46, 0.47, 0.48], [2.0, 1.8, 1.9, 2.1, 2.3]),  # both rising: collapse or bad data
    ([0.40, 0.45, 0.46, 0.41, 0.47], [2.0, 1.8, 1.6, 1.5, 1.4]),  # back near the best inside the window
    ([0.40, 0.41, 0.415, 0.412, 0.414], [2.0, 1.8, 1.6, 1.5, 1.4]),  # within the noise margin
])
def test_other_histories_are_not_overtraining(validation, training):
    verdict = overtraining_verdict([100, 200, 300, 400, 500], validation, training)
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
    # every merged frame is a row (name strip, dst, swapped, merged) under an 18 px header
    names = result.frame_names.splitlines()
    assert len(names) == result.frames and all(names)
    assert sheet is not None and sheet.shape[:2] == (18 + 64 * result.frames, SHEET_LABEL_WIDTH + 3 * 64)
    assert 0 <= result.quality_score <= 1 and result.rule == "quality"
    assert result.quality_score == pytest.approx(rows[0]["quality_score"])


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


def test_a_check_of_a_model_without_held_out_faces_is_refused_before_a_framework_loads(tmp_path, training_facesets):
    import subprocess
    import sys

    from tests.train.conftest import TINY_OPTIONS
    from train.loop import close_session, open_session

    model_dir = tmp_path / "m"
    close_session(open_session(model_dir, dict(TINY_OPTIONS, validation_share=0.0), *training_facesets))
    probe = ("import sys\nfrom merge.checks import MergeCheckError, check_model\n"
             f"try:\n    check_model({str(model_dir)!r})\nexcept MergeCheckError as error:\n    print(error)\n"
             "print('frameworks loaded:', sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "holds out no src faces" in result.stdout
    assert "frameworks loaded: []" in result.stdout
