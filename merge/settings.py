"""Every merger option declared once (type, default, range, help), loaded from TOML and validated."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from curate import options
from curate.errors import FacesmithError
from curate.options import OptionSpec, declare

# The colour-transfer names from train.config: train.color_transfer would import OpenCV, and
# `facesmith --help` must stay light.
from train.config import COLOR_TRANSFER_CHOICES

MERGE_MODES = ("original", "overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb", "raw-predict")
MASK_MODES = ("full", "dst", "learned-prd", "learned-dst", "learned-prd*learned-dst", "learned-prd+learned-dst",
              "dst*learned-prd")
SHARPEN_MODES = ("none", "box", "gaussian")
OUTPUT_FORMATS = ("png", "jpg")

# Erosion and blur are counted in quarter face pixels, the pixels of DFL's 4× working mask, so the
# numbers users bring from DFL's merger keep their size relative to the face.
_EDGE_LIMIT = 400


class MergeSettingsError(FacesmithError):
    """A merge option has the wrong type, is out of range, or is not a merge option at all."""


@dataclass(frozen=True)
class MergeSettings:
    """How a predicted face is put back into a frame. Defaults follow DFL's SAEHD merger."""

    mode: str = declare("overlay", "How the face is composited: original (frame untouched), overlay, "
                        "hist-match (histograms matched to the dst face first), seamless (Poisson "
                        "cloning), seamless-hist-match, raw-rgb (the whole predicted square, no mask), "
                        "raw-predict (the model output alone, not put into the frame).", choices=MERGE_MODES)
    mask_mode: str = declare("learned-prd*learned-dst", "Which mask cuts the face out: full (the whole "
                             "square), dst (landmark hull of the dst face), learned-prd, learned-dst (the "
                             "model's learned masks), their product or sum, or dst*learned-prd (hull times "
                             "the learned predicted mask).", choices=MASK_MODES)
    erode: int = declare(0, "Shrink the mask by this many quarter face pixels (DFL's 4x working scale); "
                         "negative values grow it.", minimum=-_EDGE_LIMIT, maximum=_EDGE_LIMIT)
    erode_top: int = declare(0, "Extra erosion of the mask's top edge only, in quarter face pixels; negative "
                             "moves that edge outwards.", minimum=-_EDGE_LIMIT, maximum=_EDGE_LIMIT)
    erode_bottom: int = declare(0, "Extra erosion of the mask's bottom edge only (quarter face pixels).",
                                minimum=-_EDGE_LIMIT, maximum=_EDGE_LIMIT)
    erode_left: int = declare(0, "Extra erosion of the mask's left edge only (image left, quarter face "
                              "pixels).", minimum=-_EDGE_LIMIT, maximum=_EDGE_LIMIT)
    erode_right: int = declare(0, "Extra erosion of the mask's right edge only (image right, quarter face "
                               "pixels).", minimum=-_EDGE_LIMIT, maximum=_EDGE_LIMIT)
    blur: int = declare(0, "Feather the mask edge with a Gaussian this many quarter face pixels wide; the "
                        "mask also fades to zero half that width inside the face square's border.",
                        minimum=0, maximum=400)
    color_transfer: str = declare("rct", "Recolour the predicted face towards the dst face inside the mask: "
                                  "none, rct, lct, mkl, idt, sot.", choices=COLOR_TRANSFER_CHOICES)
    hist_match_threshold: int = declare(238, "hist-match modes: source quantile q is matched to the dst "
                                        "quantile q*threshold/255, so values below 255 tame the "
                                        "brightest highlights.", minimum=0, maximum=255)
    masked_hist_match: bool = declare(True, "hist-match modes: take the histograms inside the mask only.")
    sharpen_mode: str = declare("none", "Sharpening of the predicted face: none, box or gaussian "
                                "(unsharp masking with that blur).", choices=SHARPEN_MODES)
    sharpen_amount: int = declare(0, "Strength of sharpen_mode; negative values blur the face instead.",
                                  minimum=-100, maximum=100)
    face_scale: int = declare(0, "Scale the output face about its centre by 1 + 0.01*value.", minimum=-50,
                              maximum=50)
    motion_blur: int = declare(0, "Blur the face along its motion between frames; 0 is off.", minimum=0,
                               maximum=100)
    output_format: str = declare("png", "Format of the merged frames: png (lossless) or jpg.",
                                 choices=OUTPUT_FORMATS)
    jpeg_quality: int = declare(95, "Quality of jpg output frames.", minimum=1, maximum=100)

    def option_values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def erode_sides(self) -> tuple[int, int, int, int]:
        """The per-side erosions as (top, bottom, left, right)."""
        return (self.erode_top, self.erode_bottom, self.erode_left, self.erode_right)

    @property
    def face_scale_factor(self) -> float:
        return 1.0 + 0.01 * self.face_scale


# Kept for callers of the old name: merge options are plain option declarations.
MergeOptionSpec = OptionSpec


def option_specs() -> tuple[OptionSpec, ...]:
    """The declarations of every merge option, in declaration order."""
    return options.option_specs(MergeSettings)


def resolve_settings(values: dict[str, Any]) -> MergeSettings:
    """Validated settings from option values (TOML merged with flags, flags last); missing ones default.

    Raises MergeSettingsError naming the option for an unknown name, a wrong type or a value out of range.
    """
    specs = {spec.name: spec for spec in option_specs()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise MergeSettingsError(f"unknown merge option(s): {', '.join(unknown)} (see 'facesmith merge options')")
    coerced: dict[str, Any] = {}
    for name, value in values.items():
        coerced[name] = options.coerce(specs[name], value, MergeSettingsError, "merge option")
        options.check_range(specs[name], coerced[name], MergeSettingsError, "merge option")
    return MergeSettings(**coerced)


def load_toml(path: Path) -> dict[str, Any]:
    """Option values from a TOML file: top-level keys, or the same keys under a [merge] table."""
    return options.load_toml(path, "merge", MergeSettingsError, "merge settings file")


def settings_to_toml(settings: MergeSettings) -> str:
    """The settings as a TOML document with a [merge] table holding every option."""
    return options.to_toml(settings.option_values(), "merge",
                           "facesmith merge options (see 'facesmith merge options')")
