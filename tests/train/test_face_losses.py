"""Per-face running training losses on real tiny runs: they are the steps' own per-face losses folded
per face, stored with every checkpoint, and the face the model cannot learn (a crop replaced by noise)
ends the hardest; `exclude_hardest` takes it out as a decision. (Exact resume and rollback of the
running losses are checked in test_training.py, on the runs that check the weights.)"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from curate.faceset import FacesetReader
from curate.training_loss import hardest_faces, read_face_losses, side_of
from tests.train.conftest import TINY_OPTIONS
from train.errors import TrainingError
from train.face_losses import EXCLUDE_WHO, FACE_LOSS_DECAY, exclude_hardest
from train.faceset_data import holdout_ids, read_curated_faces
from train.history import ModelHistory
from train.loop import close_session, open_session, run_training
from train.sampler import make_batch


def weighted_mean(values: list[float], decay: float = FACE_LOSS_DECAY) -> float:
    """The definition the running loss follows: the mean of a face's losses weighted decay^age."""
    weights = decay ** np.arange(len(values))[::-1]
    return float(np.dot(weights, values) / weights.sum())


def test_running_losses_are_the_steps_own_per_face_losses(tmp_path, training_facesets):
    """A batch as large as the src training set covers every src face once a step; each face's stored
    loss is its per-step losses, evaluated directly on the same batch before each step, folded."""
    from train.layers import ops

    src, dst = training_facesets
    ids = [face.face_id for face in read_curated_faces(src)]
    train_count = len(ids) - len(holdout_ids(ids, TINY_OPTIONS["validation_share"], 0))
    session = open_session(tmp_path / "model", dict(TINY_OPTIONS, batch_size=train_count, seed=0), src, dst)
    seen: dict[tuple[str, str], list[tuple[int, float]]] = {}

    def evaluate(session, iteration):
        src_sampler, dst_sampler = session.samplers()
        batch = make_batch(iteration, src_sampler, dst_sampler, session.sampler_settings())
        generated = session.trainer.generator_losses([ops.convert_to_tensor(a) for a in batch.tensors()])
        for side, rows, values, faces in (("src", batch.src_indices, generated.src_loss, session.src_faces),
                                          ("dst", batch.dst_indices, generated.dst_loss, session.dst_faces)):
            for row, value in zip(rows.tolist(), np.asarray(ops.convert_to_numpy(values)).tolist()):
                seen.setdefault((side, faces.face_ids[row]), []).append((iteration, value))

    try:
        run_training(session, max_iterations=3, before_step=evaluate)
    finally:
        close_session(session)
    assert sorted(face_id for side, face_id in seen if side == "src") == sorted(session.src_faces.face_ids)
    for side in ("src", "dst"):
        stored = read_face_losses(tmp_path / "model", side)
        assert stored.iteration == 3
        expected = {face_id: history for (s, face_id), history in seen.items() if s == side}
        assert sorted(stored.losses) == sorted(expected)
        for face_id, history in expected.items():
            face = stored.losses[face_id]
            assert face.seen == len(history)
            assert face.last_iteration == history[-1][0]
            np.testing.assert_allclose(face.last_loss, history[-1][1], rtol=1e-4, err_msg=face_id)
            np.testing.assert_allclose(face.loss, weighted_mean([v for _, v in history]), rtol=1e-4, err_msg=face_id)
    assert all(face.seen == 3 for face in read_face_losses(tmp_path / "model", "src").losses.values())


def test_the_unlearnable_face_ends_hardest_and_every_checkpoint_keeps_its_snapshot(noisy_model):
    model_dir, src, dst, noisy = noisy_model
    losses = read_face_losses(model_dir, "src")
    ranked = losses.ranked()
    assert losses.iteration == 80 and losses.faceset == src.resolve()
    assert ranked[0].face_id == noisy
    assert losses.ratio(noisy) > 1.2 and ranked[0].loss > 1.1 * ranked[1].loss, [(f.face_id, f.loss) for f in ranked]
    batch = TINY_OPTIONS["batch_size"]
    assert sum(face.seen for face in ranked) == 80 * batch and all(face.seen > 0 for face in ranked)
    with ModelHistory(model_dir, read_only=True) as history:
        at_40 = history.face_losses(40)
    assert sum(face.seen for face in at_40 if face.side == "src") == 40 * batch
    assert sum(face.seen for face in at_40 if face.side == "dst") == 40 * batch
    dst_losses = read_face_losses(model_dir, "dst")
    assert dst_losses.faceset == dst.resolve() and sum(f.seen for f in dst_losses.losses.values()) == 80 * batch
    assert side_of(model_dir, src, "dst") == "src" and side_of(model_dir, dst, "src") == "dst"

    hardest = hardest_faces(model_dir, src, 3)
    first = hardest.faces[0]
    assert (hardest.side, hardest.iteration, first.face_id, first.rank) == ("src", 80, noisy, 1)
    assert first.trains and first.status == "" and first.path.endswith(".png") and first.ratio > 1.2
    assert hardest.faces_with_loss == len(ranked) and hardest.not_in_faceset == 0
    assert [face.rank for face in hardest.faces] == [1, 2, 3]
    assert hardest_faces(model_dir, dst, 2).side == "dst"


def test_exclude_hardest_records_a_decision_with_the_loss_as_its_reason(tmp_path, noisy_model):
    model_dir, src, _, noisy = noisy_model
    src_copy = tmp_path / "src" / "faceset.duckdb"
    shutil.copytree(src.parent, src_copy.parent)
    chosen = exclude_hardest(model_dir, src_copy, 1)
    assert [face.face_id for face in chosen] == [noisy] and chosen[0].rank == 1
    with FacesetReader(src_copy) as reader:
        decision = reader.decision_log()[-1]
        status = {s.face_id: s for s in reader.statuses()}[noisy]
    assert (decision.face_id, decision.action, decision.who) == (noisy, "exclude", EXCLUDE_WHO)
    assert "hardest training loss" in decision.why and "rank 1" in decision.why
    assert not status.trains and EXCLUDE_WHO in status.reason
    # the next call picks among the faces that still train
    again = exclude_hardest(model_dir, src_copy, 1)
    assert again[0].face_id != noisy and again[0].rank == 1
    with pytest.raises(TrainingError, match="would leave no src face"):
        exclude_hardest(model_dir, src_copy, 100)
    with pytest.raises(TrainingError, match="has no training history"):
        exclude_hardest(tmp_path / "no_model", src_copy, 1)


def test_the_curate_reader_contract_matches_the_table_the_trainer_writes(tmp_path, noisy_model):
    """curate.training_loss reads the model file by path (curate cannot import train): its file name,
    table and columns are the trainer's, and a model folder from before per-face losses migrates."""
    import duckdb

    from curate import training_loss
    from train import history as train_history

    model_dir = noisy_model[0]
    assert training_loss.HISTORY_FILE == train_history.HISTORY_FILE
    with duckdb.connect(str(model_dir / train_history.HISTORY_FILE), read_only=True) as connection:
        columns = [name for name, *_ in connection.execute(f"DESCRIBE {training_loss.TABLE}").fetchall()]
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    assert columns == ["iteration", *training_loss.COLUMNS]
    assert set(training_loss.FACESET_META_KEYS.values()) <= set(meta)

    old = tmp_path / "old_model"  # a history file at schema 1, as facesmith wrote it before this table
    old.mkdir()
    with duckdb.connect(str(old / train_history.HISTORY_FILE)) as connection:
        for statement in train_history._MIGRATIONS[1]:
            connection.execute(statement)
        connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    assert training_loss.read_face_losses(old, "src").losses == {}  # read-only: no table reads as none
    with ModelHistory(old) as history:
        assert history.meta("schema_version") == str(train_history.SCHEMA_VERSION) == "2"
        assert history.face_losses(0) == []
