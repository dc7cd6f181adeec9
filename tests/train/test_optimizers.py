"""SAEHD optimizers against hand formulas and a numpy reimplementation."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from train.optimizers import AdaBelief, RMSprop, dropout_mask, learning_rate_at

Arrays = list[np.ndarray]


def _variable(value) -> keras.Variable:
    return keras.Variable(np.asarray(value, np.float32))


def _numpy_adabelief(
    weights: Arrays,
    gradients_per_step: list[Arrays],
    lr: list[float],
    masks_per_step: list[Arrays] | None = None,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-6,
) -> tuple[Arrays, Arrays, Arrays]:
    weights = [w.astype(np.float64).copy() for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for step, gradients in enumerate(gradients_per_step):
        for i, g in enumerate(gradients):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * (g - m[i]) ** 2
            update = lr[step] * m[i] / (np.sqrt(v[i]) + eps)
            if masks_per_step is not None:
                update = update * masks_per_step[step][i]
            weights[i] -= update
    return weights, m, v


def _numpy_rmsprop(
    weights: Arrays, gradients_per_step: list[Arrays], lr: list[float], rho: float = 0.9, eps: float = 1e-6
) -> tuple[Arrays, Arrays]:
    weights = [w.astype(np.float64).copy() for w in weights]
    acc = [np.zeros_like(w) for w in weights]
    for step, gradients in enumerate(gradients_per_step):
        for i, g in enumerate(gradients):
            acc[i] = rho * acc[i] + (1 - rho) * g**2
            weights[i] -= lr[step] * g / (np.sqrt(acc[i]) + eps)
    return weights, acc


def _setup(seed: int = 0) -> tuple[Arrays, list[Arrays], list[keras.Variable]]:
    rng = np.random.default_rng(seed)
    initial = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    gradients = [[rng.normal(size=w.shape).astype(np.float32) for w in initial] for _ in range(3)]
    variables = [_variable(w) for w in initial]
    return initial, gradients, variables


def test_adabelief_single_step_hand_value_has_no_bias_correction() -> None:
    w = _variable([1.0])
    opt = AdaBelief([w], ["w"], learning_rate=0.1)
    opt.apply_gradients([tf.constant([0.5])], step=0, seed=0)
    m = 0.1 * 0.5
    v = 0.001 * (0.5 - m) ** 2
    expected = 1.0 - 0.1 * m / (math.sqrt(v) + 1e-6)
    assert w.numpy()[0] == pytest.approx(expected, rel=1e-5)
    # Adam-style bias correction would give an update of ~lr·sign(g), i.e. w ≈ 0.9.
    assert abs(w.numpy()[0] - 0.9) > 0.05
    slots = opt.slot_variables()
    assert slots["adabelief/m/w"].numpy()[0] == pytest.approx(m)
    assert slots["adabelief/v/w"].numpy()[0] == pytest.approx(v, rel=1e-5)


def test_adabelief_three_steps_match_numpy() -> None:
    initial, gradients, variables = _setup(1)
    opt = AdaBelief(variables, ["a", "b"], learning_rate=1e-2)
    for step, grads in enumerate(gradients):
        opt.apply_gradients([tf.constant(g) for g in grads], step=step, seed=7)
    weights, m, v = _numpy_adabelief(initial, gradients, [1e-2] * 3)
    for variable, expected in zip(variables, weights):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.slot_variables()["adabelief/m/b"].numpy(), m[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(opt.slot_variables()["adabelief/v/a"].numpy(), v[0], rtol=1e-4, atol=1e-9)


def test_adabelief_with_lr_dropout_matches_numpy_with_masks_and_cycle() -> None:
    initial, gradients, variables = _setup(2)
    opt = AdaBelief(variables, ["a", "b"], learning_rate=1e-2, lr_dropout=0.3)
    steps = [100, 101, 102]
    for step, grads in zip(steps, gradients):
        opt.apply_gradients([tf.constant(g) for g in grads], step=tf.constant(step, tf.int64), seed=5)
    masks = [
        [dropout_mask(w.shape, 0.3, 5, step, i).numpy() for i, w in enumerate(initial)] for step in steps
    ]
    lrs = [1e-2 * (math.cos(2 * math.pi * s / 500) + 1) / 2 for s in steps]
    weights, _, _ = _numpy_adabelief(initial, gradients, lrs, masks)
    for variable, expected in zip(variables, weights):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_rmsprop_single_step_and_three_steps() -> None:
    w = _variable([2.0])
    opt = RMSprop([w], ["w"], learning_rate=0.1)
    opt.apply_gradients([tf.constant([-0.4])], step=0, seed=0)
    a = 0.1 * 0.16
    assert w.numpy()[0] == pytest.approx(2.0 + 0.1 * 0.4 / (math.sqrt(a) + 1e-6), rel=1e-6)
    assert opt.slot_variables()["rmsprop/accumulator/w"].numpy()[0] == pytest.approx(a, rel=1e-6)

    initial, gradients, variables = _setup(3)
    opt = RMSprop(variables, ["a", "b"], learning_rate=1e-3)
    for step, grads in enumerate(gradients):
        opt.apply_gradients(grads, step=step, seed=0)
    weights, acc = _numpy_rmsprop(initial, gradients, [1e-3] * 3)
    for variable, expected in zip(variables, weights):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.slot_variables()["rmsprop/accumulator/a"].numpy(), acc[0], rtol=1e-5)


def test_lr_dropout_updates_about_thirty_percent() -> None:
    w = _variable(np.zeros([200, 500]))
    opt = AdaBelief([w], ["w"], learning_rate=1e-3, lr_dropout=0.3)
    opt.apply_gradients([tf.ones([200, 500])], step=1, seed=3)
    moved = float(np.mean(w.numpy() != 0.0))
    assert 0.29 < moved < 0.31


def test_dropout_mask_is_a_function_of_seed_step_and_index() -> None:
    first = dropout_mask((64, 64), 0.3, 11, 40, 2).numpy()
    assert set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(
        first, dropout_mask((64, 64), 0.3, tf.constant(11), tf.constant(40), 2).numpy()
    )
    assert not np.array_equal(first, dropout_mask((64, 64), 0.3, 11, 41, 2).numpy())
    assert not np.array_equal(first, dropout_mask((64, 64), 0.3, 11, 40, 3).numpy())
    assert not np.array_equal(first, dropout_mask((64, 64), 0.3, 12, 40, 2).numpy())


def test_same_seed_and_step_give_same_update_and_different_step_differs() -> None:
    def run(step: int) -> np.ndarray:
        w = _variable(np.zeros([50, 50]))
        AdaBelief([w], ["w"], lr_dropout=0.3).apply_gradients([tf.ones([50, 50])], step=step, seed=9)
        return w.numpy() != 0.0

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_learning_rate_at() -> None:
    base = 5e-5
    assert float(learning_rate_at(0, base, True)) == pytest.approx(base)
    assert float(learning_rate_at(125, base, True)) == pytest.approx(base / 2, rel=1e-5)
    assert float(learning_rate_at(250, base, True)) == pytest.approx(0.0, abs=1e-12)
    assert float(learning_rate_at(375, base, True)) == pytest.approx(base / 2, rel=1e-5)
    assert float(learning_rate_at(500, base, True)) == pytest.approx(base)
    assert float(learning_rate_at(tf.constant(1_000_250, tf.int64), base, True)) == pytest.approx(
        0.0, abs=1e-12
    )
    assert float(learning_rate_at(tf.constant(125.0), base, True)) == pytest.approx(base / 2, rel=1e-5)
    assert float(learning_rate_at(250, base, False)) == pytest.approx(base)
    compiled = tf.function(lambda s: learning_rate_at(s, base, True))
    assert float(compiled(tf.constant(125, tf.int64))) == pytest.approx(base / 2, rel=1e-5)


def test_clip_norm_bounds_the_applied_gradient() -> None:
    a, b = _variable(np.zeros([2])), _variable(np.zeros([2]))
    opt = AdaBelief([a, b], ["a", "b"], clip_norm=1.0)
    opt.apply_gradients([tf.constant([6.0, 0.0]), tf.constant([0.0, 8.0])], step=0, seed=0)
    # m = (1 - β1)·g_clipped, and clipping rescales the norm-10 gradients to norm 1.
    slots = opt.slot_variables()
    clipped = np.concatenate([slots["adabelief/m/a"].numpy(), slots["adabelief/m/b"].numpy()]) / 0.1
    np.testing.assert_allclose(clipped, [0.6, 0.0, 0.0, 0.8], rtol=1e-5)

    small = _variable(np.zeros([2]))
    opt = RMSprop([small], ["s"], clip_norm=1.0)
    opt.apply_gradients([tf.constant([0.3, 0.4])], step=0, seed=0)
    acc = opt.slot_variables()["rmsprop/accumulator/s"].numpy()
    np.testing.assert_allclose(acc, 0.1 * np.array([0.09, 0.16]), rtol=1e-5)


def test_apply_gradients_inside_tf_function_matches_eager_and_resumes_exactly() -> None:
    initial, gradients, _ = _setup(4)

    def make() -> tuple[list[keras.Variable], AdaBelief]:
        variables = [_variable(w) for w in initial]
        return variables, AdaBelief(variables, ["a", "b"], learning_rate=1e-2, lr_dropout=0.3, clip_norm=1.0)

    eager_vars, eager_opt = make()
    for step, grads in enumerate(gradients):
        eager_opt.apply_gradients(grads, step=step, seed=21)

    compiled_vars, compiled_opt = make()
    train_step = tf.function(
        lambda g0, g1, step: compiled_opt.apply_gradients([g0, g1], step, tf.constant(21))
    )
    for step, grads in enumerate(gradients[:2]):
        train_step(grads[0], grads[1], tf.constant(step, tf.int64))
    # Resume: a fresh optimizer and variables restored by name from the saved state.
    resumed_vars, resumed_opt = make()
    for target, source in zip(resumed_vars, compiled_vars):
        target.assign(source)
    saved = {name: slot.numpy() for name, slot in compiled_opt.slot_variables().items()}
    for name, slot in resumed_opt.slot_variables().items():
        slot.assign(saved[name])
    resumed_step = tf.function(
        lambda g0, g1, step: resumed_opt.apply_gradients([g0, g1], step, tf.constant(21))
    )
    resumed_step(gradients[2][0], gradients[2][1], tf.constant(2, tf.int64))

    for expected, got in zip(eager_vars, resumed_vars):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(resumed_vars[0].numpy(), initial[0])


def test_slot_names_and_module_variables() -> None:
    a, b = _variable(np.zeros([2, 2])), _variable(np.zeros([3]))
    opt = AdaBelief([a, b], ["encoder/kernel", "encoder/bias"], name="gan_opt")
    assert list(opt.slot_variables()) == [
        "gan_opt/m/encoder/kernel",
        "gan_opt/m/encoder/bias",
        "gan_opt/v/encoder/kernel",
        "gan_opt/v/encoder/bias",
    ]
    assert opt.slot_variables()["gan_opt/v/encoder/bias"].shape == (3,)
    # The module tracks only its own state, not the model weights it updates.
    assert len(opt.variables) == 4
    assert all(v is not a and v is not b for v in opt.variables)


def test_none_gradient_leaves_variable_untouched() -> None:
    a, b = _variable([1.0]), _variable([1.0])
    opt = RMSprop([a, b], ["a", "b"], learning_rate=0.1)
    opt.apply_gradients([None, tf.constant([1.0])], step=0, seed=0)
    assert a.numpy()[0] == 1.0
    assert opt.slot_variables()["rmsprop/accumulator/a"].numpy()[0] == 0.0
    assert b.numpy()[0] < 1.0


def test_keras_variables_are_supported() -> None:
    import keras

    w = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
    opt = AdaBelief([w], learning_rate=0.1)
    assert list(opt.slot_variables()) == [f"adabelief/m/{w.path}", f"adabelief/v/{w.path}"]
    opt.apply_gradients([tf.ones((2, 2))], step=0, seed=0)
    assert np.all(np.asarray(w.numpy()) < 1.0)


def test_invalid_arguments_raise_value_error() -> None:
    w = _variable([1.0])
    with pytest.raises(ValueError, match="keep probability"):
        AdaBelief([w], ["w"], lr_dropout=0.0)
    with pytest.raises(ValueError, match="keep probability"):
        RMSprop([w], ["w"], lr_dropout=1.5)
    with pytest.raises(ValueError, match="names"):
        AdaBelief([w], ["w", "x"])
    with pytest.raises(ValueError, match="unique"):
        AdaBelief([w, _variable([2.0])], ["w", "w"])
    with pytest.raises(ValueError, match="gradients"):
        AdaBelief([w], ["w"]).apply_gradients([tf.ones([1]), tf.ones([1])], step=0, seed=0)
    with pytest.raises(ValueError, match="clip_norm"):
        AdaBelief([w], ["w"], clip_norm=-1.0)
