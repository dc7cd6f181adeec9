"""Real tiny runs of the same length: an overfitted model raises the overtraining flag, a healthy one not.

The overfitted run learns 5 src faces with random warp off and a 4× learning rate, so it memorises
them: its training loss keeps falling while the held-out src faces get worse. The healthy run uses
SAEHD's rw phase on the same faces. Both run 600 iterations with a merge check every 50.
"""

from __future__ import annotations

import pytest

from merge.checks import MergeChecker, read_checks
from train.history import ModelHistory
from train.loop import close_session, open_session, run_training
from train.status import training_status

BASE = {"resolution": 64, "archi": "liae-ud", "ae_dims": 64, "e_dims": 32, "d_dims": 32, "d_mask_dims": 16,
        "batch_size": 4, "save_every": 10000, "preview_every": 10000, "validation_share": 0.5, "seed": 1,
        "sampler_workers": 2}
RUNS = {
    "overfitted": dict(BASE, phase="lrd", lr_dropout=False, learning_rate=2e-4, random_dst_flip=False),
    "healthy": dict(BASE, phase="rw"),
}


def _run(model_dir, facesets, options, analyzer):
    session = open_session(model_dir, options, *facesets)
    try:
        assert len(session.src_faces) == 5 and len(session.src_validation) == 4
        run_training(session, max_iterations=600, evaluators=(MergeChecker(session, every=50, analyzer=analyzer),))
    finally:
        close_session(session)
    return read_checks(model_dir)


@pytest.mark.slow
def test_overfitted_model_raises_the_flag(tmp_path, training_facesets, analyzer):
    checks = _run(tmp_path / "model", training_facesets, RUNS["overfitted"], analyzer)
    assert len(checks) == 12
    flagged = [row for row in checks if row["overtraining"]]
    assert flagged, [(r["iteration"], r["validation_src_loss"]) for r in checks]
    first = flagged[0]
    best = first["best_iteration"]
    assert best < first["iteration"]
    best_row = next(row for row in checks if row["iteration"] == best)
    assert first["validation_src_loss"] > 1.05 * best_row["validation_src_loss"]
    assert first["train_src_loss"] < best_row["train_src_loss"]  # training loss still falling
    status = training_status(tmp_path / "model")
    assert status.flag and status.flag.startswith("overtraining") and status.best_iteration == checks[-1]["best_iteration"]
    assert best in status.checkpoints  # the best iteration's checkpoint is kept
    with ModelHistory(tmp_path / "model", read_only=True) as history:
        assert history.events("flag")


@pytest.mark.slow
def test_healthy_model_of_the_same_length_does_not(tmp_path, training_facesets, analyzer):
    checks = _run(tmp_path / "model", training_facesets, RUNS["healthy"], analyzer)
    assert len(checks) == 12
    assert not any(row["overtraining"] for row in checks)
    assert checks[-1]["validation_src_loss"] < checks[0]["validation_src_loss"]
    assert training_status(tmp_path / "model").flag is None
