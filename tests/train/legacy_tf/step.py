"""The TensorFlow-only train step as it was before the Keras 3 port (commit 8bc8dd1), kept as the parity reference."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import tensorflow as tf

from tests.train.legacy_tf import losses
from train.config import TrainConfig
from tests.train.legacy_tf.discriminators import CodeDiscriminator, UNetPatchDiscriminator
from tests.train.legacy_tf.model import Architecture, Forward, ModelShape, SAEHDModel
from tests.train.legacy_tf.optimizers import AdaBelief, RMSprop, learning_rate_at

log = logging.getLogger(__name__)

LR_DROPOUT_KEEP = 0.3  # SAEHD: about 30% of the weights move on each step
CLIP_NORM = 1.0
LOSS_SCALE = 2.0 ** 12  # static loss scale for float16 compute; steps with non-finite gradients are skipped


def model_shape(config: TrainConfig) -> ModelShape:
    shape = ModelShape(resolution=config.resolution, archi=Architecture.parse(config.archi),
                       ae_dims=config.ae_dims, e_dims=config.e_dims, d_dims=config.d_dims,
                       d_mask_dims=config.effective_d_mask_dims)
    shape.validate()
    return shape


@dataclass(frozen=True)
class StepResult:
    """What one train step reports (numpy scalars)."""

    src_loss: float
    dst_loss: float
    output_std: float  # spatial std of the src reconstructions: ~0 when the output is uniform
    learning_rate: float


def _fields(record) -> list[tuple[str, object]]:
    return [(item.name, getattr(record, item.name)) for item in fields(record)]


def _masked(images: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    return images if mask is None else images * mask


class SAEHDTrainer:
    """The model, discriminators and optimisers of one training run, and its compiled step.

    Options that change the step (phase, clipgrad) call `reconfigure()`, which keeps every weight and
    optimiser slot and traces a new step.

    With a tf.distribute `strategy` every variable is mirrored on each replica's device; a step splits
    the batch evenly over the replicas, averages the gradients across them and applies the same update
    on every replica. Without one (None) the step runs on one device exactly as it always has.
    """

    def __init__(self, config: TrainConfig, compute_dtype: str = "float32", strategy: Any = None):
        self.config = config
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.strategy = strategy  # tf.distribute.Strategy or None
        self.replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
        self.shape = model_shape(config)
        with self._variable_scope():
            self.model = SAEHDModel(self.shape, seed=config.seed, compute_dtype=self.compute_dtype)
            named = self.model.named_variables()
            self._model_names = list(named)
            self.optimizer = self._make_optimizer(list(named.values()), self._model_names, "model_opt")
        self.gan: UNetPatchDiscriminator | None = None
        self.gan_optimizer = None
        self.code_discriminator: CodeDiscriminator | None = None
        self.code_optimizer = None
        self._ensure_discriminators()
        self._step_function = None

    def _variable_scope(self):
        """Where variables are made: the strategy's scope (mirrored on every replica) or as they are."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    # -- construction ---------------------------------------------------------------------------
    def _make_optimizer(self, variables: list[tf.Variable], names: list[str], name: str):
        config = self.config
        kind = AdaBelief if config.optimizer == "adabelief" else RMSprop
        return kind(variables, names=names, learning_rate=config.learning_rate,
                    lr_dropout=LR_DROPOUT_KEEP if config.lr_dropout and not config.pretrain else 1.0,
                    clip_norm=CLIP_NORM if config.clipgrad else 0.0, name=name)

    def _ensure_discriminators(self) -> None:
        with self._variable_scope():
            self._make_discriminators()

    def _make_discriminators(self) -> None:
        config = self.config
        if config.gan_power > 0 and self.gan is None:
            self.gan = UNetPatchDiscriminator(in_ch=3, patch_size=config.effective_gan_patch_size,
                                              base_dims=config.gan_dims, seed=config.seed + 1)
            named = self.gan.named_variables()
            self.gan_optimizer = self._make_optimizer(list(named.values()), list(named), "gan_opt")
        if config.true_face_power > 0 and self.code_discriminator is None:
            self.code_discriminator = CodeDiscriminator(in_ch=self._code_channels(),
                                                        code_res=self.model.code_resolution,
                                                        seed=config.seed + 2)
            named = self.code_discriminator.named_variables()
            self.code_optimizer = self._make_optimizer(list(named.values()), list(named), "code_opt")

    def _code_channels(self) -> int:
        probe = tf.zeros((1, self.shape.resolution, self.shape.resolution, 3))
        return int(self.model.forward(probe, probe).src_code.shape[-1])

    def reconfigure(self, config: TrainConfig) -> None:
        """Adopt new non-structural options (phase, clipgrad, powers) keeping weights and slots."""
        self.config = config
        for optimizer in (self.optimizer, self.gan_optimizer, self.code_optimizer):
            if optimizer is not None:
                optimizer.lr_dropout = LR_DROPOUT_KEEP if config.lr_dropout and not config.pretrain else 1.0
                optimizer.clip_norm = CLIP_NORM if config.clipgrad else 0.0
                optimizer.learning_rate = config.learning_rate
        self._ensure_discriminators()
        self._step_function = None

    # -- state --------------------------------------------------------------------------------
    def named_state(self) -> dict[str, tf.Variable]:
        """Every variable that a checkpoint holds, by stable name."""
        state = {f"model/{name}": variable for name, variable in self.model.named_variables().items()}
        state.update(self.optimizer.slot_variables())
        for prefix, module, optimizer in (("gan", self.gan, self.gan_optimizer),
                                          ("code_d", self.code_discriminator, self.code_optimizer)):
            if module is not None:
                state.update({f"{prefix}/{name}": v for name, v in module.named_variables().items()})
                state.update(optimizer.slot_variables())
        return state

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: variable.numpy() for name, variable in self.named_state().items()}

    def load_arrays(self, arrays: dict[str, np.ndarray], strict: bool = True) -> list[str]:
        """Assign saved arrays by name; returns names absent from `arrays` (e.g. a new discriminator)."""
        missing = []
        for name, variable in self.named_state().items():
            if name not in arrays:
                missing.append(name)
                continue
            value = arrays[name]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"checkpoint array {name} has shape {value.shape}, the model "
                                 f"expects {tuple(variable.shape)}")
            variable.assign(value)
        if strict and any(name.startswith("model/") for name in missing):
            raise ValueError(f"checkpoint lacks model weights: {missing[:3]}")
        return missing

    # -- the step --------------------------------------------------------------------------------
    def _side_loss(self, target, predicted, mask, eyes_mouth, predicted_mask):
        config = self.config
        blurred = losses.blurred_mask(mask, config.resolution) if config.masked_training else None
        loss = losses.reconstruction_loss(_masked(target, blurred), _masked(predicted, blurred),
                                          config.resolution)
        if config.eyes_mouth_prio:
            loss += losses.eyes_mouth_loss(target, predicted, eyes_mouth)
        return loss + losses.mask_loss(mask, predicted_mask), blurred

    def _generator_losses(self, forward: Forward, src_target, src_mask, src_eyes_mouth, dst_target,
                          dst_mask, dst_eyes_mouth):
        config = self.config
        src_loss, src_blurred = self._side_loss(src_target, forward.src_src, src_mask, src_eyes_mouth,
                                                forward.src_src_mask)
        dst_loss, dst_blurred = self._side_loss(dst_target, forward.dst_dst, dst_mask, dst_eyes_mouth,
                                                forward.dst_dst_mask)
        if config.face_style_power > 0:
            # The swap inside its own mask should carry the dst face's colour statistics.
            reference = tf.stop_gradient(forward.dst_dst * forward.dst_dst_mask)
            src_loss += losses.style_loss(forward.src_dst * forward.src_dst_mask, reference,
                                          blur_radius=max(1, config.resolution // 8),
                                          power=config.face_style_power)
        if config.bg_style_power > 0:
            # SAEHD uses the src mask here by accident; the swap lives in dst geometry, so the dst
            # mask is the one that separates its face from its background.
            background_mask = dst_blurred if dst_blurred is not None else dst_mask
            src_loss += losses.background_style_loss(dst_target, forward.src_dst, background_mask,
                                                     config.resolution, config.bg_style_power)
        total = tf.reduce_mean(src_loss) + tf.reduce_mean(dst_loss)
        if self.gan is not None and config.gan_power > 0:
            fake = _masked(forward.src_src, src_blurred)
            low, full = self.gan(fake)
            gan_loss = config.gan_power * losses.gan_generator_loss(low, full)
            if src_blurred is not None:
                outside = 1.0 - src_blurred
                gan_loss += 1e-6 * losses.total_variation_mse(forward.src_src)
                gan_loss += 0.02 * losses.mean_squared_error(forward.src_src * outside, src_target * outside)
            total += tf.reduce_mean(gan_loss)
        if self.code_discriminator is not None and config.true_face_power > 0:
            total += tf.reduce_mean(losses.true_face_generator_loss(
                self.code_discriminator(forward.src_code), config.true_face_power))
        return total, src_loss, dst_loss, src_blurred

    def _train_step(self, src_input, src_target, src_mask, src_eyes_mouth, dst_input, dst_target, dst_mask,
                    dst_eyes_mouth, step, seed):
        config = self.config
        model_variables = self.model.trainable_variables_for(freeze_inter_ab=not config.random_warp)
        trainable_ids = {id(v) for v in model_variables}
        all_variables = list(self.model.named_variables().values())
        mixed = self.compute_dtype == tf.float16
        with tf.GradientTape() as tape:
            inputs = (src_input, dst_input)
            if mixed:
                inputs = tuple(tf.cast(x, tf.float16) for x in inputs)
            forward = self.model.forward(*inputs)
            if mixed:
                forward = Forward(**{name: tf.cast(value, tf.float32)
                                     for name, value in _fields(forward)})
            total, src_loss, dst_loss, src_blurred = self._generator_losses(
                forward, src_target, src_mask, src_eyes_mouth, dst_target, dst_mask, dst_eyes_mouth)
            scaled = total * LOSS_SCALE if mixed else total
        gradients = tape.gradient(scaled, [v for v in all_variables if id(v) in trainable_ids])
        if mixed:
            gradients = [None if g is None else g / LOSS_SCALE for g in gradients]
        gradients = self._averaged_over_replicas(gradients)
        by_id = dict(zip([id(v) for v in all_variables if id(v) in trainable_ids], gradients))
        full_gradients = [by_id.get(id(v)) for v in all_variables]
        if mixed:
            # After the average, so that every replica agrees on skipping a step.
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in full_gradients if g is not None])
            self.optimizer.apply_gradients(full_gradients, step, seed, skip=tf.logical_not(finite))
        else:
            self.optimizer.apply_gradients(full_gradients, step, seed)

        if self.gan is not None and config.gan_power > 0:
            with tf.GradientTape() as tape:
                real_low, real_full = self.gan(_masked(src_target, src_blurred))
                fake_low, fake_full = self.gan(tf.stop_gradient(_masked(forward.src_src, src_blurred)))
                d_loss = tf.reduce_mean(losses.gan_discriminator_loss(real_low, real_full, fake_low, fake_full))
            gan_variables = list(self.gan.named_variables().values())
            self.gan_optimizer.apply_gradients(
                self._averaged_over_replicas(tape.gradient(d_loss, gan_variables)), step, seed + 1)
        if self.code_discriminator is not None and config.true_face_power > 0:
            with tf.GradientTape() as tape:
                c_loss = tf.reduce_mean(losses.code_discriminator_loss(
                    self.code_discriminator(tf.stop_gradient(forward.dst_code)),
                    self.code_discriminator(tf.stop_gradient(forward.src_code))))
            code_variables = list(self.code_discriminator.named_variables().values())
            self.code_optimizer.apply_gradients(
                self._averaged_over_replicas(tape.gradient(c_loss, code_variables)), step, seed + 2)
        _, variance = tf.nn.moments(forward.src_src, axes=[1, 2])
        return (tf.reduce_mean(src_loss), tf.reduce_mean(dst_loss), tf.reduce_mean(tf.sqrt(variance)),
                learning_rate_at(step, config.learning_rate, self.optimizer.lr_dropout < 1.0))

    def _averaged_over_replicas(self, gradients: Sequence[tf.Tensor | None]) -> list[tf.Tensor | None]:
        """The mean of every replica's gradients (unchanged on one device).

        Each replica's loss is a mean over its equal share of the batch, so the mean of the replicas'
        gradients is the gradient of the whole batch's mean loss: the single-device step, up to the
        order of float additions.
        """
        if self.strategy is None:
            return list(gradients)
        present = [g for g in gradients if g is not None]
        averaged = iter(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, present))
        return [None if g is None else next(averaged) for g in gradients]

    def train_step(self, batch_tensors: tuple[np.ndarray, ...], step: int, seed: int) -> StepResult:
        """One optimisation step on a batch (`Batch.tensors()` order); `step` is 1-based.

        With a strategy the batch is the global one: each replica trains on its batch / replicas rows.
        """
        if self._step_function is None:
            # XLA (jit_compile) measured no faster on 2 CPU cores (5.47 s vs 5.20 s per liae-ud 128 step).
            function = self._train_step if self.strategy is None else self._distributed_step
            self._step_function = tf.function(function, reduce_retracing=True)
        step_tensor, seed_tensor = tf.constant(step, tf.int64), tf.constant(seed, tf.int64)
        if self.strategy is None:
            outputs = self._step_function(*batch_tensors, step_tensor, seed_tensor)
        else:
            raise NotImplementedError("the legacy reference runs on one device")
        src, dst, std, rate = (float(x) for x in outputs)
        return StepResult(src_loss=src, dst_loss=dst, output_std=std, learning_rate=rate)

    # -- inference ---------------------------------------------------------------------------------
    def predict(self, src_faces: np.ndarray, dst_faces: np.ndarray) -> Forward:
        """The forward pass on un-warped faces (previews, validation): float32 NHWC in, numpy out."""
        forward = self._predict_function()(tf.constant(src_faces, tf.float32),
                                           tf.constant(dst_faces, tf.float32))
        return Forward(**{name: value.numpy() for name, value in _fields(forward)})

    def _predict_function(self):
        if getattr(self, "_predict", None) is None:
            self._predict = tf.function(self.model.forward, reduce_retracing=True)
        return self._predict

    def reconstruction_losses(self, src_faces, src_masks, src_eyes_mouth, dst_faces, dst_masks,
                              dst_eyes_mouth) -> tuple[np.ndarray, np.ndarray]:
        """Per-face src and dst losses, no update (validation loss on held-out faces)."""
        forward = self.model.forward(tf.constant(src_faces), tf.constant(dst_faces))
        src_loss, _ = self._side_loss(tf.constant(src_faces), forward.src_src, tf.constant(src_masks),
                                      tf.constant(src_eyes_mouth), forward.src_src_mask)
        dst_loss, _ = self._side_loss(tf.constant(dst_faces), forward.dst_dst, tf.constant(dst_masks),
                                      tf.constant(dst_eyes_mouth), forward.dst_dst_mask)
        return src_loss.numpy(), dst_loss.numpy()
