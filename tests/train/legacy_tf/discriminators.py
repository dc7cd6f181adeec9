"""Before the Keras 3 port (commit 8bc8dd1), kept as the parity reference. SAEHD discriminators: the U-Net patch discriminator (GAN) and the DF latent-code discriminator (true face)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import tensorflow as tf

from tests.train.legacy_tf.layers import Conv2D, Conv2DTranspose, leaky_relu, named_variables

_MAX_CHANNELS = 512


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


class UNetPatchDiscriminator(tf.Module):
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
        super().__init__(name=name)
        if isinstance(base_dims, bool) or not isinstance(base_dims, int) or base_dims < 1:
            raise ValueError(f"base_dims must be a positive integer, got {base_dims!r}")
        self.path = name
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

    def __call__(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = leaky_relu(self.in_conv(x), 0.2)
        skips = []
        for conv in self.down:
            skips.append(x)
            x = leaky_relu(conv(x), 0.2)
        low_res = self.center_out(x)
        x = leaky_relu(self.center_conv(x), 0.2)
        for up, skip in zip(reversed(self.up), reversed(skips)):
            # The skip's size is passed on so odd sizes (⌈h/2⌉ on the way down) come back exactly.
            x = leaky_relu(up(x, (tf.shape(skip)[1], tf.shape(skip)[2])), 0.2)
            x = tf.concat([skip, x], axis=-1)
        return low_res, self.out_conv(x)

    def named_variables(self) -> dict[str, tf.Variable]:
        """{"patch_discriminator/in_conv/kernel": variable, ...} in build order."""
        return named_variables(self, self.path)


class CodeDiscriminator(tf.Module):
    """Latent-code discriminator for DF's true-face power: code (B, r, r, in_ch) -> logits (B, r', r', 1),
    r' = r halved (⌈·/2⌉) 1 + r//8 times.

    Convs with stride 2 and SAME padding, the first 4×4 and the rest 3×3, channels base·min(2^i, 8)
    (base 256 in SAEHD), leaky ReLU 0.1, then a 1×1 conv to one logit channel.
    """

    def __init__(
        self, in_ch: int, code_res: int, seed: int, *, base_dims: int = 256, name: str = "code_discriminator"
    ) -> None:
        super().__init__(name=name)
        if isinstance(code_res, bool) or not isinstance(code_res, int) or code_res < 1:
            raise ValueError(f"code_res must be a positive integer, got {code_res!r}")
        self.path = name
        chans = [base_dims * min(2**i, 8) for i in range(1 + code_res // 8)]
        self.down = [
            Conv2D(cin, cout, 4 if i == 0 else 3, strides=2, seed=seed, name=f"{name}/down_{i}")
            for i, (cin, cout) in enumerate(zip([in_ch] + chans[:-1], chans))
        ]
        self.out_conv = Conv2D(chans[-1], 1, 1, seed=seed, name=f"{name}/out_conv")

    def __call__(self, code: tf.Tensor) -> tf.Tensor:
        x = code
        for conv in self.down:
            x = leaky_relu(conv(x), 0.1)
        return self.out_conv(x)

    def named_variables(self) -> dict[str, tf.Variable]:
        """{"code_discriminator/down_0/kernel": variable, ...} in build order."""
        return named_variables(self, self.path)
