"""Every SAEHD training option declared once (type, default, range, help), loaded from TOML and flags."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from curate.errors import FacesmithError

FACE_TYPES = ("half", "mid_full", "full", "whole_face", "head")
PHASES = ("rw", "lrd", "gan")
OPTIMIZERS = ("adabelief", "rmsprop")
COLOR_TRANSFER_CHOICES = ("none", "rct", "lct", "mkl", "idt", "sot")
DEVICE_CHOICES = ("auto", "cpu", "gpu")


class ConfigError(FacesmithError):
    """A training option has the wrong type, is out of range, or contradicts the model or phase."""


def _option(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
            choices: tuple[str, ...] | None = None, structural: bool = False, phase_default: bool = False,
            ) -> Any:
    metadata = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices,
                "structural": structural, "phase_default": phase_default}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """The whole training configuration. Structural options are fixed when the model is created.

    `None` in a phase-default option means "what the phase implies" (see `phase_defaults`);
    `resolve_config` replaces every `None` with a concrete value.
    """

    # -- structure: fixed at creation, stored in the model, they win on resume -----------------
    resolution: int = _option(128, "Face size in pixels the network sees and produces. Floored to a "
                              "multiple of 16 (32 with the -d variant).", minimum=64, maximum=640,
                              structural=True)
    face_type: str = _option("whole_face", "Crop of the face: half, mid_full, full, whole_face or head. "
                             "Training faces are re-cut from the curated crops to this type.",
                             choices=FACE_TYPES, structural=True)
    archi: str = _option("liae-ud", "Architecture: 'df' (one shared inter, two decoders; more src-like) "
                         "or 'liae' (two inters, one decoder; better with lighting differences), "
                         "optionally '-' and any of u (pixel norm), d (double resolution at the same "
                         "cost), t (deeper encoder), c (x*cos(x) activation).", structural=True)
    ae_dims: int = _option(256, "Width of the bottleneck: more holds more facial detail, costs memory.",
                           minimum=32, maximum=1024, structural=True)
    e_dims: int = _option(64, "Encoder base channels (rounded up to even).", minimum=16, maximum=256,
                          structural=True)
    d_dims: int = _option(64, "Decoder base channels (rounded up to even).", minimum=16, maximum=256,
                          structural=True)
    d_mask_dims: int = _option(0, "Mask-decoder base channels; 0 means d_dims // 3 made even.",
                               minimum=0, maximum=256, structural=True)
    # -- phase ------------------------------------------------------------------------------------
    phase: str = _option("rw", "Training phase: rw (random warp: learn the faces), lrd (warp off, "
                         "learning-rate dropout: refine detail), gan (adds the GAN: sharpen).",
                         choices=PHASES)
    random_warp: bool | None = _option(None, "Grid-warp the network inputs so the model learns shapes, "
                                       "not pixels. Default: on in rw, off otherwise.", phase_default=True)
    lr_dropout: bool | None = _option(None, "Learning-rate dropout: each step only ~30% of the weights move "
                                      "and the rate follows a 500-iteration cosine cycle. Default: on "
                                      "in lrd and gan.", phase_default=True)
    gan_power: float | None = _option(None, "Weight of the patch-GAN loss on the src reconstruction. "
                                      "Default: 0.1 in gan, 0 otherwise.", minimum=0.0, maximum=5.0,
                                      phase_default=True)
    pretrain: bool = _option(False, "Pretrain on a generic faceset for both sides: forces warp off, flips "
                             "on, GAN and styles off, uniform yaw on. Turning it off resets the "
                             "iteration count and re-initialises the inter blocks.")
    target_iter: int = _option(0, "Stop (and save) at this iteration; 0 trains until interrupted.",
                               minimum=0)
    auto_phases: bool = _option(False, "When the loss plateaus, move to the next phase (rw -> lrd -> gan) "
                                "instead of only advising it.")
    # -- losses -----------------------------------------------------------------------------------
    batch_size: int = _option(8, "Faces per side per iteration.", minimum=1, maximum=256)
    masked_training: bool = _option(True, "Restrict the loss to the (blurred) face mask so the background "
                                    "costs no capacity.")
    eyes_mouth_prio: bool = _option(False, "Extra L1 term (weight 300) on the eyes and mouth. Can lower the "
                                    "dst loss while hurting the merge: watch the merge checks.")
    blur_out_mask: bool = _option(False, "Blur the target background outside the mask.")
    uniform_yaw: bool = _option(False, "Sample faces evenly across yaw bins, so rare profiles are seen as "
                                "often as frontal faces.")
    true_face_power: float = _option(0.0, "DF only: push the src code towards the dst code with a code "
                                     "discriminator (typical 0.01).", minimum=0.0, maximum=1.0)
    face_style_power: float = _option(0.0, "Style loss of the swapped face inside the mask; start at 0.001 "
                                      "after ~10k iterations.", minimum=0.0, maximum=100.0)
    bg_style_power: float = _option(0.0, "Style loss of the swapped face's background (typical 2.0).",
                                    minimum=0.0, maximum=100.0)
    gan_patch_size: int = _option(0, "Receptive field of the GAN discriminator; 0 means resolution // 8.",
                                  minimum=0, maximum=640)
    gan_dims: int = _option(16, "GAN discriminator base channels.", minimum=4, maximum=512)
    # -- optimiser ---------------------------------------------------------------------------------
    optimizer: str = _option("adabelief", "adabelief (default, SAEHD's) or rmsprop.", choices=OPTIMIZERS)
    learning_rate: float = _option(5e-5, "Learning rate of every optimiser.", minimum=1e-7, maximum=1e-2)
    clipgrad: bool = _option(False, "Clip the global gradient norm at 1.0 (steadier, slightly slower).")
    clipgrad_on_collapse: bool = _option(True, "After a collapse rollback, continue with clipgrad on.")
    # -- augmentation ------------------------------------------------------------------------------
    random_src_flip: bool = _option(False, "Flip src faces horizontally (40% chance).")
    random_dst_flip: bool = _option(True, "Flip dst faces horizontally (40% chance).")
    random_hsv_power: float = _option(0.0, "Hue/saturation/value jitter of the src input (typical 0.05).",
                                      minimum=0.0, maximum=0.3)
    ct_mode: str = _option("none", "Recolour src samples towards a random dst face: none, rct, lct, mkl, "
                           "idt, sot.", choices=COLOR_TRANSFER_CHOICES)
    # -- data ----------------------------------------------------------------------------------------
    validation_share: float = _option(0.05, "Share of src faces held out for validation, never trained "
                                      "on (fixed at creation).", minimum=0.0, maximum=0.5)
    use_selection: bool = _option(True, "Train on the faces 'curate select' picked, when the faceset has "
                                  "a selection; otherwise on every face.")
    sampler_workers: int = _option(0, "Threads preparing batches; 0 means one per CPU core.", minimum=0,
                                   maximum=64)
    # -- loop, saving, monitoring --------------------------------------------------------------------
    seed: int = _option(0, "Seed of weights, sampling, augmentation and dropout (runs repeat exactly).",
                        minimum=0)
    save_every: int = _option(500, "Iterations between checkpoints.", minimum=1)
    backups_kept: int = _option(5, "Checkpoints kept (newest first); older ones are deleted.", minimum=1,
                                maximum=100)
    preview_every: int = _option(500, "Iterations between preview images.", minimum=1)
    log_every: int = _option(1, "Iterations between history rows (1 = every iteration).", minimum=1)
    plateau_threshold: float = _option(0.05, "A phase has plateaued when the loss falls by less than this "
                                       "share per tenfold of iterations.", minimum=0.0, maximum=1.0)
    plateau_min_iterations: int = _option(2000, "Iterations a phase runs before a plateau can be "
                                          "declared.", minimum=0)
    spike_factor: float = _option(4.0, "A loss above this multiple of its recent level is a collapse.",
                                  minimum=1.5)
    device: str = _option("auto", "auto (GPU when TensorFlow sees one), cpu or gpu.", choices=DEVICE_CHOICES)
    mixed_precision: bool = _option(False, "float16 compute with float32 weights (GPU only).")

    def option_values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def effective_d_mask_dims(self) -> int:
        return self.d_mask_dims or _even(self.d_dims // 3)

    @property
    def effective_gan_patch_size(self) -> int:
        return self.gan_patch_size or max(3, self.resolution // 8)

    @property
    def architecture_kind(self) -> str:
        return self.archi.split("-")[0]


@dataclass(frozen=True)
class OptionSpec:
    """One declared option, for help text, validation and `facesmith train options`."""

    name: str
    type: str
    default: Any
    help: str
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...] | None
    structural: bool
    phase_default: bool

    def as_row(self) -> dict[str, Any]:
        allowed = (", ".join(self.choices) if self.choices
                   else _range_text(self.minimum, self.maximum))
        return {"option": self.name, "type": self.type, "default": self.default, "allowed": allowed,
                "structural": self.structural, "help": self.help}


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is None and maximum is None:
        return ""
    if maximum is None:
        return f">= {minimum}"
    return f"{minimum}..{maximum}"


def _type_name(annotation: Any) -> str:
    text = str(annotation)
    for name in ("bool", "int", "float", "str"):
        if text.startswith(name):
            return name
    raise TypeError(f"unsupported option type {annotation!r}")


def option_specs() -> tuple[OptionSpec, ...]:
    """The declarations of every option, in declaration order."""
    return tuple(
        OptionSpec(name=f.name, type=_type_name(f.type), default=f.default, help=f.metadata["help"],
                   minimum=f.metadata["minimum"], maximum=f.metadata["maximum"],
                   choices=f.metadata["choices"], structural=f.metadata["structural"],
                   phase_default=f.metadata["phase_default"])
        for f in fields(TrainConfig)
    )


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


def _coerce(spec: OptionSpec, value: Any) -> Any:
    """The value converted to the option's type, or a ConfigError naming the option."""
    if value is None:
        if spec.phase_default:
            return None
        raise ConfigError(f"option {spec.name} needs a value")
    kind = spec.type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {spec.name} must be a {kind}, got {value!r}") from None


def _check_range(spec: OptionSpec, value: Any) -> None:
    if value is None:
        return
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"option {spec.name} must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"option {spec.name} must be >= {spec.minimum}, got {value}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"option {spec.name} must be <= {spec.maximum}, got {value}")


def load_toml(path: Path) -> dict[str, Any]:
    """Option values from a TOML file: top-level keys, or the same keys under a [train] table."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    values = dict(document.get("train", {})) if isinstance(document.get("train"), dict) else {}
    values.update({k: v for k, v in document.items() if k != "train"})
    return values


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
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)} (see 'facesmith train options')")
    notes: list[str] = []
    merged: dict[str, Any] = {}
    for name, value in values.items():
        merged[name] = _coerce(specs[name], value)
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
        _check_range(spec, getattr(config, name))
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
    if config.mixed_precision and config.device == "cpu":
        raise ConfigError("mixed_precision needs a GPU: drop it or use --device gpu/auto on a GPU machine")
    return config, notes


def structure_of(config: TrainConfig) -> dict[str, Any]:
    """The structural options of a config (what a model stores and keeps)."""
    return {name: getattr(config, name) for name in STRUCTURAL_OPTIONS}


def config_to_toml(config: TrainConfig) -> str:
    """The config as a TOML document (every option, phase defaults already filled in)."""
    lines = ["# facesmith SAEHD training options (see 'facesmith train options')", "[train]"]
    for name, value in config.option_values().items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = repr(value)
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"
