"""The per-backend gradient shim: how one SAEHD train step takes gradients and applies them.

The losses (`SAEHDTrainer.generator_losses`, `gan_loss`, `code_loss`) and the optimiser rules
(`train/optimizers.py`) are shared; each backend only says how gradients are taken:

- tensorflow: `tf.GradientTape` inside one `tf.function` (under a tf.distribute strategy, per replica
  with the gradients averaged by an all-reduce);
- jax: `jax.value_and_grad` of a pure function of the variable values, the whole step under `jax.jit`
  (keras's StatelessScope maps each variable to its traced value; under keras.distribution's
  DataParallel the batch is sharded over the devices and XLA inserts the all-reduce);
- torch: autograd (`torch.autograd.grad`) in eager mode, the gradients averaged over a DDP process group
  (gloo or NCCL) when there is one.

A step returns {"src_loss", "dst_loss", "output_std", "learning_rate"} scalars and the
"src_sample_losses"/"dst_sample_losses" (B,) vectors for the whole batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from train.layers import keras, ops

StepFunction = Callable[[tuple[np.ndarray, ...], int, int], dict[str, Any]]


def make_step(trainer: Any) -> StepFunction:
    """The compiled step of `trainer` for the backend keras runs on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_step(trainer)
    if backend == "jax":
        return _jax_step(trainer)
    if backend == "torch":
        return _torch_step(trainer)
    raise ValueError(f"no train step for the keras backend {backend!r}")


def compiled(function: Callable[..., Any], variables: Sequence[Any],
             rebuild: Callable[..., Any] | None = None) -> Callable[..., tuple[Any, ...] | Any]:
    """`function` (arrays in; a tuple or dataclass of tensors out) compiled for inference.

    `variables`: the variables `function` reads, which JAX passes in as arguments so that new weights
    need no new trace. The compiled function returns a tuple, or `rebuild(*outputs)` when given.
    """
    variables = list(variables)
    backend = keras.backend.backend()

    def as_tuple(*args):
        result = function(*args)
        if dataclasses.is_dataclass(result):
            return tuple(getattr(result, f.name) for f in dataclasses.fields(result))
        return tuple(result)

    if backend == "tensorflow":
        import tensorflow as tf

        inner = tf.function(as_tuple, reduce_retracing=True)
        run = lambda *args: inner(*[tf.constant(a) for a in args])  # noqa: E731
    elif backend == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return as_tuple(*args)

        jitted = jax.jit(pure)
        run = lambda *args: jitted([v.value for v in variables], *args)  # noqa: E731
    else:
        import torch

        def run(*args):
            with torch.no_grad():
                return as_tuple(*[ops.convert_to_tensor(a) for a in args])

    if rebuild is None:
        return run
    return lambda *args: rebuild(*run(*args))


# -- TensorFlow --------------------------------------------------------------------------------------

def _tensorflow_step(trainer: Any) -> StepFunction:
    import tensorflow as tf

    from train.step import LOSS_SCALE

    strategy = trainer.strategy

    def average(gradients: Sequence[Any]) -> list[Any]:
        """The mean of every replica's gradients (unchanged on one device): each replica's loss is a
        mean over its equal share, so this is the gradient of the whole batch's mean loss."""
        if strategy is None:
            return list(gradients)
        present = [g for g in gradients if g is not None]
        averaged = iter(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, present))
        return [None if g is None else next(averaged) for g in gradients]

    def replica_step(batch, step, seed):
        model_variables = list(trainer.model.named_variables().values())
        trainable = trainer.trainable_model_variables()
        with tf.GradientTape() as tape:
            generated = trainer.generator_losses(batch)
            scaled = generated.total * LOSS_SCALE if trainer.float16 else generated.total
        gradients = tape.gradient(scaled, trainable)
        if trainer.float16:
            gradients = [None if g is None else g / LOSS_SCALE for g in gradients]
        by_id = dict(zip([id(v) for v in trainable], average(gradients)))
        full = [by_id.get(id(v)) for v in model_variables]
        skip = None
        if trainer.float16:  # after the average, so that every replica agrees on skipping a step
            skip = tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in full if g is not None]))
        trainer.optimizer.apply_gradients(full, step, seed, skip=skip)
        if trainer.trains_gan:
            gan_variables = list(trainer.gan.named_variables().values())
            with tf.GradientTape() as tape:
                d_loss = trainer.gan_loss(batch[1], generated)
            trainer.gan_optimizer.apply_gradients(average(tape.gradient(d_loss, gan_variables)), step, seed + 1)
        if trainer.trains_code_discriminator:
            code_variables = list(trainer.code_discriminator.named_variables().values())
            with tf.GradientTape() as tape:
                c_loss = trainer.code_loss(generated)
            trainer.code_optimizer.apply_gradients(average(tape.gradient(c_loss, code_variables)), step, seed + 2)
        return trainer.reported(generated, step)

    if strategy is None:
        # XLA (jit_compile) measured no faster on 2 CPU cores (5.47 s vs 5.20 s per liae-ud 128 step).
        function = tf.function(replica_step, reduce_retracing=True)

        def run(batch, step, seed):
            return function(tuple(tf.constant(a) for a in batch), tf.constant(step, tf.int32),
                            tf.constant(seed, tf.int32))
    else:
        from train.distribute import split_batch

        @tf.function(reduce_retracing=True)
        def distributed(batch, step, seed):
            outputs = strategy.run(replica_step, args=(batch, step, seed))
            return {name: strategy.gather(value, axis=0) if name.endswith("sample_losses")
                    else strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                    for name, value in outputs.items()}

        def run(batch, step, seed):
            return distributed(split_batch(strategy, batch), tf.constant(step, tf.int32), tf.constant(seed, tf.int32))

    def step_function(batch, step, seed):
        return {name: value.numpy() for name, value in run(batch, step, seed).items()}

    return step_function


# -- JAX ---------------------------------------------------------------------------------------------

def _jax_step(trainer: Any) -> StepFunction:
    import jax
    import jax.numpy as jnp

    pure, state = _jax_pure_step(trainer)
    jitted = jax.jit(pure, donate_argnums=(0,))
    shard = _jax_batch_placer(trainer.strategy)

    def step_function(batch, step, seed):
        values = [variable.value for variable in state]
        new_values, reported = jitted(values, shard(batch), jnp.asarray(step, jnp.int32), jnp.asarray(seed, jnp.int32))
        for variable, value in zip(state, new_values):
            variable.assign(value)
        return {name: np.asarray(value) for name, value in reported.items()}

    return step_function


def lowered_jax_step(trainer: Any, batch: Sequence[np.ndarray]) -> Any:
    """The JAX step lowered for `batch` (its compiled form reports XLA's memory analysis)."""
    import jax
    import jax.numpy as jnp

    pure, state = _jax_pure_step(trainer)
    shard = _jax_batch_placer(trainer.strategy)
    return jax.jit(pure, donate_argnums=(0,)).lower([v.value for v in state], shard(batch), jnp.asarray(1, jnp.int32),
                                                    jnp.asarray(0, jnp.int32))


def _jax_pure_step(trainer: Any) -> tuple[Callable[..., Any], list[Any]]:
    """The step as a pure function of (variable values, batch, step, seed) -> (new values, reported),
    and the variables, in the order of the values."""
    import jax
    import jax.numpy as jnp

    from train.model import Forward
    from train.step import LOSS_SCALE, GeneratorLosses

    state = list(trainer.named_state().values())
    position = {id(variable): index for index, variable in enumerate(state)}
    trainable_positions = [position[id(v)] for v in trainer.trainable_model_variables()]
    trainable_set = set(trainable_positions)

    def optimizer_positions(optimizer):
        return ([position[id(v)] for v in optimizer.model_variables],
                [[position[id(slot)] for slot in group] for group in optimizer.slots])

    def mapping(values):
        return list(zip(state, values))

    def apply(optimizer, values, gradients_by_position, step, seed, skip=None):
        weights, slots = optimizer_positions(optimizer)
        gradients = [gradients_by_position.get(p) for p in weights]
        new_weights, new_slots = optimizer.apply(gradients, [values[p] for p in weights],
                                                 [tuple(values[p] for p in group) for group in slots],
                                                 step, seed, skip)
        updates = dict(zip(weights, new_weights))
        for group, new in zip(slots, new_slots):
            updates.update(zip(group, new))
        return updates

    def pure(values, batch, step, seed):
        def generator(trainable_values):
            current = list(values)
            for p, value in zip(trainable_positions, trainable_values):
                current[p] = value
            with keras.StatelessScope(state_mapping=mapping(current)):
                generated = trainer.generator_losses(batch)
            scaled = generated.total * LOSS_SCALE if trainer.float16 else generated.total
            forward = tuple(getattr(generated.forward, f.name) for f in dataclasses.fields(Forward))
            return scaled, (generated.total, generated.src_loss, generated.dst_loss, forward, generated.src_blurred)

        (_, aux), gradients = jax.value_and_grad(generator, has_aux=True)([values[p] for p in trainable_positions])
        total, src_loss, dst_loss, forward, src_blurred = aux
        generated = GeneratorLosses(total, src_loss, dst_loss, Forward(*forward), src_blurred)
        if trainer.float16:
            gradients = [g / LOSS_SCALE for g in gradients]
        by_position = dict(zip(trainable_positions, gradients))
        skip = None
        if trainer.float16:
            skip = jnp.logical_not(jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in gradients])))
        updates = apply(trainer.optimizer, values, {p: g for p, g in by_position.items() if p in trainable_set},
                        step, seed, skip)
        for module, optimizer, loss, offset in (
                (trainer.gan if trainer.trains_gan else None, trainer.gan_optimizer,
                 lambda: trainer.gan_loss(batch[1], generated), 1),
                (trainer.code_discriminator if trainer.trains_code_discriminator else None, trainer.code_optimizer,
                 lambda: trainer.code_loss(generated), 2)):
            if module is None:
                continue
            weights, _ = optimizer_positions(optimizer)

            def discriminator(weight_values, weights=weights, loss=loss):
                current = list(values)
                for p, value in zip(weights, weight_values):
                    current[p] = value
                with keras.StatelessScope(state_mapping=mapping(current)):
                    return loss()

            d_gradients = jax.grad(discriminator)([values[p] for p in weights])
            updates.update(apply(optimizer, values, dict(zip(weights, d_gradients)), step, seed + offset))
        new_values = [updates.get(p, value) for p, value in enumerate(values)]
        with keras.StatelessScope(state_mapping=mapping(values)):
            reported = trainer.reported(generated, step)
        return new_values, reported

    return pure, state


def _jax_batch_placer(distribution: Any) -> Callable[[Sequence[np.ndarray]], tuple[Any, ...]]:
    """How batches reach the devices: as they are on one device; split along the batch axis over the
    mesh under keras.distribution.DataParallel."""
    import jax.numpy as jnp

    if distribution is None:
        return lambda batch: tuple(jnp.asarray(a) for a in batch)
    import jax

    def place(batch):
        return tuple(jax.device_put(a, distribution.get_data_layout(a.shape).backend_layout) for a in batch)

    return place


# -- torch -------------------------------------------------------------------------------------------

def _torch_step(trainer: Any) -> StepFunction:
    import torch

    from train.step import LOSS_SCALE

    group = trainer.strategy  # train.distribute.TorchGroup or None

    def average(gradients: Sequence[Any]) -> list[Any]:
        if group is None:
            return list(gradients)
        import torch.distributed as dist

        averaged = []
        for gradient in gradients:
            if gradient is not None:
                gradient = gradient.contiguous()
                dist.all_reduce(gradient, op=dist.ReduceOp.SUM)
                gradient = gradient / group.world_size
            averaged.append(gradient)
        return averaged

    def gradients_of(loss, variables):
        values = [v.value for v in variables]
        found = torch.autograd.grad(loss, values, allow_unused=True)
        return average([None if g is None else g.detach() for g in found])

    def step_function(batch, step, seed):
        if group is not None:
            batch = group.local_rows(batch)
        tensors = tuple(ops.convert_to_tensor(np.ascontiguousarray(a)) for a in batch)
        model_variables = list(trainer.model.named_variables().values())
        trainable = trainer.trainable_model_variables()
        generated = trainer.generator_losses(tensors)
        scaled = generated.total * LOSS_SCALE if trainer.float16 else generated.total
        gradients = gradients_of(scaled, trainable)
        if trainer.float16:
            gradients = [None if g is None else g / LOSS_SCALE for g in gradients]
        by_id = dict(zip([id(v) for v in trainable], gradients))
        full = [by_id.get(id(v)) for v in model_variables]
        with torch.no_grad():
            skip = None
            if trainer.float16:
                skip = torch.logical_not(torch.stack([torch.isfinite(g).all() for g in full if g is not None]).all())
            trainer.optimizer.apply_gradients(full, step, seed, skip=skip)
        if trainer.trains_gan:
            gan_variables = list(trainer.gan.named_variables().values())
            d_gradients = gradients_of(trainer.gan_loss(tensors[1], generated), gan_variables)
            with torch.no_grad():
                trainer.gan_optimizer.apply_gradients(d_gradients, step, seed + 1)
        if trainer.trains_code_discriminator:
            code_variables = list(trainer.code_discriminator.named_variables().values())
            c_gradients = gradients_of(trainer.code_loss(generated), code_variables)
            with torch.no_grad():
                trainer.code_optimizer.apply_gradients(c_gradients, step, seed + 2)
        with torch.no_grad():
            reported = {name: value.detach() for name, value in trainer.reported(generated, step).items()}
        if group is not None:
            reported = group.gather_reported(reported)
        return {name: value.detach().cpu().numpy() for name, value in reported.items()}

    return step_function
