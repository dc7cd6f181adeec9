"""Before the Keras 3 port (commit 8bc8dd1), kept as the parity reference. SAEHD optimizers (AdaBelief without bias correction, RMSprop) with lr dropout, as tf.Modules."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import tensorflow as tf

LR_DROPOUT_CYCLE = 500


def learning_rate_at(
    step: tf.Tensor | float, base_lr: float, lr_dropout: bool, cycle: int = LR_DROPOUT_CYCLE
) -> tf.Tensor:
    """Learning rate for an iteration, a float32 scalar tensor.

    With lr_dropout: base_lr·(cos(2π·step/cycle) + 1)/2, a repeating cycle from base_lr down to 0 and
    back; without it, base_lr. step may be a Python number or an int/float tensor (also in tf.function).
    """
    if not lr_dropout:
        return tf.constant(base_lr, dtype=tf.float32)
    if cycle < 1:
        raise ValueError(f"learning-rate cycle must be >= 1 iteration, got {cycle}")
    step = tf.convert_to_tensor(step)
    # Reducing modulo the cycle first keeps the phase exact at millions of iterations in float32.
    if step.dtype.is_integer:
        phase = tf.cast(tf.math.floormod(tf.cast(step, tf.int64), cycle), tf.float32) / cycle
    else:
        phase = tf.cast(tf.math.floormod(tf.cast(step, tf.float64), float(cycle)) / cycle, tf.float32)
    return base_lr * (tf.cos(2.0 * math.pi * phase) + 1.0) / 2.0


def _seed_pair(seed: tf.Tensor | int) -> tf.Tensor:
    """A scalar seed or a (2,) seed as the (2,) int64 seed stateless ops take."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.constant(0, tf.int64)])
    if seed.shape != (2,):
        raise ValueError(f"seed must be a scalar or a pair of integers, got shape {seed.shape}")
    return seed


def dropout_mask(
    shape: Sequence[int],
    keep_probability: float,
    seed: tf.Tensor | int,
    step: tf.Tensor | int,
    index: int,
) -> tf.Tensor:
    """Bernoulli float32 mask of `shape` with ones at rate keep_probability.

    Drawn by stateless ops from (seed, step, index), so a resumed run redraws the same mask for the same
    iteration and weight tensor. seed: scalar or (2,) integer; step: integer iteration; index: the
    weight tensor's position in the optimizer's variable list.
    """
    derived = tf.random.experimental.stateless_fold_in(_seed_pair(seed), tf.cast(step, tf.int64))
    derived = tf.random.experimental.stateless_fold_in(derived, index)
    uniform = tf.random.stateless_uniform(shape, seed=derived, dtype=tf.float32)
    return tf.cast(uniform < keep_probability, tf.float32)


class _MaskedUpdateOptimizer(tf.Module):
    """Shared plumbing: slot bookkeeping, global-norm clipping, lr schedule and lr-dropout masks."""

    # The model's variables belong to the model; listing them here would make `self.variables`
    # (used to save optimizer state) include the weights a second time.
    _TF_MODULE_IGNORED_PROPERTIES = frozenset(("_model_variables",)).union(
        tf.Module._TF_MODULE_IGNORED_PROPERTIES
    )

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        names: Sequence[str] | None,
        learning_rate: float,
        epsilon: float,
        lr_dropout: float,
        clip_norm: float,
        name: str,
    ) -> None:
        super().__init__(name=name)
        if not 0.0 < lr_dropout <= 1.0:
            raise ValueError(f"lr_dropout is a keep probability in (0, 1], got {lr_dropout}")
        if clip_norm < 0.0:
            raise ValueError(f"clip_norm must be >= 0 (0 disables clipping), got {clip_norm}")
        if learning_rate <= 0.0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if names is None:
            names = [_default_name(variable) for variable in variables]
        names = list(names)
        if len(names) != len(variables):
            raise ValueError(f"got {len(names)} names for {len(variables)} variables")
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"variable names must be unique, duplicated: {duplicated}")
        self._model_variables = tuple(variables)
        self.variable_names = tuple(names)
        self.learning_rate = float(learning_rate)
        self.epsilon = float(epsilon)
        self.lr_dropout = float(lr_dropout)
        self.clip_norm = float(clip_norm)
        self._slots: dict[str, tf.Variable] = {}

    def _make_slots(self, kind: str) -> list[tf.Variable]:
        """One zero slot per model variable, registered under '<optimizer>/<kind>/<variable name>'."""
        slots = []
        for variable, variable_name in zip(self._model_variables, self.variable_names):
            key = f"{self.name}/{kind}/{variable_name}"
            slot = tf.Variable(
                tf.zeros(tuple(variable.shape), dtype=tf.as_dtype(variable.dtype)),
                trainable=False,
                name=f"{kind}_{len(slots)}",
            )
            self._slots[key] = slot
            slots.append(slot)
        return slots

    def slot_variables(self) -> dict[str, tf.Variable]:
        """Optimizer state by stable name, e.g. 'adabelief/m/<variable name>'; insertion-ordered."""
        return dict(self._slots)

    def _direction(self, index: int, gradient: tf.Tensor, skip: tf.Tensor | None) -> tf.Tensor:
        """Update the slots of variable `index` and return its step direction (added after ×lr·mask).

        skip: None, or a boolean scalar that, when true, leaves the slots as they are.
        """
        raise NotImplementedError

    def apply_gradients(
        self,
        gradients: Sequence[tf.Tensor | None],
        step: tf.Tensor | int,
        seed: tf.Tensor | int,
        skip: tf.Tensor | None = None,
    ) -> None:
        """Apply one update to the variables given at construction, in the same order.

        gradients: one tensor per variable (None leaves that variable and its slots untouched).
        step: the integer iteration, which drives the lr cycle and the dropout masks.
        seed: scalar or (2,) integer run seed for the dropout masks.
        skip: None, or a boolean scalar tensor; when true nothing changes (a float16 step whose gradients
        are not finite). A flag rather than tf.cond because a cond branch cannot hold a merge_call.

        Inside `strategy.run` of a tf.distribute strategy the gradients must already be averaged over
        the replicas: every replica then applies the same update to its copy of each weight and slot.
        """
        gradients = list(gradients)
        if len(gradients) != len(self._model_variables):
            raise ValueError(f"got {len(gradients)} gradients for {len(self._model_variables)} variables")
        if self.clip_norm > 0.0:
            gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            # Mirrored variables change only in a cross-replica context: one merge_call for the whole
            # update, in which extended.update runs `_update_variable` once per local device.
            update = functools.partial(self._update_mirrored, step=step, seed=seed)
            tf.distribute.get_replica_context().merge_call(update, args=(gradients, skip))
            return
        learning_rate = learning_rate_at(step, self.learning_rate, self.lr_dropout < 1.0)
        for index, (variable, gradient) in enumerate(zip(self._model_variables, gradients)):
            if gradient is not None:
                self._update_variable(index, variable, gradient, skip, learning_rate, step, seed)

    def _update_mirrored(self, strategy: tf.distribute.Strategy, gradients: list, skip: tf.Tensor | None, *,
                         step: tf.Tensor | int, seed: tf.Tensor | int) -> None:
        learning_rate = learning_rate_at(step, self.learning_rate, self.lr_dropout < 1.0)
        for index, (variable, gradient) in enumerate(zip(self._model_variables, gradients)):
            if gradient is None:
                continue
            update = functools.partial(self._update_variable, index, learning_rate=learning_rate, step=step,
                                       seed=seed)
            # Inside extended.update a mirrored slot read or assigned in `_direction` resolves to the
            # copy on the device being updated.
            strategy.extended.update(variable, update, args=(gradient, skip), group=False)

    def _update_variable(self, index: int, variable: tf.Variable, gradient: tf.Tensor, skip: tf.Tensor | None,
                         learning_rate: tf.Tensor, step: tf.Tensor | int, seed: tf.Tensor | int):
        gradient = tf.cast(tf.convert_to_tensor(gradient), tf.as_dtype(variable.dtype))
        update = learning_rate * self._direction(index, gradient, skip)
        if self.lr_dropout < 1.0:
            update *= dropout_mask(tuple(variable.shape), self.lr_dropout, seed, step, index)
        if skip is not None:
            update = tf.where(skip, tf.zeros_like(update), update)
        return variable.assign_sub(update)


def _assign_slot(slot: tf.Variable, value: tf.Tensor, skip: tf.Tensor | None) -> None:
    slot.assign(value if skip is None else tf.where(skip, slot, value))


def _default_name(variable: tf.Variable) -> str:
    path = getattr(variable, "path", None)
    return str(path) if path else variable.name.split(":")[0]


class AdaBelief(_MaskedUpdateOptimizer):
    """AdaBelief as SAEHD uses it: no bias correction, ε outside the square root.

    m ← β1·m + (1-β1)·g;  v ← β2·v + (1-β2)·(g - m)²;  w ← w - lr·mask·m/(√v + ε).
    lr_dropout is the keep probability of the per-step Bernoulli update mask (1.0 = off, SAEHD's
    lr dropout is 0.3) and also switches on the 500-iteration cosine lr cycle. clip_norm > 0 clips the
    global gradient norm first. names: stable names parallel to variables (default: the variables' own).
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        names: Sequence[str] | None = None,
        learning_rate: float = 5e-5,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-6,
        lr_dropout: float = 1.0,
        clip_norm: float = 0.0,
        name: str = "adabelief",
    ) -> None:
        super().__init__(variables, names, learning_rate, epsilon, lr_dropout, clip_norm, name)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self._first_moments = self._make_slots("m")
        self._belief = self._make_slots("v")

    def _direction(self, index: int, gradient: tf.Tensor, skip: tf.Tensor | None) -> tf.Tensor:
        first = self._first_moments[index]
        belief = self._belief[index]
        new_first = self.beta1 * first + (1.0 - self.beta1) * gradient
        new_belief = self.beta2 * belief + (1.0 - self.beta2) * tf.square(gradient - new_first)
        _assign_slot(first, new_first, skip)
        _assign_slot(belief, new_belief, skip)
        return new_first / (tf.sqrt(new_belief) + self.epsilon)


class RMSprop(_MaskedUpdateOptimizer):
    """RMSprop without momentum: a ← ρ·a + (1-ρ)·g²;  w ← w - lr·mask·g/(√a + ε).

    lr_dropout, clip_norm and names behave as in `AdaBelief`.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        names: Sequence[str] | None = None,
        learning_rate: float = 5e-5,
        rho: float = 0.9,
        epsilon: float = 1e-6,
        lr_dropout: float = 1.0,
        clip_norm: float = 0.0,
        name: str = "rmsprop",
    ) -> None:
        super().__init__(variables, names, learning_rate, epsilon, lr_dropout, clip_norm, name)
        self.rho = float(rho)
        self._accumulators = self._make_slots("accumulator")

    def _direction(self, index: int, gradient: tf.Tensor, skip: tf.Tensor | None) -> tf.Tensor:
        accumulator = self._accumulators[index]
        new_accumulator = self.rho * accumulator + (1.0 - self.rho) * tf.square(gradient)
        _assign_slot(accumulator, new_accumulator, skip)
        return gradient / (tf.sqrt(new_accumulator) + self.epsilon)
