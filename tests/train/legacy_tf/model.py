"""Before the Keras 3 port (commit 8bc8dd1), kept as the parity reference. SAEHD autoencoders (DF and LIAE with the u/d/t/c flags): architecture spec, modules and parameter counts.

Shapes follow DeepFaceLab's SAEHD. Notation: R = resolution, e/d/m = encoder/decoder/mask-decoder base
channels, a = ae_dims, L = R/16 (R/32 with -d) the side of the dense bottleneck's reshape.

- Encoder: Downscales to e, 2e, 4e, 8e (R/16 side), flattened; -t uses down(e), res(e), down(2e),
  down(4e), down(8e), down(8e), res(8e) (⌈R/32⌉ side). -u pixel-normalises the flat vector.
- Inter: Dense(flat→a), Dense(a→L²·o) reshaped to (L, L, o), o = a for DF and 2a for LIAE. Without -t an
  Upscale(o→o) follows, so the inter output side is 2L; with -t it stays L and the decoder upscales
  once more instead. Either way the decoder's upscales bring it to R (R/2 before the -d doubling).
- Decoder: Upscale+Residual pairs to 8d, 4d, 2d (-t: 8d, 8d, 4d, 2d), then a 1×1 conv to RGB; with -d
  four convs (one 1×1, three 3×3) to 3 channels each, concatenated, depth-to-space ×2. Mask branch:
  Upscales to 8m, 4m, 2m (-t: 8m, 8m, 4m, 2m; -d adds one to m), then a 1×1 conv to 1 channel.
  RGB and mask end in a sigmoid.
- Activation: leaky ReLU 0.1, or x·cos(x) with -c. Residual blocks keep their own leaky 0.2 under -c
  (SAEHD defines the block with 0.2 and -c replaces only the 0.1 activation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import tensorflow as tf

from tests.train.legacy_tf.layers import (
    Activation,
    Conv2D,
    Dense,
    Downscale,
    ResidualBlock,
    Upscale,
    cos_activation,
    leaky_relu_01,
    named_variables,
    pixel_norm,
    reinitialise,
)

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


def _activation(archi: Architecture) -> Activation:
    return cos_activation if archi.c else leaky_relu_01


class Encoder(tf.Module):
    """Faces (B, R, R, 3) -> flat code (B, S·S·8e), S = R/16 (⌈R/32⌉ with -t)."""

    def __init__(self, archi: Architecture, e_dims: int, *, seed: int, name: str = "encoder") -> None:
        super().__init__(name=name)
        self.normalise_code = archi.u
        self.deep = archi.t
        act = _activation(archi)
        chans = [e_dims, 2 * e_dims, 4 * e_dims, 8 * e_dims] + ([8 * e_dims] if archi.t else [])
        ins = [3] + chans[:-1]
        self.down = [
            Downscale(i, o, 5, activation=act, seed=seed, name=f"{name}/down_{k}")
            for k, (i, o) in enumerate(zip(ins, chans))
        ]
        self.res = (
            [
                ResidualBlock(e_dims, seed=seed, name=f"{name}/res_0"),
                ResidualBlock(8 * e_dims, seed=seed, name=f"{name}/res_1"),
            ]
            if archi.t
            else []
        )
        self.out_ch = chans[-1]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if self.deep:
            x = self.res[0](self.down[0](x))
            for down in self.down[1:]:
                x = down(x)
            x = self.res[1](x)
        else:
            for down in self.down:
                x = down(x)
        flat = tf.reshape(x, (tf.shape(x)[0], -1))
        return pixel_norm(flat) if self.normalise_code else flat


class Inter(tf.Module):
    """Flat code (B, flat) -> (B, L, L, out_ch), or (B, 2L, 2L, out_ch) when an Upscale follows (not -t)."""

    def __init__(
        self,
        archi: Architecture,
        in_ch: int,
        ae_dims: int,
        out_ch: int,
        lowest_res: int,
        *,
        seed: int,
        name: str,
    ) -> None:
        super().__init__(name=name)
        self.lowest_res, self.out_ch = lowest_res, out_ch
        self.dense_0 = Dense(in_ch, ae_dims, seed=seed, name=f"{name}/dense_0")
        self.dense_1 = Dense(ae_dims, lowest_res * lowest_res * out_ch, seed=seed, name=f"{name}/dense_1")
        self.up = (
            None
            if archi.t
            else Upscale(out_ch, out_ch, 3, activation=_activation(archi), seed=seed, name=f"{name}/up")
        )
        self.out_res = lowest_res if archi.t else 2 * lowest_res

    def __call__(self, flat: tf.Tensor) -> tf.Tensor:
        x = self.dense_1(self.dense_0(flat))
        x = tf.reshape(x, (-1, self.lowest_res, self.lowest_res, self.out_ch))
        return x if self.up is None else self.up(x)


class Decoder(tf.Module):
    """Code (B, r, r, in_ch) -> (RGB (B, R, R, 3), mask (B, R, R, 1)), both sigmoid in 0..1."""

    def __init__(
        self, archi: Architecture, in_ch: int, d_dims: int, d_mask_dims: int, *, seed: int, name: str
    ) -> None:
        super().__init__(name=name)
        self.doubled = archi.d
        act = _activation(archi)
        d, m = d_dims, d_mask_dims
        chans = [8 * d, 8 * d, 4 * d, 2 * d] if archi.t else [8 * d, 4 * d, 2 * d]
        self.up = [
            Upscale(i, o, 3, activation=act, seed=seed, name=f"{name}/up_{k}")
            for k, (i, o) in enumerate(zip([in_ch] + chans[:-1], chans))
        ]
        self.res = [ResidualBlock(o, seed=seed, name=f"{name}/res_{k}") for k, o in enumerate(chans)]
        # -d: four 3-channel heads form the 2×2 sub-pixels of each output pixel (head k -> offset
        # (k // 2, k % 2) under NHWC depth_to_space); the first is 1×1 like the plain head.
        kernels = [1, 3, 3, 3] if archi.d else [1]
        self.out_conv = [
            Conv2D(2 * d, 3, k, seed=seed, name=f"{name}/out_conv_{i}") for i, k in enumerate(kernels)
        ]
        mask_chans = [8 * m, 8 * m, 4 * m, 2 * m] if archi.t else [8 * m, 4 * m, 2 * m]
        if archi.d:
            mask_chans.append(m)
        self.mask_up = [
            Upscale(i, o, 3, activation=act, seed=seed, name=f"{name}/mask_up_{k}")
            for k, (i, o) in enumerate(zip([in_ch] + mask_chans[:-1], mask_chans))
        ]
        self.mask_out_conv = Conv2D(mask_chans[-1], 1, 1, seed=seed, name=f"{name}/mask_out_conv")

    def rgb(self, z: tf.Tensor) -> tf.Tensor:
        """Code (B, r, r, in_ch) -> RGB logits passed through sigmoid, (B, R, R, 3)."""
        x = z
        for up, res in zip(self.up, self.res):
            x = res(up(x))
        if self.doubled:
            x = tf.nn.depth_to_space(tf.concat([conv(x) for conv in self.out_conv], axis=-1), 2)
        else:
            x = self.out_conv[0](x)
        return tf.sigmoid(x)

    def mask(self, z: tf.Tensor) -> tf.Tensor:
        """Code (B, r, r, in_ch) -> mask (B, R, R, 1) in 0..1."""
        x = z
        for up in self.mask_up:
            x = up(x)
        return tf.sigmoid(self.mask_out_conv(x))

    def __call__(self, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.rgb(z), self.mask(z)


@dataclass(frozen=True)
class Forward:
    """Outputs of one SAEHD training forward pass, all float32.

    Images are (B, R, R, 3) BGR in 0..1 (sigmoid), masks (B, R, R, 1) in 0..1. Codes are the decoder
    inputs (B, r, r, C), r = ``SAEHDModel.code_resolution``: for DF the inter output (C = ae_dims),
    for LIAE the concatenated pairs (C = 4·ae_dims).
    """

    src_src: tf.Tensor
    src_src_mask: tf.Tensor
    dst_dst: tf.Tensor
    dst_dst_mask: tf.Tensor
    src_dst: tf.Tensor
    src_dst_mask: tf.Tensor
    src_code: tf.Tensor
    dst_code: tf.Tensor

    # tf.nest protocol, so a tf.function may return a Forward.
    def __tf_flatten__(self) -> tuple[None, tuple[tf.Tensor, ...]]:
        return None, tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @classmethod
    def __tf_unflatten__(cls, metadata: None, components: tuple[tf.Tensor, ...]) -> Forward:
        return cls(*components)


class SAEHDModel(tf.Module):
    """The SAEHD autoencoder pair. DF parts: encoder, inter, decoder_src, decoder_dst; LIAE parts:
    encoder, inter_ab, inter_b, decoder. Variables are float32; ``compute_dtype`` float16 runs the
    layers in half precision (inputs cast in, outputs cast back to float32)."""

    def __init__(self, shape: ModelShape, seed: int, *, compute_dtype: tf.DType = tf.float32) -> None:
        super().__init__(name="saehd")
        shape.validate()
        compute_dtype = tf.as_dtype(compute_dtype)
        if compute_dtype not in (tf.float32, tf.float16, tf.bfloat16):
            raise ValueError(f"compute_dtype must be float32, float16 or bfloat16, got {compute_dtype.name}")
        self.shape, self.seed, self.compute_dtype = shape, seed, compute_dtype
        archi = shape.archi
        self.is_liae = archi.kind == "liae"
        self.encoder = Encoder(archi, shape.e_dims, seed=seed)
        side = _halve(shape.resolution, 5 if archi.t else 4)
        flat = side * side * self.encoder.out_ch
        lowest = shape.resolution // (32 if archi.d else 16)
        if self.is_liae:
            out = 2 * shape.ae_dims
            self.inter_ab = Inter(archi, flat, shape.ae_dims, out, lowest, seed=seed, name="inter_ab")
            self.inter_b = Inter(archi, flat, shape.ae_dims, out, lowest, seed=seed, name="inter_b")
            self.decoder = Decoder(archi, 2 * out, shape.d_dims, shape.d_mask_dims, seed=seed, name="decoder")
        else:
            self.inter = Inter(archi, flat, shape.ae_dims, shape.ae_dims, lowest, seed=seed, name="inter")
            dims = (shape.ae_dims, shape.d_dims, shape.d_mask_dims)
            self.decoder_src = Decoder(archi, *dims, seed=seed, name="decoder_src")
            self.decoder_dst = Decoder(archi, *dims, seed=seed, name="decoder_dst")
        self.code_resolution = lowest if archi.t else 2 * lowest

    @property
    def part_names(self) -> tuple[str, ...]:
        """Part names in build order (also the weight-file names)."""
        if self.is_liae:
            return ("encoder", "inter_ab", "inter_b", "decoder")
        return ("encoder", "inter", "decoder_src", "decoder_dst")

    # The pieces below are the only place the SAEHD graph is written; forward() and swap() compose them.

    def _encode(self, faces: tf.Tensor, label: str) -> tf.Tensor:
        res = self.shape.resolution
        static = tuple(faces.shape)
        if len(static) != 4 or any(s not in (None, want) for s, want in zip(static[1:], (res, res, 3))):
            raise ValueError(f"{label} must have shape (batch, {res}, {res}, 3), got {static}")
        return self.encoder(tf.cast(faces, self.compute_dtype))

    def _src_code(self, src_flat: tf.Tensor) -> tf.Tensor:
        if self.is_liae:
            ab = self.inter_ab(src_flat)
            return tf.concat([ab, ab], axis=-1)
        return self.inter(src_flat)

    def _dst_and_swap_codes(self, dst_flat: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(dst reconstruction code, src-identity-on-dst code) for the same dst faces."""
        if self.is_liae:
            ab = self.inter_ab(dst_flat)
            return tf.concat([self.inter_b(dst_flat), ab], axis=-1), tf.concat([ab, ab], axis=-1)
        code = self.inter(dst_flat)
        return code, code

    def _src_decoder(self) -> Decoder:
        return self.decoder if self.is_liae else self.decoder_src

    def _dst_decoder(self) -> Decoder:
        return self.decoder if self.is_liae else self.decoder_dst

    def forward(self, warped_src: tf.Tensor, warped_dst: tf.Tensor) -> Forward:
        """warped_src, warped_dst: (B, R, R, 3) float32 in 0..1 -> Forward (see its docstring)."""
        src_code = self._src_code(self._encode(warped_src, "warped_src"))
        dst_code, swap_code = self._dst_and_swap_codes(self._encode(warped_dst, "warped_dst"))
        src_src, src_src_mask = self._src_decoder()(src_code)
        dst_dst, dst_dst_mask = self._dst_decoder()(dst_code)
        src_dst, src_dst_mask = self._src_decoder()(swap_code)
        outputs = (src_src, src_src_mask, dst_dst, dst_dst_mask, src_dst, src_dst_mask, src_code, dst_code)
        return Forward(*(tf.cast(t, tf.float32) for t in outputs))

    def swap(self, dst_faces: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """dst_faces (B, R, R, 3) float32 0..1 -> (swapped face (B, R, R, 3), its mask (B, R, R, 1),
        the dst mask (B, R, R, 1)), float32 0..1: what the merger needs, equal to forward()'s
        src_dst, src_dst_mask and dst_dst_mask for the same dst input."""
        dst_code, swap_code = self._dst_and_swap_codes(self._encode(dst_faces, "dst_faces"))
        face, face_mask = self._src_decoder()(swap_code)
        dst_mask = self._dst_decoder().mask(dst_code)
        return tf.cast(face, tf.float32), tf.cast(face_mask, tf.float32), tf.cast(dst_mask, tf.float32)

    def variables_by_part(self) -> dict[str, dict[str, tf.Variable]]:
        """{part name: {full variable name (prefixed by the part): variable}} in build order."""
        return {part: named_variables(getattr(self, part), part) for part in self.part_names}

    def named_variables(self) -> dict[str, tf.Variable]:
        """All variables as {"encoder/down_0/conv/kernel": variable, ...}; names are stable across builds."""
        return {name: v for part in self.variables_by_part().values() for name, v in part.items()}

    def trainable_variables_for(self, freeze_inter_ab: bool) -> list[tf.Variable]:
        """Variables the generator optimiser updates; LIAE with ``freeze_inter_ab`` leaves out inter_ab
        (SAEHD freezes it when random warp is off). DF ignores the flag."""
        parts = self.variables_by_part()
        if self.is_liae and freeze_inter_ab:
            del parts["inter_ab"]
        return [v for part in parts.values() for v in part.values()]

    def reinitialise_inters(self, seed: int | None = None) -> None:
        """Reset the inter block(s) (DF: inter; LIAE: inter_ab, inter_b) to their initial values for
        ``seed`` (default: the build seed), keeping encoder and decoders; used when leaving pretrain."""
        for part in ("inter_ab", "inter_b") if self.is_liae else ("inter",):
            reinitialise(getattr(self, part), self.seed if seed is None else seed)


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
