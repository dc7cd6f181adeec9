"""End-to-end training on real faces at 64 px: loss falls, exact resume, rollback, phases, status."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.train.conftest import TINY_OPTIONS
from curate.training_loss import read_face_losses
from train.checkpoint import list_checkpoints, load_checkpoint
from train.history import ModelHistory
from train.loop import close_session, open_session, run_training
from train.status import training_status


def _train(model_dir: Path, facesets, iterations: int, **options):
    src, dst = facesets
    session = open_session(model_dir, dict(TINY_OPTIONS, **options), src, dst)
    try:
        outcome = run_training(session, max_iterations=iterations)
    finally:
        close_session(session)
    return session, outcome


@pytest.fixture(scope="module")
def trained(module_dirs, training_facesets):
    """A model trained for 60 iterations with a preview and checkpoint every 30."""
    model_dir = module_dirs("trained") / "model"
    session, outcome = _train(model_dir, training_facesets, 60, preview_every=30, save_every=30)
    return model_dir, session, outcome


def test_loss_falls_on_real_faces(trained):
    model_dir, _, outcome = trained
    with ModelHistory(model_dir, read_only=True) as history:
        iterations, losses, ms = history.losses()
    assert list(iterations) == list(range(1, 61))
    assert np.all(np.isfinite(losses)) and np.all(ms > 0)
    first, last = losses[:10].mean(axis=0), losses[-10:].mean(axis=0)
    assert np.all(last < 0.85 * first), (first, last)
    assert outcome.iteration == 60 and outcome.reason == "iterations-done"


def test_outputs_of_a_run_exist_and_decode(trained):
    model_dir, session, _ = trained
    assert list_checkpoints(model_dir)[:3] == [60, 30, 0]
    preview = cv2.imread(str(model_dir / "previews" / "preview_0000060.png"))
    assert preview is not None and preview.shape[1] == 5 * 64
    assert any((model_dir / "tensorboard").glob("events.out.tfevents.*"))
    state = load_checkpoint(model_dir).state
    assert state["config"]["resolution"] == 64 and state["step"] == 60
    assert json.loads((model_dir / "model.json").read_text())["structure"]["archi"] == "liae-ud"


def test_validation_faces_are_recorded_and_never_trained_on(trained, training_facesets):
    model_dir, session, _ = trained
    with ModelHistory(model_dir, read_only=True) as history:
        src_train, src_validation = history.split("src")
        dst_train, dst_validation = history.split("dst")
    assert len(src_validation) >= 1 and len(dst_validation) >= 1
    assert not set(src_validation) & set(session.src_faces.face_ids)
    assert set(session.src_faces.face_ids) == set(src_train)
    assert not set(dst_validation) & set(session.dst_faces.face_ids)


def test_status_reports_the_run(trained):
    model_dir, _, _ = trained
    status = training_status(model_dir)
    assert status.phase == "rw" and status.iteration == 60 and status.checkpoints[0] == 60
    assert status.ms_per_iteration is not None and status.ms_per_iteration > 0
    assert status.src_loss is not None and 0 < status.src_loss < 10
    assert status.advice == "not enough history yet"


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(model_dir).arrays


def test_resume_is_exact(tmp_path, training_facesets):
    """2×N steps straight equals N, save, reopen, N — same seed, same weights within float tolerance."""
    options = {"ct_mode": "rct", "random_hsv_power": 0.05, "seed": 3}
    _train(tmp_path / "straight", training_facesets, 8, **options)
    _train(tmp_path / "resumed", training_facesets, 4, **options)
    _, outcome = _train(tmp_path / "resumed", training_facesets, 4, **options)
    assert outcome.iteration == 8
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        np.testing.assert_allclose(resumed[name], straight[name], rtol=1e-4, atol=1e-6, err_msg=name)
    with ModelHistory(tmp_path / "straight", read_only=True) as a, \
            ModelHistory(tmp_path / "resumed", read_only=True) as b:
        np.testing.assert_allclose(a.losses()[1], b.losses()[1], rtol=1e-4)
    for side in ("src", "dst"):  # the per-face running losses resume exactly too
        straight_faces = read_face_losses(tmp_path / "straight", side).losses
        resumed_faces = read_face_losses(tmp_path / "resumed", side).losses
        assert straight_faces.keys() == resumed_faces.keys() and len(straight_faces) > 1
        for face_id, face in straight_faces.items():
            other = resumed_faces[face_id]
            assert (other.seen, other.last_iteration) == (face.seen, face.last_iteration)
            np.testing.assert_allclose([other.loss, other.last_loss], [face.loss, face.last_loss], rtol=1e-4)


def test_a_different_seed_gives_different_weights(tmp_path, training_facesets):
    _train(tmp_path / "a", training_facesets, 2, seed=1)
    _train(tmp_path / "b", training_facesets, 2, seed=2)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert not np.allclose(a["model/encoder/down_0/conv/kernel"], b["model/encoder/down_0/conv/kernel"])


def test_injected_nan_rolls_back_to_the_last_checkpoint_and_continues(tmp_path, training_facesets):
    src, dst = training_facesets
    session = open_session(tmp_path / "model", dict(TINY_OPTIONS, save_every=5), src, dst)
    poisoned = []

    def poison(session, iteration):
        if iteration == 8 and not poisoned:
            variable = next(iter(session.trainer.model.named_variables().values()))
            variable.assign(np.full(variable.shape, np.nan, np.float32))
            poisoned.append(iteration)

    try:
        outcome = run_training(session, max_iterations=12, before_step=poison)
    finally:
        close_session(session)
    assert poisoned == [8]
    assert outcome.rollbacks == 1 and np.isfinite(outcome.last_src_loss)
    assert session.config.clipgrad  # clipgrad_on_collapse
    with ModelHistory(tmp_path / "model", read_only=True) as history:
        events = history.events("rollback")
        iterations, losses, _ = history.losses()
    assert len(events) == 1 and events[0][0] == 5 and "non-finite-loss" in events[0][2]
    assert np.all(np.isfinite(losses)) and iterations[-1] == outcome.iteration
    # the per-face losses went back to the snapshot of 5: steps 6 and 7 before the collapse do not count
    for side in ("src", "dst"):
        faces = read_face_losses(tmp_path / "model", side).losses.values()
        assert sum(face.seen for face in faces) == outcome.iteration * TINY_OPTIONS["batch_size"]
    assert all(np.all(np.isfinite(a)) for a in _weights(tmp_path / "model").values())


def test_auto_phases_moves_from_rw_to_lrd_on_a_plateau(tmp_path, training_facesets):
    """A real tiny run: with a generous plateau threshold the first plateau check moves the phase."""
    _, outcome = _train(tmp_path / "model", training_facesets, 240, save_every=220, auto_phases=True,
                        plateau_threshold=1.0, plateau_min_iterations=0, batch_size=2)
    assert outcome.phase == "lrd"
    with ModelHistory(tmp_path / "model", read_only=True) as history:
        phases = [row[0] for row in history.connection.execute(
            "SELECT phase FROM history ORDER BY iteration").fetchall()]
        plateau = history.events("plateau")
        moves = history.events("phase")
    assert phases[:220] == ["rw"] * 220 and set(phases[220:]) == {"lrd"}
    assert plateau and plateau[0][2].startswith("RW plateaued at 220: move to LRD")
    assert moves and moves[0][2].startswith("lrd:")
    status = training_status(tmp_path / "model")
    assert status.phase == "lrd"


class _ScriptedEvaluator:
    """A periodic evaluator whose verdicts are fixed in advance (the loop is what is under test)."""

    name = "scripted"
    every = 4

    def __call__(self, session, iteration):
        from train.loop import EvaluationOutcome

        flag = "held-out quality worsening" if iteration >= 8 else None
        return EvaluationOutcome(summary=f"checked {iteration}", best_iteration=4, flag=flag)


def test_evaluators_keep_the_best_checkpoint_and_record_their_flag(tmp_path, training_facesets):
    src, dst = training_facesets
    session = open_session(tmp_path / "model", dict(TINY_OPTIONS, save_every=2, backups_kept=1), src, dst)
    try:
        run_training(session, max_iterations=10, evaluators=(_ScriptedEvaluator(),))
    finally:
        close_session(session)
    assert set(list_checkpoints(tmp_path / "model")) == {10, 4}  # the best one survives rotation
    status = training_status(tmp_path / "model")
    assert status.best_iteration == 4 and status.flag == "held-out quality worsening"
    with ModelHistory(tmp_path / "model", read_only=True) as history:
        assert [e[0] for e in history.events("flag")] == [8]
        assert len(history.events("evaluation")) == 2


def test_target_iter_stops_and_saves_there(tmp_path, training_facesets):
    _, outcome = _train(tmp_path / "model", training_facesets, 50, target_iter=3)
    assert outcome.reason == "target-reached" and outcome.iteration == 3
    assert list_checkpoints(tmp_path / "model")[0] == 3
    _, again = _train(tmp_path / "model", training_facesets, 50)  # target_iter is remembered
    assert again.iteration == 3 and again.iterations_run == 0
