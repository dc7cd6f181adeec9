"""Every loss and augmentation option trains for real: finite losses, and the parts it adds learn."""

from __future__ import annotations

import numpy as np
import pytest

from tests.train.conftest import TINY_OPTIONS, tiny_batches
from train.checkpoint import list_checkpoints, load_checkpoint
from train.loop import close_session, open_session, run_training

CASES = {
    "gan": {"phase": "gan", "gan_power": 0.1, "gan_patch_size": 8, "gan_dims": 4},
    "true-face": {"archi": "df", "true_face_power": 0.01},
    "styles-and-priority": {"face_style_power": 0.1, "bg_style_power": 2.0, "eyes_mouth_prio": True,
                            "blur_out_mask": True},
    "rmsprop-lrd-clipgrad": {"optimizer": "rmsprop", "phase": "lrd", "clipgrad": True},
    "uniform-yaw-sot-flips": {"uniform_yaw": True, "ct_mode": "sot", "random_src_flip": True,
                              "random_hsv_power": 0.1},
    "unmasked-full-deep": {"masked_training": False, "face_type": "full", "archi": "liae-udtc"},
}


def _run(model_dir, facesets, options, iterations=2):
    session = open_session(model_dir, dict(TINY_OPTIONS, **options), *facesets)
    try:
        outcome = run_training(session, max_iterations=iterations)
    finally:
        close_session(session)
    return session, outcome


@pytest.mark.parametrize("name", list(CASES))
def test_option_set_trains(name, tmp_path, training_facesets):
    session, outcome = _run(tmp_path / "model", training_facesets, CASES[name])
    assert outcome.iteration == 2 and np.isfinite(outcome.last_src_loss) and np.isfinite(outcome.last_dst_loss)
    arrays = load_checkpoint(tmp_path / "model").arrays
    assert all(np.all(np.isfinite(a)) for a in arrays.values())
    if name == "gan":
        # the discriminator trained: its optimiser moments are no longer zero
        slots = [a for key, a in arrays.items() if key.startswith("gan_opt/m/")]
        assert slots and any(np.abs(a).sum() > 0 for a in slots)
    if name == "true-face":
        slots = [a for key, a in arrays.items() if key.startswith("code_opt/m/")]
        assert slots and any(np.abs(a).sum() > 0 for a in slots)
    if name == "rmsprop-lrd-clipgrad":
        assert any(key.startswith("model_opt/accumulator/") for key in arrays)
        # LIAE's inter_AB is frozen without random warp: its weights never moved
        initial = load_checkpoint(tmp_path / "model", step=0).arrays
        frozen = [k for k in arrays if k.startswith("model/inter_ab/")]
        moved = [k for k in arrays if k.startswith("model/inter_b/")]
        assert frozen and all(np.array_equal(arrays[k], initial[k]) for k in frozen)
        assert any(not np.array_equal(arrays[k], initial[k]) for k in moved)


def test_pretrain_then_real_training_resets_the_count_and_the_inters(tmp_path, training_facesets):
    model_dir = tmp_path / "model"
    _run(model_dir, training_facesets, {"pretrain": True}, iterations=3)
    pretrained = load_checkpoint(model_dir).arrays
    session, outcome = _run(model_dir, training_facesets, {"pretrain": False}, iterations=2)
    assert outcome.iteration == 2
    assert any("pretraining ended at 3" in note for note in session.notes)
    assert list(model_dir.glob("pretrain_3/checkpoints/step-00000003"))
    assert list_checkpoints(model_dir)[0] == 2
    after = load_checkpoint(model_dir, step=0).arrays  # the first save after the reset
    fresh = load_checkpoint(model_dir / "pretrain_3", step=0).arrays  # the model as built
    inter = [k for k in after if k.startswith(("model/inter_ab/", "model/inter_b/"))]
    encoder = [k for k in after if k.startswith("model/encoder/")]
    assert inter and all(np.array_equal(after[k], fresh[k]) for k in inter)
    assert all(np.array_equal(after[k], pretrained[k]) for k in encoder)


def test_float16_compute_trains_with_float32_weights(training_facesets):
    """The mixed-precision path (float16 compute, loss scaling) on the CPU, which TensorFlow allows."""
    from train.config import resolve_config
    from train.sampler import make_batch
    from train.step import SAEHDTrainer

    config, _ = resolve_config(dict(TINY_OPTIONS, sampler_workers=0))
    src, dst, settings = tiny_batches(training_facesets)
    trainer = SAEHDTrainer(config, compute_dtype="float16")
    assert trainer.model.compute_dtype == "float16"  # the network itself computes in float16
    before = {k: v.copy() for k, v in trainer.state_arrays().items() if k.startswith("model/")}
    results = [trainer.train_step(make_batch(step, src, dst, settings).tensors(), step, 0) for step in (1, 2, 3)]
    assert all(np.isfinite(r.src_loss) and np.isfinite(r.dst_loss) for r in results)
    after = trainer.state_arrays()
    assert all(after[k].dtype == np.float32 for k in before)
    assert sum(not np.array_equal(before[k], after[k]) for k in before) > len(before) // 2


def test_bfloat16_through_the_loop_tracks_float32(tmp_path, training_facesets):
    """--precision bfloat16 on the CPU: float32 weights in the checkpoint, losses near float32's."""
    _, half = _run(tmp_path / "half", training_facesets, {"precision": "bfloat16"}, iterations=3)
    _, full = _run(tmp_path / "full", training_facesets, {}, iterations=3)
    assert half.iteration == 3 and "bfloat16" in load_checkpoint(tmp_path / "half").state["device"]
    assert all(a.dtype == np.float32 and np.all(np.isfinite(a)) for a in load_checkpoint(tmp_path / "half").arrays.values())
    # bfloat16 keeps 8 bits of mantissa: the same faces and weights give losses a few per cent apart at most
    np.testing.assert_allclose([half.last_src_loss, half.last_dst_loss], [full.last_src_loss, full.last_dst_loss],
                               rtol=5e-2)
