"""Every SAEHD training option declared once (type, default, range, help), loaded from TOML and flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from curate import options
from curate.errors import FacesmithError
from curate.options import OptionSpec, declare
from train.shape import model_shape

FACE_TYPES = ("half", "mid_full", "full", "whole_face", "head")
PHASES = ("rw", "lrd", "gan")
OPTIMIZERS = ("adabelief", "rmsprop")
COLOR_TRANSFER_CHOICES = ("none", "rct", "lct", "mkl", "idt", "sot")
DEVICE_CHOICES = ("auto", "cpu", "gpu")
STRATEGY_CHOICES = ("default", "mirrored", "multiworker")
BACKEND_CHOICES = ("auto", "tensorflow", "jax", "torch")
PRECISION_CHOICES = ("float32", "bfloat16", "float16")
# DeepFaceLab clips the mask decoder's width to 16..256 whatever d_dims // 3 gives.
MIN_MASK_DIMS = 16


class ConfigError(FacesmithError):
    """A training option has the wrong type, is out of range, or contradicts the model or phase."""


@dataclass(frozen=True)
class TrainConfig:
    """The whole training configuration. Structural options are fixed when the model is created.

    `None` in a phase-default option means "what the phase implies" (see `phase_defaults`);
    `resolve_config` replaces every `None` with a concrete value.
    """

    # -- structure: fixed at creation, stored in the model, they win on resume -----------------
    resolution: int = declare(128, "Face size in pixels the network sees and produces. Floored to a "
                              "multiple of 16 (32 with the -d variant).", minimum=64, maximum=640,
                              structural=True)
    face_type: str = declare("whole_face", "Crop of the face: half, mid_full, full, whole_face or head. "
                             "Training faces are re-cut from the curated crops to this type.",
                             choices=FACE_TYPES, structural=True)
    archi: str = declare("liae-ud", "Architecture: 'df' (one shared inter, two decoders; more src-like) "
                         "or 'liae' (two inters, one decoder; better with lighting differences), "
                         "optionally '-' and any of u (pixel norm), d (double resolution at the same "
                         "cost), t (deeper encoder), c (x*cos(x) activation).", structural=True)
    ae_dims: int = declare(256, "Width of the bottleneck: more holds more facial detail, costs memory.",
                           minimum=32, maximum=1024, structural=True)
    e_dims: int = declare(64, "Encoder base channels (rounded up to even).", minimum=16, maximum=256,
                          structural=True)
    d_dims: int = declare(64, "Decoder base channels (rounded up to even).", minimum=16, maximum=256,
                          structural=True)
    d_mask_dims: int = declare(0, "Mask-decoder base channels, 16..256; 0 means d_dims // 3 made even, "
                               "at least 16.", minimum=0, maximum=256, structural=True)
    # -- phase ------------------------------------------------------------------------------------
    phase: str = declare("rw", "Training phase: rw (random warp: learn the faces), lrd (warp off, "
                         "learning-rate dropout: refine detail), gan (adds the GAN: sharpen).",
                         choices=PHASES)
    random_warp: bool | None = declare(None, "Grid-warp the network inputs so the model learns shapes, "
                                       "not pixels. Default: on in rw, off otherwise.", phase_default=True)
    lr_dropout: bool | None = declare(None, "Learning-rate dropout: each step only ~30% of the weights move "
                                      "and the rate follows a 500-iteration cosine cycle. Default: on "
                                      "in lrd and gan.", phase_default=True)
    gan_power: float | None = declare(None, "Weight of the patch-GAN loss on the src reconstruction. "
                                      "Default: 0.1 in gan, 0 otherwise.", minimum=0.0, maximum=5.0,
                                      phase_default=True)
    pretrain: bool = declare(False, "Pretrain on a generic faceset for both sides: forces warp off, flips "
                             "on, GAN and styles off, uniform yaw on. Turning it off resets the "
                             "iteration count and re-initialises the inter blocks.")
    target_iter: int = declare(0, "Stop (and save) at this iteration; 0 trains until interrupted.",
                               minimum=0)
    auto_phases: bool = declare(False, "When the loss plateaus, move to the next phase (rw -> lrd -> gan) "
                                "instead of only advising it.")
    # -- losses -----------------------------------------------------------------------------------
    batch_size: int = declare(8, "Faces per side per iteration.", minimum=1, maximum=256)
    masked_training: bool = declare(True, "Restrict the loss to the (blurred) face mask so the background "
                                    "costs no capacity.")
    eyes_mouth_prio: bool = declare(False, "Extra L1 term (weight 300) on the eyes and mouth. Can lower the "
                                    "dst loss while hurting the merge: watch the merge checks.")
    blur_out_mask: bool = declare(False, "Blur the target background outside the mask.")
    uniform_yaw: bool = declare(False, "Sample faces evenly across yaw bins, so rare profiles are seen as "
                                "often as frontal faces.")
    true_face_power: float = declare(0.0, "DF only: push the src code towards the dst code with a code "
                                     "discriminator (typical 0.01).", minimum=0.0, maximum=1.0)
    face_style_power: float = declare(0.0, "Style loss of the swapped face inside the mask; start at 0.001 "
                                      "after ~10k iterations.", minimum=0.0, maximum=100.0)
    bg_style_power: float = declare(0.0, "Style loss of the swapped face's background (typical 2.0).",
                                    minimum=0.0, maximum=100.0)
    gan_patch_size: int = declare(0, "Receptive field of the GAN discriminator; 0 means resolution // 8.",
                                  minimum=0, maximum=640)
    gan_dims: int = declare(16, "GAN discriminator base channels.", minimum=4, maximum=512)
    # -- optimiser ---------------------------------------------------------------------------------
    optimizer: str = declare("adabelief", "adabelief (default, SAEHD's) or rmsprop.", choices=OPTIMIZERS)
    learning_rate: float = declare(5e-5, "Learning rate of every optimiser.", minimum=1e-7, maximum=1e-2)
    clipgrad: bool = declare(False, "Clip the global gradient norm at 1.0 (steadier, slightly slower).")
    clipgrad_on_collapse: bool = declare(True, "After a collapse rollback, continue with clipgrad on.")
    # -- augmentation ------------------------------------------------------------------------------
    random_src_flip: bool = declare(False, "Flip src faces horizontally (40% chance).")
    random_dst_flip: bool = declare(True, "Flip dst faces horizontally (40% chance).")
    random_hsv_power: float = declare(0.0, "Hue/saturation/value jitter of the src input (typical 0.05).",
                                      minimum=0.0, maximum=0.3)
    ct_mode: str = declare("none", "Recolour src samples towards a random dst face: none, rct, lct, mkl, "
                           "idt, sot.", choices=COLOR_TRANSFER_CHOICES)
    # -- data ----------------------------------------------------------------------------------------
    validation_share: float = declare(0.05, "Share of src faces held out for validation, never trained "
                                      "on (fixed at creation).", minimum=0.0, maximum=0.5)
    use_selection: bool = declare(True, "Train on the faces 'curate select' picked, when the faceset has "
                                  "a selection; otherwise on every face.")
    sampler_workers: int = declare(0, "Threads preparing batches; 0 means one per CPU core.", minimum=0,
                                   maximum=64)
    # -- loop, saving, monitoring --------------------------------------------------------------------
    seed: int = declare(0, "Seed of weights, sampling, augmentation and dropout (runs repeat exactly).",
                        minimum=0)
    save_every: int = declare(500, "Iterations between checkpoints.", minimum=1)
    backups_kept: int = declare(5, "Checkpoints kept (newest first); older ones are deleted.", minimum=1,
                                maximum=100)
    preview_every: int = declare(500, "Iterations between preview images.", minimum=1)
    log_every: int = declare(1, "Iterations between history rows (1 = every iteration).", minimum=1)
    plateau_threshold: float = declare(0.05, "A phase has plateaued when the loss falls by less than this "
                                       "share per tenfold of iterations.", minimum=0.0, maximum=1.0)
    plateau_min_iterations: int = declare(2000, "Iterations a phase runs before a plateau can be "
                                          "declared.", minimum=0)
    spike_factor: float = declare(4.0, "A loss above this multiple of its recent level is a collapse.",
                                  minimum=1.5)
    backend: str = declare("auto", "Framework that trains the model: auto (the first installed of torch, "
                           "jax and tensorflow that sees a GPU, else TensorFlow on the CPU), tensorflow, jax or "
                           "torch. One Keras 3 model runs on each; a checkpoint written by one resumes on "
                           "another.", choices=BACKEND_CHOICES)
    device: str = declare("auto", "auto (the GPU when the backend sees one), cpu or gpu.", choices=DEVICE_CHOICES)
    precision: str = declare("float32", "Compute precision: float32; bfloat16 (bfloat16 compute, float32 "
                             "weights and optimiser state: GPUs from Ampere on, recent CPUs); float16 (the "
                             "same with loss scaling, GPU only).", choices=PRECISION_CHOICES)
    strategy: str = declare("default", "Devices sharing each step. default: one device. mirrored: every GPU "
                            "of this machine (on a CPU-only machine its logical CPU devices, normally one): "
                            "use it with several GPUs (TensorFlow: tf.distribute; JAX: keras.distribution data "
                            "parallelism). multiworker: several processes, each started by the same command: "
                            "TensorFlow takes the cluster from TF_CONFIG, torch from torchrun (DDP); only the "
                            "chief (rank 0) writes the model folder. batch_size is the "
                            "global batch: each replica trains batch_size / replicas faces per side, so it "
                            "must divide evenly. Applies to this session only; checkpoints load with any "
                            "strategy.", choices=STRATEGY_CHOICES)

    def option_values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def effective_d_mask_dims(self) -> int:
        return self.d_mask_dims or max(MIN_MASK_DIMS, _even(self.d_dims // 3))

    @property
    def effective_gan_patch_size(self) -> int:
        return self.gan_patch_size or max(3, self.resolution // 8)

    @property
    def architecture_kind(self) -> str:
        return self.archi.split("-")[0]


def option_specs() -> tuple[OptionSpec, ...]:
    """The declarations of every training option, in declaration order."""
    return options.option_specs(TrainConfig)


STRUCTURAL_OPTIONS = tuple(spec.name for spec in option_specs() if spec.structural)


def phase_defaults(phase: str) -> dict[str, Any]:
    """What each phase implies for the options it governs (SAEHD practice: RW -> LRD -> GAN)."""
    if phase == "rw":
        return {"random_warp": True, "lr_dropout": False, "gan_power": 0.0}
    if phase == "lrd":
        return {"random_warp": False, "lr_dropout": True, "gan_power": 0.0}
    if phase == "gan":
        return {"random_warp": False, "lr_dropout": True, "gan_power": 0.1}
    raise ConfigError(f"unknown phase {phase!r}: choose one of {', '.join(PHASES)}")


# What pretraining forces, whatever else was asked (SAEHD.md §1, "Pretrain details").
_PRETRAIN_FORCED = {"random_warp": False, "random_src_flip": True, "random_dst_flip": True, "gan_power": 0.0,
                    "lr_dropout": False, "face_style_power": 0.0, "bg_style_power": 0.0,
                    "random_hsv_power": 0.0, "uniform_yaw": True, "true_face_power": 0.0}


def _even(value: int) -> int:
    return value + (value % 2)


def load_toml(path: Path) -> dict[str, Any]:
    """Option values from a TOML file: top-level keys, or the same keys under a [train] table (top level wins)."""
    return options.load_toml(path, "train", ConfigError, "config file")


def _parse_architecture(text: str) -> str:
    kind, _, letters = text.strip().lower().partition("-")
    if kind not in ("df", "liae") or len(set(letters)) != len(letters) or set(letters) - set("udtc") \
            or (text.count("-") and not letters):
        raise ConfigError(f"option archi must be 'df' or 'liae', optionally followed by '-' and any of "
                          f"the letters u, d, t, c (each once), e.g. 'liae-ud'; got {text!r}")
    ordered = "".join(letter for letter in "udtc" if letter in letters)
    return f"{kind}-{ordered}" if ordered else kind


def resolve_config(values: dict[str, Any], stored_structure: dict[str, Any] | None = None) -> tuple[
        TrainConfig, list[str]]:
    """A validated config from option values (TOML merged with flags, flags last).

    `stored_structure` holds the structural options of an existing model: they win, and a different
    value asked for is reported in the returned notes rather than silently applied.
    Returns the config and human-readable notes (forced or ignored options).
    """
    specs = {spec.name: spec for spec in option_specs()}
    notes: list[str] = []
    values = _translate_legacy(values, notes)
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)} (see 'facesmith train options')")
    merged: dict[str, Any] = {}
    for name, value in values.items():
        merged[name] = options.coerce(specs[name], value, ConfigError)
    if stored_structure:
        for name in STRUCTURAL_OPTIONS:
            stored = stored_structure[name]
            if name in merged and merged[name] != stored:
                notes.append(f"{name} is fixed at model creation: keeping {stored!r}, ignoring {merged[name]!r}")
            merged[name] = stored
    merged["archi"] = _parse_architecture(str(merged.get("archi", specs["archi"].default)))
    for name in ("e_dims", "d_dims", "d_mask_dims"):
        if name in merged and merged[name] % 2:
            merged[name] = _even(merged[name])
    resolution = merged.get("resolution", specs["resolution"].default)
    multiple = 32 if "d" in merged["archi"].partition("-")[2] else 16
    if resolution % multiple:
        floored = max(multiple, resolution - resolution % multiple)
        notes.append(f"resolution {resolution} floored to {floored} (a multiple of {multiple} for "
                     f"{merged['archi']})")
        merged["resolution"] = floored
    config = TrainConfig(**merged)
    for name, spec in specs.items():
        options.check_range(spec, getattr(config, name), ConfigError)
    if 0 < config.d_mask_dims < MIN_MASK_DIMS:
        raise ConfigError(f"option d_mask_dims must be 0 (derived from d_dims) or {MIN_MASK_DIMS}..256, "
                          f"got {config.d_mask_dims}")
    try:  # every structural check before anything is built (or any framework imported)
        model_shape(config)
    except ValueError as error:
        raise ConfigError(f"model structure: {error}") from error
    phase = phase_defaults(config.phase)
    filled = {name: phase[name] if getattr(config, name) is None else getattr(config, name)
              for name in phase}
    if config.pretrain:
        overridden = [f"{name}={forced}" for name, forced in _PRETRAIN_FORCED.items()
                      if name in values and getattr(config, name) != forced]
        if overridden:
            notes.append("pretrain forces " + ", ".join(overridden))
        filled.update(_PRETRAIN_FORCED)
    config = dataclasses.replace(config, **filled)
    if config.phase == "gan" and config.gan_power == 0 and not config.pretrain:
        raise ConfigError("phase gan needs gan_power > 0 (the phase's default is 0.1)")
    if config.true_face_power > 0 and config.architecture_kind != "df":
        raise ConfigError("true_face_power works only with the df architectures (SAEHD's code "
                          "discriminator reads DF's shared inter code)")
    if config.strategy == "multiworker" and config.auto_phases:
        # Each non-chief worker keeps its own scratch history, so only the chief could see a plateau;
        # a phase change on one worker alone would leave the others waiting in a different step.
        raise ConfigError("auto_phases does not work with strategy multiworker: set --auto-phases false "
                          "and change the phase by restarting every worker with --phase")
    if config.precision == "float16" and config.device == "cpu":
        raise ConfigError("precision float16 needs a GPU: use bfloat16 or float32 on the CPU")
    return config, notes


def _translate_legacy(values: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Options of older model folders in today's terms (mixed_precision became precision)."""
    if "mixed_precision" not in values:
        return values
    values = dict(values)
    legacy = options.coerce(options.OptionSpec("mixed_precision", "bool", False, ""),
                            values.pop("mixed_precision"), ConfigError)
    if legacy and "precision" not in values:
        values["precision"] = "float16"
        notes.append("mixed_precision true is now precision float16")
    return values


def structure_of(config: TrainConfig) -> dict[str, Any]:
    """The structural options of a config (what a model stores and keeps)."""
    return {name: getattr(config, name) for name in STRUCTURAL_OPTIONS}


def config_to_toml(config: TrainConfig) -> str:
    """The config as a TOML document (every option, phase defaults already filled in)."""
    return options.to_toml(config.option_values(), "train",
                           "facesmith SAEHD training options (see 'facesmith train options')")
