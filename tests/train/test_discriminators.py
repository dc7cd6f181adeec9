"""Tests for the SAEHD discriminators (train/discriminators.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from train.discriminators import (
    CodeDiscriminator,
    UNetPatchDiscriminator,
    patch_discriminator_layers,
    receptive_field,
)


def _all_stride_lists(max_layers: int) -> list[list[int]]:
    """Every stride list with a leading 2 and later 1s/2s, built by extension (not itertools)."""
    lists, frontier = [], [[2]]
    while frontier:
        lists += frontier
        frontier = [s + [step] for s in frontier if len(s) < max_layers for step in (1, 2)]
    return lists


def _rf_by_jumps(strides: list[int]) -> int:
    """Receptive field of 3×3 convs computed backwards: r_{i} = (r_{i+1} − 1)·s_i + 3."""
    field = 1
    for stride in reversed(strides):
        field = (field - 1) * stride + 3
    return field


def test_receptive_field_hand_examples() -> None:
    assert receptive_field([]) == 1
    assert receptive_field([(3, 2)]) == 3
    assert receptive_field([(3, 2), (3, 1), (3, 2)]) == 1 + 2 * 1 + 2 * 2 + 2 * 2 == 11
    assert receptive_field([(4, 2), (3, 2), (3, 1)]) == 1 + 3 * 1 + 2 * 2 + 2 * 4 == 16
    assert receptive_field([(5, 1), (5, 1)]) == 9


@pytest.mark.parametrize("patch_size", [3, 5, 8, 16, 32, 64, 70, 100])
def test_layer_search_is_closest_then_fewest_then_most_downsampling(patch_size: int) -> None:
    layers = patch_discriminator_layers(patch_size)
    strides = [s for _, s in layers]
    assert all(k == 3 for k, _ in layers) and strides[0] == 2 and set(strides) <= {1, 2}
    assert 1 <= len(layers) <= 9
    assert receptive_field(layers) == _rf_by_jumps(strides)

    candidates = _all_stride_lists(9)
    best_distance = min(abs(_rf_by_jumps(s) - patch_size) for s in candidates)
    assert abs(receptive_field(layers) - patch_size) == best_distance
    closest = [s for s in candidates if abs(_rf_by_jumps(s) - patch_size) == best_distance]
    fewest = min(len(s) for s in closest)
    assert len(layers) == fewest
    assert strides.count(2) == max(s.count(2) for s in closest if len(s) == fewest)


def test_layer_search_known_answers_and_tie_breaks() -> None:
    assert patch_discriminator_layers(3) == [(3, 2)]
    # rf 3 (one layer) and rf 7 (two layers) are both 2 away from 5: fewer layers wins.
    assert patch_discriminator_layers(5) == [(3, 2)]
    # Two layers give rf 7 whatever the second stride; more downsampling wins.
    assert patch_discriminator_layers(7) == [(3, 2), (3, 2)]
    assert patch_discriminator_layers(8) == [(3, 2), (3, 2)]
    assert patch_discriminator_layers(16) == [(3, 2), (3, 2), (3, 2)]  # rf 15
    # 70: rf 71 = 1 + 2·(1 + 2 + 4 + 4 + 8 + 16) needs six convs with one stride-1 in the third place.
    assert patch_discriminator_layers(70) == [(3, 2), (3, 2), (3, 1), (3, 2), (3, 2), (3, 2)]
    assert patch_discriminator_layers(1000, max_layers=3) == [(3, 2)] * 3
    for bad in (0, -4, 2.5):
        with pytest.raises(ValueError, match="patch_size"):
            patch_discriminator_layers(bad)  # type: ignore[arg-type]


def test_unet_patch_discriminator_shapes_and_locality() -> None:
    disc = UNetPatchDiscriminator(3, patch_size=8, base_dims=4, seed=0)
    assert disc.layers == [(3, 2), (3, 2)]
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    low, full = disc(tf.constant(x))
    assert low.shape == (2, 16, 16, 1)
    assert full.shape == (2, 64, 64, 1)

    # Low-res logit (i, j) sees only a 7-pixel window around input (4i, 4j): a corner change
    # reaches the near corner but not the far one.
    x2 = x.copy()
    x2[:, 0, 0, :] += 1.0
    low2, full2 = disc(tf.constant(x2))
    assert np.abs(low2.numpy()[:, 0, 0] - low.numpy()[:, 0, 0]).max() > 0
    np.testing.assert_array_equal(low2.numpy()[:, 4:, 4:], low.numpy()[:, 4:, 4:])
    assert np.abs(full2.numpy()[:, 0, 0] - full.numpy()[:, 0, 0]).max() > 0


def test_unet_patch_discriminator_odd_sizes_channels_and_names() -> None:
    disc = UNetPatchDiscriminator(3, patch_size=16, base_dims=200, seed=1)
    assert disc.layers == [(3, 2)] * 3
    assert disc.channels == [200, 400, 512, 512]  # min(base·2^i, 512)
    low, full = disc(tf.zeros((1, 36, 36, 3)))  # 36 -> 18 -> 9 -> 5 and back
    assert low.shape == (1, 5, 5, 1) and full.shape == (1, 36, 36, 1)

    names = disc.named_variables()
    assert len(names) == len(disc.variables)
    assert all(v.name == name.replace("/", ".") for name, v in names.items())
    assert names["patch_discriminator/in_conv/kernel"].shape == (1, 1, 3, 200)
    assert names["patch_discriminator/down_2/kernel"].shape == (3, 3, 512, 512)
    assert names["patch_discriminator/center_out/kernel"].shape == (1, 1, 512, 1)
    # Transposed kernels are (k, k, out, in); the deepest takes the centre, the others a concatenation.
    assert names["patch_discriminator/up_2/kernel"].shape == (3, 3, 512, 512)
    assert names["patch_discriminator/up_1/kernel"].shape == (3, 3, 400, 1024)
    assert names["patch_discriminator/up_0/kernel"].shape == (3, 3, 200, 800)
    assert names["patch_discriminator/out_conv/kernel"].shape == (1, 1, 400, 1)


@pytest.mark.parametrize(("code_res", "convs", "out_side"), [(4, 1, 2), (8, 2, 2), (16, 3, 2), (32, 5, 1)])
def test_code_discriminator_shapes(code_res: int, convs: int, out_side: int) -> None:
    disc = CodeDiscriminator(8, code_res, seed=0, base_dims=4)
    names = disc.named_variables()
    kernels = [names[f"code_discriminator/down_{i}/kernel"].shape for i in range(convs)]
    assert f"code_discriminator/down_{convs}/kernel" not in names
    assert kernels[0][:2] == (4, 4) and all(k[:2] == (3, 3) for k in kernels[1:])
    assert [k[3] for k in kernels] == [4 * min(2**i, 8) for i in range(convs)]
    logits = disc(tf.zeros((3, code_res, code_res, 8)))
    assert logits.shape == (3, out_side, out_side, 1)


def test_code_discriminator_default_channels() -> None:
    disc = CodeDiscriminator(32, 16, seed=0)
    shapes = [conv.kernel.shape for conv in disc.down]
    assert shapes == [(4, 4, 32, 256), (3, 3, 256, 512), (3, 3, 512, 1024)]
    assert disc.out_conv.kernel.shape == (1, 1, 1024, 1)
    codes = np.random.default_rng(1).normal(size=(2, 16, 16, 32)).astype(np.float32)
    logits = disc(tf.constant(codes))
    assert logits.shape == (2, 2, 2, 1)
    assert np.isfinite(logits.numpy()).all() and logits.numpy().std() > 0
