"""The SAEHD networks, their optimisers and the one train step (SAEHD.md §3 loss recipe), on Keras 3.

The losses are written once, on `keras.ops` (`generator_losses`, `discriminator_losses`); how a step
takes gradients is the only part that differs per backend (`train/gradients.py`: GradientTape under
`tf.function`, `jax.value_and_grad` under `jit`, torch autograd).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from train import losses
from train.config import TrainConfig
from train.discriminators import CodeDiscriminator, UNetPatchDiscriminator
from train.distribute import check_batch_split, replica_count, variable_scope
from train.layers import keras, ops, to_host
from train.model import Forward, SAEHDModel
from train.optimizers import AdaBelief, RMSprop, learning_rate_at, to_int32
from train.shape import model_shape

log = logging.getLogger(__name__)

LR_DROPOUT_KEEP = 0.3  # SAEHD: about 30% of the weights move on each step
CLIP_NORM = 1.0
LOSS_SCALE = 2.0 ** 12  # static loss scale for float16 compute; steps with non-finite gradients are skipped
BATCH_FIELDS = ("src_input", "src_target", "src_mask", "src_eyes_mouth", "dst_input", "dst_target", "dst_mask",
                "dst_eyes_mouth")

__all__ = ["CLIP_NORM", "LOSS_SCALE", "LR_DROPOUT_KEEP", "SAEHDTrainer", "StepResult", "model_shape"]


@dataclass(frozen=True)
class StepResult:
    """What one train step reports: the batch means, and each face's own loss beside them."""

    src_loss: float
    dst_loss: float
    output_std: float  # spatial std of the src reconstructions: ~0 when the output is uniform
    learning_rate: float
    # (B,) float32, row i = batch row i (the whole batch, gathered from every replica): the per-face
    # losses the means above average — reconstruction plus, on src, the face- and background-style
    # terms (each computed per face); the GAN and true-face terms are not per face and are not in them
    src_sample_losses: np.ndarray | None = None
    dst_sample_losses: np.ndarray | None = None


@dataclass(frozen=True)
class GeneratorLosses:
    """The generator's side of a step: the scalar it minimises and what the rest of the step needs."""

    total: Any  # scalar: the mean src + dst loss plus GAN, true-face and style terms
    src_loss: Any  # (B,) per-sample src reconstruction (+ style) loss
    dst_loss: Any  # (B,)
    forward: Forward
    src_blurred: Any  # the blurred src training mask, None without masked training


def _fields(record) -> list[tuple[str, object]]:
    return [(item.name, getattr(record, item.name)) for item in fields(record)]


def _masked(images: Any, mask: Any | None) -> Any:
    return images if mask is None else images * mask


class SAEHDTrainer:
    """The model, discriminators and optimisers of one training run, and its compiled step.

    Options that change the step (phase, clipgrad) call `reconfigure()`, which keeps every weight and
    optimiser slot and builds a new step.

    `strategy` spreads each step over several devices or processes (see train/distribute.py): a
    tf.distribute strategy, a keras.distribution.DataParallel (JAX) or a torch process group. The batch
    is the global one; each replica's gradients are averaged before one identical update everywhere.
    """

    def __init__(self, config: TrainConfig, compute_dtype: str = "float32", strategy: Any = None):
        self.config = config
        self.backend = keras.backend.backend()
        self.compute_dtype = str(getattr(compute_dtype, "name", compute_dtype))
        self.strategy = strategy
        self.replicas = replica_count(strategy)
        if strategy is not None:
            check_batch_split(config.batch_size, self.replicas)
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
        self._predict = None

    def _variable_scope(self):
        """Where variables are made: the strategy's scope (mirrored or replicated) or as they are."""
        return contextlib.nullcontext() if self.strategy is None else variable_scope(self.strategy)

    # -- construction ---------------------------------------------------------------------------
    def _make_optimizer(self, variables: list[Any], names: list[str], name: str):
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
        """The decoder input's channels: DF's inter output (ae_dims), LIAE's two codes (4·ae_dims)."""
        return self.shape.ae_dims if not self.model.is_liae else 4 * self.shape.ae_dims

    def reconfigure(self, config: TrainConfig) -> None:
        """Adopt new non-structural options (phase, clipgrad, powers) keeping weights and slots."""
        if self.strategy is not None:
            check_batch_split(config.batch_size, self.replicas)
        self.config = config
        for optimizer in self.optimizers():
            optimizer.lr_dropout = LR_DROPOUT_KEEP if config.lr_dropout and not config.pretrain else 1.0
            optimizer.clip_norm = CLIP_NORM if config.clipgrad else 0.0
            optimizer.learning_rate = config.learning_rate
        self._ensure_discriminators()
        self._step_function = None

    def optimizers(self) -> list[Any]:
        return [o for o in (self.optimizer, self.gan_optimizer, self.code_optimizer) if o is not None]

    def reinitialise_inters(self) -> None:
        """The inter blocks back to their initial values (leaving pretraining)."""
        self.model.reinitialise_inters()

    # -- state --------------------------------------------------------------------------------
    def named_state(self) -> dict[str, Any]:
        """Every variable that a checkpoint holds, by stable name (the names TensorFlow-only
        facesmith used, so its checkpoints load)."""
        state = {f"model/{name}": variable for name, variable in self.model.named_variables().items()}
        state.update(self.optimizer.slot_variables())
        for prefix, module, optimizer in (("gan", self.gan, self.gan_optimizer),
                                          ("code_d", self.code_discriminator, self.code_optimizer)):
            if module is not None:
                state.update({f"{prefix}/{name}": v for name, v in module.named_variables().items()})
                state.update(optimizer.slot_variables())
        return state

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: to_host(variable.value)
                for name, variable in self.named_state().items()}

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
            variable.assign(np.asarray(value, np.float32))
        if strict and any(name.startswith("model/") for name in missing):
            raise ValueError(f"checkpoint lacks model weights: {missing[:3]}")
        return missing

    # -- the losses (written once, for every backend) ------------------------------------------------
    def _side_loss(self, target, predicted, mask, eyes_mouth, predicted_mask):
        config = self.config
        blurred = losses.blurred_mask(mask, config.resolution) if config.masked_training else None
        loss = losses.reconstruction_loss(_masked(target, blurred), _masked(predicted, blurred), config.resolution)
        if config.eyes_mouth_prio:
            loss = loss + losses.eyes_mouth_loss(target, predicted, eyes_mouth)
        return loss + losses.mask_loss(mask, predicted_mask), blurred

    def generator_losses(self, batch: Sequence[Any]) -> GeneratorLosses:
        """The forward pass and every generator term for a batch (`Batch.tensors()` order)."""
        config = self.config
        src_input, src_target, src_mask, src_eyes_mouth, dst_input, dst_target, dst_mask, dst_eyes_mouth = batch
        forward = self.model.forward(src_input, dst_input)
        src_loss, src_blurred = self._side_loss(src_target, forward.src_src, src_mask, src_eyes_mouth,
                                                forward.src_src_mask)
        dst_loss, dst_blurred = self._side_loss(dst_target, forward.dst_dst, dst_mask, dst_eyes_mouth,
                                                forward.dst_dst_mask)
        if config.face_style_power > 0:
            # The swap inside its own mask should carry the dst face's colour statistics.
            reference = ops.stop_gradient(forward.dst_dst * forward.dst_dst_mask)
            src_loss = src_loss + losses.style_loss(forward.src_dst * forward.src_dst_mask, reference,
                                                    blur_radius=max(1, config.resolution // 8),
                                                    power=config.face_style_power)
        if config.bg_style_power > 0:
            # SAEHD uses the src mask here by accident; the swap lives in dst geometry, so the dst
            # mask is the one that separates its face from its background.
            background_mask = dst_blurred if dst_blurred is not None else dst_mask
            src_loss = src_loss + losses.background_style_loss(dst_target, forward.src_dst, background_mask,
                                                               config.resolution, config.bg_style_power)
        total = ops.mean(src_loss) + ops.mean(dst_loss)
        if self.gan is not None and config.gan_power > 0:
            low, full = self.gan(_masked(forward.src_src, src_blurred))
            gan_loss = config.gan_power * losses.gan_generator_loss(low, full)
            if src_blurred is not None:
                outside = 1.0 - src_blurred
                gan_loss = gan_loss + 1e-6 * losses.total_variation_mse(forward.src_src)
                gan_loss = gan_loss + 0.02 * losses.mean_squared_error(forward.src_src * outside, src_target * outside)
            total = total + ops.mean(gan_loss)
        if self.code_discriminator is not None and config.true_face_power > 0:
            total = total + ops.mean(losses.true_face_generator_loss(
                self.code_discriminator(forward.src_code), config.true_face_power))
        return GeneratorLosses(total, src_loss, dst_loss, forward, src_blurred)

    def gan_loss(self, src_target: Any, generated: GeneratorLosses) -> Any:
        """The patch discriminator's loss: real (masked) src faces against the reconstructions."""
        real_low, real_full = self.gan(_masked(src_target, generated.src_blurred))
        fake = ops.stop_gradient(_masked(generated.forward.src_src, generated.src_blurred))
        fake_low, fake_full = self.gan(fake)
        return ops.mean(losses.gan_discriminator_loss(real_low, real_full, fake_low, fake_full))

    def code_loss(self, generated: GeneratorLosses) -> Any:
        """The code discriminator's loss: dst codes are "real", src codes "fake"."""
        return ops.mean(losses.code_discriminator_loss(
            self.code_discriminator(ops.stop_gradient(generated.forward.dst_code)),
            self.code_discriminator(ops.stop_gradient(generated.forward.src_code))))

    @property
    def float16(self) -> bool:
        return self.compute_dtype == "float16"

    @property
    def trains_gan(self) -> bool:
        return self.gan is not None and self.config.gan_power > 0

    @property
    def trains_code_discriminator(self) -> bool:
        return self.code_discriminator is not None and self.config.true_face_power > 0

    def trainable_model_variables(self) -> list[Any]:
        return self.model.trainable_variables_for(freeze_inter_ab=not self.config.random_warp)

    def reported(self, generated: GeneratorLosses, step: Any) -> dict[str, Any]:
        """The scalars and per-face vectors a step returns (means over this replica's rows)."""
        from train.losses import moments

        _, variance = moments(generated.forward.src_src, axes=(1, 2))
        return {"src_loss": ops.mean(generated.src_loss), "dst_loss": ops.mean(generated.dst_loss),
                "output_std": ops.mean(ops.sqrt(variance)),
                "learning_rate": learning_rate_at(step, self.config.learning_rate, self.optimizer.dropout_on),
                "src_sample_losses": generated.src_loss, "dst_sample_losses": generated.dst_loss}

    # -- the step ------------------------------------------------------------------------------
    def train_step(self, batch_tensors: tuple[np.ndarray, ...], step: int, seed: int) -> StepResult:
        """One optimisation step on a batch (`Batch.tensors()` order); `step` is 1-based.

        With a strategy the batch is the global one: each replica trains on its batch / replicas rows.
        """
        if self._step_function is None:
            from train.gradients import make_step

            self._step_function = make_step(self)
        outputs = self._step_function(tuple(np.asarray(a, np.float32) for a in batch_tensors), int(step),
                                      to_int32(seed))
        return StepResult(src_loss=float(outputs["src_loss"]), dst_loss=float(outputs["dst_loss"]),
                          output_std=float(outputs["output_std"]), learning_rate=float(outputs["learning_rate"]),
                          src_sample_losses=np.asarray(outputs["src_sample_losses"], np.float32),
                          dst_sample_losses=np.asarray(outputs["dst_sample_losses"], np.float32))

    def adopt_first_replica_state(self, counters: Sequence[int]) -> list[int]:
        """Every worker takes the weights, slots and `counters` (iteration, salt) of the chief.

        Multi-worker training: the chief resumed from its checkpoint while the other workers opened
        empty scratch folders; after this they all hold the chief's state, bitwise. Returns the
        chief's counters. Without a strategy there is nothing to adopt.
        """
        if self.strategy is None:
            return list(counters)
        from train.distribute import broadcast_from_chief

        variables = list(self.named_state().values())
        values = broadcast_from_chief(self.strategy, [to_host(v.value) for v in variables]
                                      + [np.asarray(list(counters), np.int64)])
        for variable, value in zip(variables, values):
            variable.assign(value)
        return [int(x) for x in np.asarray(values[-1])]

    # -- inference ---------------------------------------------------------------------------------
    def predict(self, src_faces: np.ndarray, dst_faces: np.ndarray) -> Forward:
        """The forward pass on un-warped faces (previews, validation): float32 NHWC in, numpy out."""
        if self._predict is None:
            from train.gradients import compiled

            self._predict = compiled(self.model.forward, list(self.model.named_variables().values()), Forward)
        forward = self._predict(np.asarray(src_faces, np.float32), np.asarray(dst_faces, np.float32))
        return Forward(**{name: to_host(value) for name, value in _fields(forward)})

    def reconstruction_losses(self, src_faces, src_masks, src_eyes_mouth, dst_faces, dst_masks,
                              dst_eyes_mouth) -> tuple[np.ndarray, np.ndarray]:
        """Per-face src and dst losses, no update (validation loss on held-out faces)."""
        tensors = [ops.convert_to_tensor(np.asarray(a, np.float32))
                   for a in (src_faces, src_masks, src_eyes_mouth, dst_faces, dst_masks, dst_eyes_mouth)]
        src, src_mask, src_em, dst, dst_mask, dst_em = tensors
        forward = self.model.forward(src, dst)
        src_loss, _ = self._side_loss(src, forward.src_src, src_mask, src_em, forward.src_src_mask)
        dst_loss, _ = self._side_loss(dst, forward.dst_dst, dst_mask, dst_em, forward.dst_dst_mask)
        return (to_host(src_loss), to_host(dst_loss))
