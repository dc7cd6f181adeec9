"""SAEHD autoencoders (DF and LIAE with the u/d/t/c flags) on Keras 3: encoder, inters, decoders, forward.

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

from dataclasses import dataclass
from typing import Any

from train.layers import (
    Activation,
    Conv2D,
    Dense,
    Downscale,
    Module,
    ResidualBlock,
    Upscale,
    cos_activation,
    depth_to_space,
    leaky_relu_01,
    named_variables,
    ops,
    pixel_norm,
    reinitialise,
)
from train.shape import Architecture, ModelShape, _halve, expected_parameter_counts

Tensor = Any
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
# The structure types live in train.shape (no framework); re-exported for callers of the model.
__all__ = ["COMPUTE_DTYPES", "Architecture", "Decoder", "Encoder", "Forward", "Inter", "ModelShape", "SAEHDModel",
           "expected_parameter_counts"]


def _activation(archi: Architecture) -> Activation:
    return cos_activation if archi.c else leaky_relu_01


class Encoder(Module):
    """Faces (B, R, R, 3) -> flat code (B, S·S·8e), S = R/16 (⌈R/32⌉ with -t)."""

    def __init__(self, archi: Architecture, e_dims: int, *, seed: int, name: str = "encoder") -> None:
        super().__init__(name)
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

    def __call__(self, x: Tensor) -> Tensor:
        if self.deep:
            x = self.res[0](self.down[0](x))
            for down in self.down[1:]:
                x = down(x)
            x = self.res[1](x)
        else:
            for down in self.down:
                x = down(x)
        flat = ops.reshape(x, (-1, int(x.shape[1]) * int(x.shape[2]) * int(x.shape[3])))
        return pixel_norm(flat) if self.normalise_code else flat


class Inter(Module):
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
        super().__init__(name)
        self.lowest_res, self.out_ch = lowest_res, out_ch
        self.dense_0 = Dense(in_ch, ae_dims, seed=seed, name=f"{name}/dense_0")
        self.dense_1 = Dense(ae_dims, lowest_res * lowest_res * out_ch, seed=seed, name=f"{name}/dense_1")
        self.up = (
            None
            if archi.t
            else Upscale(out_ch, out_ch, 3, activation=_activation(archi), seed=seed, name=f"{name}/up")
        )
        self.out_res = lowest_res if archi.t else 2 * lowest_res

    def __call__(self, flat: Tensor) -> Tensor:
        x = self.dense_1(self.dense_0(flat))
        x = ops.reshape(x, (-1, self.lowest_res, self.lowest_res, self.out_ch))
        return x if self.up is None else self.up(x)


class Decoder(Module):
    """Code (B, r, r, in_ch) -> (RGB (B, R, R, 3), mask (B, R, R, 1)), both sigmoid in 0..1."""

    def __init__(
        self, archi: Architecture, in_ch: int, d_dims: int, d_mask_dims: int, *, seed: int, name: str
    ) -> None:
        super().__init__(name)
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

    def rgb(self, z: Tensor) -> Tensor:
        """Code (B, r, r, in_ch) -> RGB logits passed through sigmoid, (B, R, R, 3)."""
        x = z
        for up, res in zip(self.up, self.res):
            x = res(up(x))
        if self.doubled:
            x = depth_to_space(ops.concatenate([conv(x) for conv in self.out_conv], axis=-1), 2)
        else:
            x = self.out_conv[0](x)
        return ops.sigmoid(x)

    def mask(self, z: Tensor) -> Tensor:
        """Code (B, r, r, in_ch) -> mask (B, R, R, 1) in 0..1."""
        x = z
        for up in self.mask_up:
            x = up(x)
        return ops.sigmoid(self.mask_out_conv(x))

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.rgb(z), self.mask(z)


@dataclass(frozen=True)
class Forward:
    """Outputs of one SAEHD training forward pass, all float32 backend tensors (or numpy after `predict`).

    Images are (B, R, R, 3) BGR in 0..1 (sigmoid), masks (B, R, R, 1) in 0..1. Codes are the decoder
    inputs (B, r, r, C), r = ``SAEHDModel.code_resolution``: for DF the inter output (C = ae_dims),
    for LIAE the concatenated pairs (C = 4·ae_dims).
    """

    src_src: Tensor
    src_src_mask: Tensor
    dst_dst: Tensor
    dst_dst_mask: Tensor
    src_dst: Tensor
    src_dst_mask: Tensor
    src_code: Tensor
    dst_code: Tensor


class SAEHDModel(Module):
    """The SAEHD autoencoder pair. DF parts: encoder, inter, decoder_src, decoder_dst; LIAE parts:
    encoder, inter_ab, inter_b, decoder. Variables are float32; ``compute_dtype`` float16 or bfloat16
    runs the layers in that precision (inputs cast in, weights cast at use, outputs cast back to float32)."""

    def __init__(self, shape: ModelShape, seed: int, *, compute_dtype: str = "float32") -> None:
        super().__init__("saehd")
        shape.validate()
        compute_dtype = str(getattr(compute_dtype, "name", compute_dtype))
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be float32, float16 or bfloat16, got {compute_dtype}")
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

    def _encode(self, faces: Tensor, label: str) -> Tensor:
        res = self.shape.resolution
        static = tuple(faces.shape)
        if len(static) != 4 or any(s not in (None, want) for s, want in zip(static[1:], (res, res, 3))):
            raise ValueError(f"{label} must have shape (batch, {res}, {res}, 3), got {static}")
        return self.encoder(ops.cast(faces, self.compute_dtype))

    def _src_code(self, src_flat: Tensor) -> Tensor:
        if self.is_liae:
            ab = self.inter_ab(src_flat)
            return ops.concatenate([ab, ab], axis=-1)
        return self.inter(src_flat)

    def _dst_and_swap_codes(self, dst_flat: Tensor) -> tuple[Tensor, Tensor]:
        """(dst reconstruction code, src-identity-on-dst code) for the same dst faces."""
        if self.is_liae:
            ab = self.inter_ab(dst_flat)
            return ops.concatenate([self.inter_b(dst_flat), ab], axis=-1), ops.concatenate([ab, ab], axis=-1)
        code = self.inter(dst_flat)
        return code, code

    def _src_decoder(self) -> Decoder:
        return self.decoder if self.is_liae else self.decoder_src

    def _dst_decoder(self) -> Decoder:
        return self.decoder if self.is_liae else self.decoder_dst

    def forward(self, warped_src: Tensor, warped_dst: Tensor) -> Forward:
        """warped_src, warped_dst: (B, R, R, 3) float32 in 0..1 -> Forward (see its docstring)."""
        src_code = self._src_code(self._encode(warped_src, "warped_src"))
        dst_code, swap_code = self._dst_and_swap_codes(self._encode(warped_dst, "warped_dst"))
        src_src, src_src_mask = self._src_decoder()(src_code)
        dst_dst, dst_dst_mask = self._dst_decoder()(dst_code)
        src_dst, src_dst_mask = self._src_decoder()(swap_code)
        outputs = (src_src, src_src_mask, dst_dst, dst_dst_mask, src_dst, src_dst_mask, src_code, dst_code)
        return Forward(*(ops.cast(t, "float32") for t in outputs))

    def swap(self, dst_faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """dst_faces (B, R, R, 3) float32 0..1 -> (swapped face (B, R, R, 3), its mask (B, R, R, 1),
        the dst mask (B, R, R, 1)), float32 0..1: what the merger needs, equal to forward()'s
        src_dst, src_dst_mask and dst_dst_mask for the same dst input."""
        dst_code, swap_code = self._dst_and_swap_codes(self._encode(dst_faces, "dst_faces"))
        face, face_mask = self._src_decoder()(swap_code)
        dst_mask = self._dst_decoder().mask(dst_code)
        return ops.cast(face, "float32"), ops.cast(face_mask, "float32"), ops.cast(dst_mask, "float32")

    def variables_by_part(self) -> dict[str, dict[str, Any]]:
        """{part name: {full variable name (prefixed by the part): variable}} in build order."""
        return {part: named_variables(getattr(self, part), part) for part in self.part_names}

    def named_variables(self) -> dict[str, Any]:
        """All variables as {"encoder/down_0/conv/kernel": variable, ...}; names are stable across builds."""
        return {name: v for part in self.variables_by_part().values() for name, v in part.items()}

    def trainable_variables_for(self, freeze_inter_ab: bool) -> list[Any]:
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
