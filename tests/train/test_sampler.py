"""The batch sampler: a pure function of (seed, step), epochs without replacement, uniform yaw, threads."""

from __future__ import annotations

import numpy as np
import pytest

from train.faceset_data import (
    FaceArrays,
    crop_to_training,
    holdout_ids,
    load_face_arrays,
    read_curated_faces,
)
from train.sampler import (
    BatchStream,
    SamplerSettings,
    SideSampler,
    make_batch,
    shuffled_index,
    uniform_yaw_index,
    yaw_bins,
)


@pytest.fixture(scope="module")
def face_arrays(training_facesets) -> tuple[FaceArrays, FaceArrays]:
    src, dst = training_facesets
    return (load_face_arrays(read_curated_faces(src), "whole_face", 64),
            load_face_arrays(read_curated_faces(dst), "whole_face", 64))


def _settings(**changes) -> SamplerSettings:
    values = dict(batch_size=4, random_warp=True, src_flip=False, dst_flip=True, hsv_power=0.05,
                  ct_mode="rct", uniform_yaw=False, blur_out_mask=False, seed=5)
    values.update(changes)
    return SamplerSettings(**values)


def _samplers(face_arrays, uniform_yaw=False):
    src, dst = face_arrays
    return SideSampler("src", src, False, uniform_yaw), SideSampler("dst", dst, True, uniform_yaw)


def test_a_batch_is_a_pure_function_of_the_step(face_arrays):
    src, dst = _samplers(face_arrays)
    first, again, other = (make_batch(step, src, dst, _settings()) for step in (7, 7, 8))
    for a, b in zip(first.tensors(), again.tensors(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.src_input, other.src_input)
    assert not np.array_equal(first.src_input, make_batch(7, src, dst, _settings(salt=1)).src_input)


def test_batch_shapes_and_ranges(face_arrays):
    src, dst = _samplers(face_arrays)
    batch = make_batch(1, src, dst, _settings())
    for array in batch.tensors():
        assert array.dtype == np.float32 and array.shape[:3] == (4, 64, 64)
        assert array.min() >= 0 and array.max() <= 1
    assert batch.src_mask.shape[-1] == 1 and batch.src_mask.mean() > 0.2
    # eyes and mouth lie inside the face and peak at 1 after the affine transform
    assert np.all(batch.src_eyes_mouth.max(axis=(1, 2, 3)) == pytest.approx(1.0))
    # random warp: the network input differs from the target it is scored against
    assert np.abs(batch.src_input - batch.src_target).mean() > 0.01
    plain = make_batch(1, src, dst, _settings(random_warp=False, hsv_power=0.0, ct_mode="none"))
    np.testing.assert_allclose(plain.src_input, plain.src_target, atol=1e-6)


def test_epochs_visit_every_face_once():
    for position_start in (0, 11):
        seen = [shuffled_index(position_start * 11 + p, 11, 3, 0, 1) for p in range(11)]
        assert sorted(seen) == list(range(11))


def test_uniform_yaw_draws_each_yaw_bin_equally_often():
    yaw = np.array([-50.0] + [0.0] * 30 + [50.0])  # two rare profiles, many frontal faces
    groups = yaw_bins(yaw)
    assert len(groups) == 3
    draws = [uniform_yaw_index(p, groups, 1, 0, 1) for p in range(300)]
    counts = np.bincount(draws, minlength=32)
    assert counts[0] == 100 and counts[31] == 100 and counts[1:31].sum() == 100
    assert set(draws) == set(range(32))


def test_stream_delivers_the_same_batches_in_order(face_arrays):
    src, dst = _samplers(face_arrays, uniform_yaw=True)
    settings = _settings(uniform_yaw=True)
    with BatchStream(src, dst, settings, start_step=3, workers=2) as stream:
        batches = [next(stream) for _ in range(4)]
    assert [b.step for b in batches] == [3, 4, 5, 6]
    for batch in batches:
        np.testing.assert_array_equal(batch.dst_target, make_batch(batch.step, src, dst, settings).dst_target)


def test_holdout_is_stable_and_sized():
    ids = [f"face{i:03d}" for i in range(200)]
    held = holdout_ids(ids, 0.05, seed=0)
    assert len(held) == 10 and held == holdout_ids(list(reversed(ids)), 0.05, seed=0)
    assert held != holdout_ids(ids, 0.05, seed=1)
    assert holdout_ids(ids[:5], 0.05, seed=0) == set() and len(holdout_ids(ids[:12], 0.01, 0)) == 1


def test_faces_are_recut_to_the_training_face_type(training_facesets):
    faces = read_curated_faces(training_facesets[0])
    whole = load_face_arrays(faces, "whole_face", 64)
    full = load_face_arrays(faces, "full", 64)
    # full is a tighter crop than whole_face: the same landmarks spread over more of the square
    spread = lambda arrays: np.ptp(arrays.landmarks[:, :, 0], axis=1).mean()  # noqa: E731
    assert spread(full) > 1.2 * spread(whole)
    assert np.all(np.abs(whole.landmarks[:, 30] - 32) < 12)  # the nose tip near the middle
    # cutting the stored type at the stored size is the identity on the stored crop
    matrix, landmarks = crop_to_training(faces[0], "whole_face", faces[0].crop_resolution)
    np.testing.assert_allclose(matrix[:, :2], np.eye(2), atol=1e-6)
    np.testing.assert_allclose(matrix[:, 2], 0, atol=1e-4)
