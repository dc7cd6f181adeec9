"""Weight initialisation: TensorFlow's stateless Philox uniform draw, reproduced bit for bit in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from train.philox import stateless_uniform

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("shape, seed", [((5, 5, 3, 16), (123, -456)), ((7,), (2**62 + 5, 77)),
                                         ((33, 9), (-1, -2)), ((3, 3, 64, 256), (9, -9)), ((), (0, 0))])
def test_the_numpy_draw_equals_tensorflows(shape, seed):
    expected = tf.random.stateless_uniform(shape, seed=tf.constant(seed, tf.int64), minval=-0.12, maxval=0.12,
                                           dtype=tf.float32, alg="philox").numpy()
    np.testing.assert_array_equal(stateless_uniform(shape, seed, -0.12, 0.12), expected)


def test_a_model_starts_from_the_weights_the_tensorflow_only_trainer_drew():
    from tests.train.legacy_tf.model import SAEHDModel as OldModel
    from train.model import SAEHDModel
    from train.shape import Architecture, ModelShape

    shape = ModelShape(64, Architecture.parse("liae-ud"), 32, 16, 16, 16)
    old = {name: v.numpy() for name, v in OldModel(shape, seed=3).named_variables().items()}
    new = {name: np.asarray(v.numpy()) for name, v in SAEHDModel(shape, seed=3).named_variables().items()}
    assert old.keys() == new.keys()
    assert all(np.array_equal(old[name], new[name]) for name in old)
