"""SAEHD discriminators on Keras 3: the U-Net patch discriminator (GAN) and DF's latent-code discriminator."""

from __future__ import annotations

from typing import Any

from train.layers import (
    Conv2D,
    Conv2DTranspose,
    Module,
    leaky_relu,
    named_variables,
    ops,
)
from train.shape import patch_discriminator_layers, receptive_field

__all__ = ["CodeDiscriminator", "UNetPatchDiscriminator", "patch_discriminator_layers", "receptive_field"]

Tensor = Any

_MAX_CHANNELS = 512


class UNetPatchDiscriminator(Module):
    """U-Net patch discriminator: (B, H, W, in_ch) -> (low-res logits (B, h, w, 1), full-res logits
    (B, H, W, 1)), h = H after the encoder's strides (each stride-2 SAME conv gives ⌈H/2⌉).

    Channels: ch_i = min(base_dims·2^i, 512). A 1×1 input conv gives ch_0; encoder conv i (3×3) maps
    ch_i -> ch_{i+1}; at the centre a 1×1 head gives the low-res logits and a 1×1 conv (ch_n -> ch_n)
    feeds the decoder. Decoder step i (from the deepest) is a transposed 3×3 conv with the encoder
    conv's stride back to ch_i, concatenated with the encoder's input at that level; a final 1×1
    conv on 2·ch_0 channels gives the full-res logits. Leaky ReLU 0.2 after every conv but the heads.
    """

    def __init__(
        self, in_ch: int, patch_size: int, base_dims: int, seed: int, *, name: str = "patch_discriminator"
    ) -> None:
        super().__init__(name)
        if isinstance(base_dims, bool) or not isinstance(base_dims, int) or base_dims < 1:
            raise ValueError(f"base_dims must be a positive integer, got {base_dims!r}")
        self.layers = patch_discriminator_layers(patch_size)
        n = len(self.layers)
        self.channels = [min(base_dims * 2**i, _MAX_CHANNELS) for i in range(n + 1)]
        ch = self.channels
        self.in_conv = Conv2D(in_ch, ch[0], 1, seed=seed, name=f"{name}/in_conv")
        self.down = [
            Conv2D(ch[i], ch[i + 1], k, strides=s, seed=seed, name=f"{name}/down_{i}")
            for i, (k, s) in enumerate(self.layers)
        ]
        self.center_out = Conv2D(ch[n], 1, 1, seed=seed, name=f"{name}/center_out")
        self.center_conv = Conv2D(ch[n], ch[n], 1, seed=seed, name=f"{name}/center_conv")
        # up_i undoes down_i; its input is the centre (ch_n) for the deepest level, else the previous
        # step's concatenation (2·ch_{i+1}).
        self.up = [
            Conv2DTranspose(
                ch[i + 1] if i == n - 1 else 2 * ch[i + 1],
                ch[i],
                k,
                strides=s,
                seed=seed,
                name=f"{name}/up_{i}",
            )
            for i, (k, s) in enumerate(self.layers)
        ]
        self.out_conv = Conv2D(2 * ch[0], 1, 1, seed=seed, name=f"{name}/out_conv")

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = leaky_relu(self.in_conv(x), 0.2)
        skips = []
        for conv in self.down:
            skips.append(x)
            x = leaky_relu(conv(x), 0.2)
        low_res = self.center_out(x)
        x = leaky_relu(self.center_conv(x), 0.2)
        for up, skip in zip(reversed(self.up), reversed(skips)):
            # The skip's size is passed on so odd sizes (⌈h/2⌉ on the way down) come back exactly.
            x = leaky_relu(up(x, (int(skip.shape[1]), int(skip.shape[2]))), 0.2)
            x = ops.concatenate([skip, x], axis=-1)
        return low_res, self.out_conv(x)

    def named_variables(self) -> dict[str, Any]:
        """{"patch_discriminator/in_conv/kernel": variable, ...} in build order."""
        return named_variables(self, self.path)


class CodeDiscriminator(Module):
    """Latent-code discriminator for DF's true-face power: code (B, r, r, in_ch) -> logits (B, r', r', 1),
    r' = r halved (⌈·/2⌉) 1 + r//8 times.

    Convs with stride 2 and SAME padding, the first 4×4 and the rest 3×3, channels base·min(2^i, 8)
    (base 256 in SAEHD), leaky ReLU 0.1, then a 1×1 conv to one logit channel.
    """

    def __init__(
        self, in_ch: int, code_res: int, seed: int, *, base_dims: int = 256, name: str = "code_discriminator"
    ) -> None:
        super().__init__(name)
        if isinstance(code_res, bool) or not isinstance(code_res, int) or code_res < 1:
            raise ValueError(f"code_res must be a positive integer, got {code_res!r}")
        chans = [base_dims * min(2**i, 8) for i in range(1 + code_res // 8)]
        self.down = [
            Conv2D(cin, cout, 4 if i == 0 else 3, strides=2, seed=seed, name=f"{name}/down_{i}")
            for i, (cin, cout) in enumerate(zip([in_ch] + chans[:-1], chans))
        ]
        self.out_conv = Conv2D(chans[-1], 1, 1, seed=seed, name=f"{name}/out_conv")

    def __call__(self, code: Tensor) -> Tensor:
        x = code
        for conv in self.down:
            x = leaky_relu(conv(x), 0.1)
        return self.out_conv(x)

    def named_variables(self) -> dict[str, Any]:
        """{"code_discriminator/down_0/kernel": variable, ...} in build order."""
        return named_variables(self, self.path)
