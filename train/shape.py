"""SAEHD model shapes without a framework: architecture flags, the structural options, layer sizes and
parameter counts (what config validation and `train plan` need before TensorFlow, JAX or torch loads).

Notation: R = resolution, e/d/m = encoder/decoder/mask-decoder base channels, a = ae_dims, L = R/16
(R/32 with -d) the side of the dense bottleneck's reshape. train/model.py builds the networks these
numbers describe.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_KINDS = ("df", "liae")
_FLAGS = "udtc"
_ARCHI_FORM = "'df' or 'liae', optionally followed by '-' and any of the letters u, d, t, c (each once)"


@dataclass(frozen=True)
class Architecture:
    """An SAEHD architecture: the kind ("df" or "liae") and the u/d/t/c flags."""

    kind: str
    u: bool = False  # pixel-norm on the flat encoder output
    d: bool = False  # decoder doubles its output resolution with a depth-to-space RGB head
    t: bool = False  # deeper encoder (5 downscales) and decoder (4 upscales)
    c: bool = False  # x·cos(x) activation instead of leaky ReLU 0.1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"architecture kind must be one of {_KINDS}, got {self.kind!r}")

    @classmethod
    def parse(cls, text: str) -> Architecture:
        """Parse e.g. "liae-ud", "df", "df-tc"; case and surrounding spaces are ignored."""
        kind, dash, flags = text.strip().lower().partition("-") if isinstance(text, str) else ("", "", "")
        valid = (
            kind in _KINDS
            and (not dash or flags != "")
            and all(letter in _FLAGS for letter in flags)
            and len(set(flags)) == len(flags)
        )
        if not valid:
            raise ValueError(f"invalid architecture {text!r}: expected {_ARCHI_FORM}, e.g. 'liae-ud'")
        return cls(kind, **{letter: letter in flags for letter in _FLAGS})

    def __str__(self) -> str:
        flags = "".join(letter for letter in _FLAGS if getattr(self, letter))
        return f"{self.kind}-{flags}" if flags else self.kind

    @property
    def resolution_multiple(self) -> int:
        """Resolutions must be a multiple of this: 32 with -d (its bottleneck side is R/32), else 16."""
        return 32 if self.d else 16


def _check_range(label: str, value: int, low: int, high: int, even: bool = False) -> None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or not low <= value <= high:
        raise ValueError(f"{label} must be an integer in {low}..{high}, got {value!r}")
    if even and value % 2:
        raise ValueError(f"{label} must be even, got {value}")


@dataclass(frozen=True)
class ModelShape:
    """The structural options fixed when an SAEHD model is created."""

    resolution: int
    archi: Architecture
    ae_dims: int
    e_dims: int
    d_dims: int
    d_mask_dims: int

    def validate(self) -> ModelShape:
        """Return self if every field is in SAEHD's range, else raise ValueError naming the field."""
        if not isinstance(self.archi, Architecture):
            # ValueError like every other field: the caller maps it to the project's config error.
            raise ValueError(f"archi must be an Architecture, got {self.archi!r}")  # noqa: TRY004
        _check_range("resolution", self.resolution, 64, 640)
        multiple = self.archi.resolution_multiple
        if self.resolution % multiple:
            raise ValueError(
                f"resolution must be a multiple of {multiple} for archi {self.archi}, got {self.resolution}"
            )
        _check_range("ae_dims", self.ae_dims, 32, 1024)
        _check_range("e_dims", self.e_dims, 16, 256, even=True)
        _check_range("d_dims", self.d_dims, 16, 256, even=True)
        _check_range("d_mask_dims", self.d_mask_dims, 16, 256, even=True)
        return self


def _halve(side: int, times: int) -> int:
    """Side after ``times`` stride-2 SAME convs (each gives ⌈side/2⌉)."""
    for _ in range(times):
        side = -(-side // 2)
    return side


def _conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def _dense(cin: int, cout: int) -> int:
    return cin * cout + cout


def _upscale(cin: int, cout: int) -> int:
    return _conv(3, cin, 4 * cout)


def _residual(ch: int) -> int:
    return 2 * _conv(3, ch, ch)


def expected_parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Closed-form parameter count per part, by hand from the layer list (independent of the modules).

    conv k×k: k²·in·out + out; dense: in·out + out; Upscale(in, out): 3×3 conv to 4·out;
    ResidualBlock(ch): two 3×3 ch→ch convs.
    """
    shape.validate()
    archi, res = shape.archi, shape.resolution
    e, d, m, a = shape.e_dims, shape.d_dims, shape.d_mask_dims, shape.ae_dims

    if archi.t:
        encoder = (
            _conv(5, 3, e)
            + _residual(e)
            + _conv(5, e, 2 * e)
            + _conv(5, 2 * e, 4 * e)
            + _conv(5, 4 * e, 8 * e)
            + _conv(5, 8 * e, 8 * e)
            + _residual(8 * e)
        )
        enc_side = -(-res // 32)
    else:
        encoder = _conv(5, 3, e) + _conv(5, e, 2 * e) + _conv(5, 2 * e, 4 * e) + _conv(5, 4 * e, 8 * e)
        enc_side = res // 16
    flat = enc_side * enc_side * 8 * e

    lowest = res // 32 if archi.d else res // 16
    inter_out = 2 * a if archi.kind == "liae" else a
    inter = _dense(flat, a) + _dense(a, lowest * lowest * inter_out)
    if not archi.t:
        inter += _upscale(inter_out, inter_out)

    dec_in = 2 * inter_out if archi.kind == "liae" else inter_out
    if archi.t:
        decoder = (
            _upscale(dec_in, 8 * d)
            + _residual(8 * d)
            + _upscale(8 * d, 8 * d)
            + _residual(8 * d)
            + _upscale(8 * d, 4 * d)
            + _residual(4 * d)
            + _upscale(4 * d, 2 * d)
            + _residual(2 * d)
        )
        mask = (
            _upscale(dec_in, 8 * m) + _upscale(8 * m, 8 * m) + _upscale(8 * m, 4 * m) + _upscale(4 * m, 2 * m)
        )
    else:
        decoder = (
            _upscale(dec_in, 8 * d)
            + _residual(8 * d)
            + _upscale(8 * d, 4 * d)
            + _residual(4 * d)
            + _upscale(4 * d, 2 * d)
            + _residual(2 * d)
        )
        mask = _upscale(dec_in, 8 * m) + _upscale(8 * m, 4 * m) + _upscale(4 * m, 2 * m)
    if archi.d:
        decoder += _conv(1, 2 * d, 3) + 3 * _conv(3, 2 * d, 3)
        mask += _upscale(2 * m, m) + _conv(1, m, 1)
    else:
        decoder += _conv(1, 2 * d, 3)
        mask += _conv(1, 2 * m, 1)
    decoder += mask

    if archi.kind == "liae":
        return {"encoder": encoder, "inter_ab": inter, "inter_b": inter, "decoder": decoder}
    return {"encoder": encoder, "inter": inter, "decoder_src": decoder, "decoder_dst": decoder}


def model_shape(config: Any) -> ModelShape:
    """The validated ModelShape of a TrainConfig (ValueError naming the field when out of range)."""
    shape = ModelShape(resolution=config.resolution, archi=Architecture.parse(config.archi),
                       ae_dims=config.ae_dims, e_dims=config.e_dims, d_dims=config.d_dims,
                       d_mask_dims=config.effective_d_mask_dims)
    return shape.validate()


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """Receptive field of stacked (kernel, stride) convs: 1 + Σ (k_i − 1)·Π_{j<i} s_j.

    e.g. [(3, 2), (3, 1), (3, 2)] -> 1 + 2·1 + 2·2 + 2·2 = 11.
    """
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def patch_discriminator_layers(patch_size: int, max_layers: int = 9) -> list[tuple[int, int]]:
    """(kernel 3, stride) per conv for a patch discriminator whose receptive field is closest to
    ``patch_size``: the first stride is 2, each later one 1 or 2, at most ``max_layers`` convs.

    Ranking: distance |rf − patch_size|, then fewer layers, then more downsampling (more stride-2
    convs), then the smaller receptive field, then downsampling earlier. Every rf reachable this way
    is ≡ 3 (mod 4), so an even patch size always sits between two candidates; the order above decides.
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    if isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1:
        raise ValueError(f"max_layers must be a positive integer, got {max_layers!r}")

    def rank(layers: list[tuple[int, int]]) -> tuple[int, ...]:
        strides = tuple(s for _, s in layers)
        rf = receptive_field(layers)
        return (abs(rf - patch_size), len(layers), -strides.count(2), rf, *(-s for s in strides))

    candidates = (
        [(3, s) for s in (2, *later)]
        for count in range(1, max_layers + 1)
        for later in itertools.product((1, 2), repeat=count - 1)
    )
    return min(candidates, key=rank)
