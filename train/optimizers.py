"""SAEHD optimisers on Keras 3 (AdaBelief without bias correction, RMSprop) with learning-rate dropout.

Each optimiser states its rule once, as `update_step(gradient, value, slots, learning_rate)`: a pure
function of tensors returning the step direction and the new slot values. The shared plumbing —
global-norm clipping, the learning-rate cycle, the dropout masks, skipping a float16 step whose
gradients are not finite — is `apply`, also pure, so a JAX step can run it under `jit` on values, while
TensorFlow and torch call `apply_gradients`, which reads and assigns the `keras.Variable` slots.

The dropout masks come from a counter-based integer hash evaluated with `keras.ops` (wrapping int32
arithmetic, identical on every backend and device), keyed by (seed, step, variable index): a resumed
run redraws the same mask for the same iteration and weight, and a checkpoint moved to another backend
continues with the same masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from train.layers import make_variable, ops

Tensor = Any
LR_DROPOUT_CYCLE = 500
# lowbias32 (C. Wellons' integer hash search): two multiply-xorshift rounds, a bijection of 32-bit ints.
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B - (1 << 32))  # the second as the signed int32 with the same bits
_UNIFORM_BITS = 24


def learning_rate_at(step: Tensor | int, base_lr: float, lr_dropout: bool, cycle: int = LR_DROPOUT_CYCLE) -> Tensor:
    """Learning rate for an iteration, a float32 scalar tensor.

    With lr_dropout: base_lr·(cos(2π·step/cycle) + 1)/2, a repeating cycle from base_lr down to 0 and
    back; without it, base_lr. step may be a Python integer or an integer tensor (also when compiled).
    """
    if not lr_dropout:
        return ops.convert_to_tensor(base_lr, dtype="float32")
    if cycle < 1:
        raise ValueError(f"learning-rate cycle must be >= 1 iteration, got {cycle}")
    # Reducing modulo the cycle first keeps the phase exact at millions of iterations in float32.
    if isinstance(step, (int, np.integer)):
        phase = ops.convert_to_tensor(float(int(step) % cycle) / cycle, dtype="float32")
    else:
        phase = ops.cast(ops.mod(ops.cast(step, "int32"), cycle), "float32") / float(cycle)
    return base_lr * (ops.cos(2.0 * math.pi * phase) + 1.0) / 2.0


def to_int32(value: int) -> int:
    """An integer folded into the int32 range with the same low 32 bits (seeds may be any size)."""
    return ((int(value) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int32 bits (the arithmetic shift then the sign bits masked off)."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def _mix(x: Tensor) -> Tensor:
    x = ops.bitwise_xor(x, _shift_right(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(_MULTIPLIERS[0], dtype="int32"))
    x = ops.bitwise_xor(x, _shift_right(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(_MULTIPLIERS[1], dtype="int32"))
    return ops.bitwise_xor(x, _shift_right(x, 16))


def _int32(value: Tensor | int) -> Tensor:
    if isinstance(value, (int, np.integer)):
        return ops.convert_to_tensor(to_int32(value), dtype="int32")
    return ops.cast(value, "int32")


def dropout_mask(shape: Sequence[int], keep_probability: float, seed: Tensor | int, step: Tensor | int,
                 index: int) -> Tensor:
    """Bernoulli float32 mask of `shape` with ones at rate keep_probability.

    A pure function of (seed, step, index): seed the run's integer seed, step the iteration, index
    the weight tensor's position in the optimiser's variable list. Same bits on every backend.
    """
    key = _mix(ops.bitwise_xor(_mix(ops.bitwise_xor(_mix(_int32(seed)), _int32(step))),
                               ops.convert_to_tensor(to_int32(index * 0x9E3779B9), dtype="int32")))
    count = int(np.prod(shape)) if len(shape) else 1
    counter = ops.arange(count, dtype="int32")
    bits = _mix(ops.add(_mix(ops.bitwise_xor(counter, key)), key))
    threshold = int(round(keep_probability * (1 << _UNIFORM_BITS)))
    keep = ops.less(_shift_right(bits, 32 - _UNIFORM_BITS), threshold)
    return ops.reshape(ops.cast(keep, "float32"), tuple(shape))


def clip_by_global_norm(gradients: Sequence[Tensor | None], clip_norm: float) -> list[Tensor | None]:
    """Every gradient times clip_norm / max(global norm, clip_norm) (None entries stay None)."""
    present = [g for g in gradients if g is not None]
    if not present:
        return list(gradients)
    norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in present))
    scale = clip_norm / ops.maximum(norm, clip_norm)
    return [None if g is None else g * scale for g in gradients]


class _MaskedUpdateOptimizer:
    """Shared plumbing: slots, global-norm clipping, the lr schedule, lr-dropout masks, skipped steps."""

    slot_kinds: tuple[str, ...] = ()

    def __init__(self, variables: Sequence[Any], names: Sequence[str] | None, learning_rate: float,
                 epsilon: float, lr_dropout: float, clip_norm: float, name: str) -> None:
        if not 0.0 < lr_dropout <= 1.0:
            raise ValueError(f"lr_dropout is a keep probability in (0, 1], got {lr_dropout}")
        if clip_norm < 0.0:
            raise ValueError(f"clip_norm must be >= 0 (0 disables clipping), got {clip_norm}")
        if learning_rate <= 0.0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if names is None:
            names = [str(getattr(variable, "path", None) or variable.name) for variable in variables]
        names = list(names)
        if len(names) != len(variables):
            raise ValueError(f"got {len(names)} names for {len(variables)} variables")
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"variable names must be unique, duplicated: {duplicated}")
        self.name = name
        self.model_variables = tuple(variables)
        self.variable_names = tuple(names)
        self.learning_rate = float(learning_rate)
        self.epsilon = float(epsilon)
        self.lr_dropout = float(lr_dropout)
        self.clip_norm = float(clip_norm)
        # slots[i] holds variable i's slots, one per kind, zero-initialised float32 like the weight.
        self.slots = [tuple(make_variable(np.zeros(tuple(variable.shape), np.float32),
                                          f"{name}/{kind}/{variable_name}", trainable=False)
                            for kind in self.slot_kinds)
                      for variable, variable_name in zip(self.model_variables, self.variable_names)]

    @property
    def variables(self) -> list[Any]:
        """The optimiser's own state (its slots), not the weights it updates."""
        return list(self.slot_variables().values())

    def slot_variables(self) -> dict[str, Any]:
        """Optimiser state by stable name, e.g. 'adabelief/m/<variable name>'; insertion-ordered by kind."""
        return {f"{self.name}/{kind}/{variable_name}": slots[k]
                for k, kind in enumerate(self.slot_kinds)
                for variable_name, slots in zip(self.variable_names, self.slots)}

    def update_step(self, gradient: Tensor, value: Tensor, slots: tuple[Tensor, ...],
                    learning_rate: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The optimiser's rule for one weight: (direction, new slots); the weight moves by −lr·direction."""
        raise NotImplementedError

    @property
    def dropout_on(self) -> bool:
        return self.lr_dropout < 1.0

    def apply(self, gradients: Sequence[Tensor | None], values: Sequence[Tensor],
              slots: Sequence[tuple[Tensor, ...]], step: Tensor | int, seed: Tensor | int,
              skip: Tensor | None = None) -> tuple[list[Tensor], list[tuple[Tensor, ...]]]:
        """One update on tensors: (new weight values, new slot values), parallel to the inputs.

        gradients: one per variable (None leaves that weight and its slots as they are).
        step: the integer iteration (the lr cycle, the dropout masks); seed: the run's integer seed.
        skip: None, or a boolean scalar: when true nothing changes (a float16 step with non-finite
        gradients). A flag with `where` rather than a branch, so every replica runs the same program.
        """
        gradients = list(gradients)
        if len(gradients) != len(self.model_variables):
            raise ValueError(f"got {len(gradients)} gradients for {len(self.model_variables)} variables")
        if self.clip_norm > 0.0:
            gradients = clip_by_global_norm(gradients, self.clip_norm)
        learning_rate = learning_rate_at(step, self.learning_rate, self.dropout_on)
        new_values, new_slots = [], []
        for index, (gradient, value, old) in enumerate(zip(gradients, values, slots)):
            if gradient is None:
                new_values.append(value)
                new_slots.append(tuple(old))
                continue
            direction, updated = self.update_step(ops.cast(gradient, "float32"), value, tuple(old), learning_rate)
            update = learning_rate * direction
            if self.dropout_on:
                update = update * dropout_mask(tuple(value.shape), self.lr_dropout, seed, step, index)
            if skip is not None:
                update = ops.where(skip, ops.zeros_like(update), update)
                updated = tuple(ops.where(skip, before, after) for before, after in zip(old, updated))
            new_values.append(value - update)
            new_slots.append(updated)
        return new_values, new_slots

    def apply_gradients(self, gradients: Sequence[Tensor | None], step: Tensor | int, seed: Tensor | int,
                        skip: Tensor | None = None) -> None:
        """`apply` on the variables given at construction, assigning the results (TensorFlow, torch)."""
        values = [variable.value for variable in self.model_variables]
        slots = [tuple(slot.value for slot in group) for group in self.slots]
        new_values, new_slots = self.apply(gradients, values, slots, step, seed, skip)
        for gradient, variable, value, group, updated in zip(gradients, self.model_variables, new_values, self.slots,
                                                             new_slots):
            if gradient is None:
                continue
            variable.assign(value)
            for slot, slot_value in zip(group, updated):
                slot.assign(slot_value)


class AdaBelief(_MaskedUpdateOptimizer):
    """AdaBelief as SAEHD uses it: no bias correction, ε outside the square root.

    m ← β1·m + (1-β1)·g;  v ← β2·v + (1-β2)·(g - m)²;  w ← w - lr·mask·m/(√v + ε).
    lr_dropout is the keep probability of the per-step Bernoulli update mask (1.0 = off, SAEHD's
    lr dropout is 0.3) and also switches on the 500-iteration cosine lr cycle. clip_norm > 0 clips the
    global gradient norm first. names: stable names parallel to variables (default: the variables' own).
    """

    slot_kinds = ("m", "v")

    def __init__(self, variables: Sequence[Any], names: Sequence[str] | None = None, learning_rate: float = 5e-5,
                 beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-6, lr_dropout: float = 1.0,
                 clip_norm: float = 0.0, name: str = "adabelief") -> None:
        super().__init__(variables, names, learning_rate, epsilon, lr_dropout, clip_norm, name)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)

    def update_step(self, gradient, value, slots, learning_rate):
        first, belief = slots
        new_first = self.beta1 * first + (1.0 - self.beta1) * gradient
        new_belief = self.beta2 * belief + (1.0 - self.beta2) * ops.square(gradient - new_first)
        return new_first / (ops.sqrt(new_belief) + self.epsilon), (new_first, new_belief)


class RMSprop(_MaskedUpdateOptimizer):
    """RMSprop without momentum: a ← ρ·a + (1-ρ)·g²;  w ← w - lr·mask·g/(√a + ε).

    lr_dropout, clip_norm and names behave as in `AdaBelief`.
    """

    slot_kinds = ("accumulator",)

    def __init__(self, variables: Sequence[Any], names: Sequence[str] | None = None, learning_rate: float = 5e-5,
                 rho: float = 0.9, epsilon: float = 1e-6, lr_dropout: float = 1.0, clip_norm: float = 0.0,
                 name: str = "rmsprop") -> None:
        super().__init__(variables, names, learning_rate, epsilon, lr_dropout, clip_norm, name)
        self.rho = float(rho)

    def update_step(self, gradient, value, slots, learning_rate):
        (accumulator,) = slots
        new_accumulator = self.rho * accumulator + (1.0 - self.rho) * ops.square(gradient)
        return gradient / (ops.sqrt(new_accumulator) + self.epsilon), (new_accumulator,)
