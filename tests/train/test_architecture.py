"""Tests for the SAEHD autoencoders (train/model.py) and their building blocks (train/layers.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from train.layers import (
    Conv2D,
    Dense,
    Downscale,
    ResidualBlock,
    Upscale,
    cos_activation,
    pixel_norm,
)
from train.model import (
    Architecture,
    Forward,
    ModelShape,
    SAEHDModel,
    expected_parameter_counts,
)

RES = 64
AE, E, D, M = 32, 16, 16, 16
VARIANTS = [
    kind + ("-" + "".join(flags) if flags else "")
    for kind in ("df", "liae")
    for n in range(5)
    for flags in itertools.combinations("udtc", n)
]


def _faces(batch: int, res: int, seed: int) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).random((batch, res, res, 3), dtype=np.float32))


def _small(archi: str) -> ModelShape:
    return ModelShape(RES, Architecture.parse(archi), AE, E, D, M)


def _snapshot(model: SAEHDModel) -> dict[str, np.ndarray]:
    return {name: v.numpy().copy() for name, v in model.named_variables().items()}


@pytest.fixture(scope="module")
def liae_model() -> SAEHDModel:
    return SAEHDModel(_small("liae-ud"), seed=7)


@pytest.fixture(scope="module")
def df_model() -> SAEHDModel:
    return SAEHDModel(_small("df-ud"), seed=7)


@pytest.mark.parametrize("archi", VARIANTS)
def test_every_variant_has_consistent_shapes_and_parameter_counts(archi: str) -> None:
    assert len(VARIANTS) == 32
    shape = _small(archi)
    a = shape.archi
    model = SAEHDModel(shape, seed=3)
    src, dst = _faces(2, RES, 0), _faces(2, RES, 1)
    out = model.forward(src, dst)

    for image in (out.src_src, out.dst_dst, out.src_dst):
        assert image.shape == (2, RES, RES, 3) and image.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0
    for mask in (out.src_src_mask, out.dst_dst_mask, out.src_dst_mask):
        assert mask.shape == (2, RES, RES, 1)
        assert 0.0 <= float(tf.reduce_min(mask)) and float(tf.reduce_max(mask)) <= 1.0

    # Bottleneck side L = R/16 (R/32 with -d); the inter upscales it once unless -t.
    lowest = RES // 32 if a.d else RES // 16
    code_side = lowest if a.t else 2 * lowest
    code_ch = 4 * AE if a.kind == "liae" else AE
    assert model.code_resolution == code_side
    assert out.src_code.shape == out.dst_code.shape == (2, code_side, code_side, code_ch)

    enc_side = RES // 32 if a.t else RES // 16
    assert model.encoder(src).shape == (2, enc_side * enc_side * 8 * E)

    counts = {
        part: sum(int(np.prod(v.shape)) for v in variables.values())
        for part, variables in model.variables_by_part().items()
    }
    assert counts == expected_parameter_counts(shape)

    names = model.named_variables()
    assert len(names) == len(model.variables)  # nothing in the module tree is missed
    assert all(v.name == name.replace("/", ".") for name, v in names.items())  # init keys == checkpoint names
    assert all(name.split("/")[0] in model.part_names for name in names)


def test_parameter_count_formula_matches_a_hand_count() -> None:
    """df at 64 px, ae 32, e 16, d 16, m 16, counted layer by layer."""
    encoder = (25 * 3 * 16 + 16) + (25 * 16 * 32 + 32) + (25 * 32 * 64 + 64) + (25 * 64 * 128 + 128)
    inter = (2048 * 32 + 32) + (32 * 512 + 512) + (9 * 32 * 128 + 128)  # flat 4·4·128; L² · 32 = 512
    # Upscale(in, out) is a 3×3 conv to 4·out; ResidualBlock(ch) two 3×3 ch→ch convs.
    rgb = (
        (9 * 32 * 512 + 512)  # up 32 -> 128
        + 2 * (9 * 128 * 128 + 128)  # res 128
        + (9 * 128 * 256 + 256)  # up 128 -> 64
        + 2 * (9 * 64 * 64 + 64)  # res 64
        + (9 * 64 * 128 + 128)  # up 64 -> 32
        + 2 * (9 * 32 * 32 + 32)  # res 32
        + (32 * 3 + 3)  # 1×1 to RGB
    )
    mask = (9 * 32 * 512 + 512) + (9 * 128 * 256 + 256) + (9 * 64 * 128 + 128) + (32 + 1)
    decoder = rgb + mask
    assert expected_parameter_counts(_small("df")) == {
        "encoder": encoder,
        "inter": inter,
        "decoder_src": decoder,
        "decoder_dst": decoder,
    }
    assert (encoder, inter, decoder) == (270240, 119456, 1421636)


def test_worked_example_liae_ud_128() -> None:
    shape = ModelShape(128, Architecture.parse("liae-ud"), 256, 64, 64, 22)
    model = SAEHDModel(shape, seed=0)
    faces = _faces(1, 128, 2)

    flat = model.encoder(faces)
    assert flat.shape == (1, 8 * 8 * 512) == (1, 32768)
    assert model.inter_ab.dense_0.kernel.shape == (32768, 256)
    assert model.inter_ab.dense_1.kernel.shape == (256, 4 * 4 * 512)
    assert model.inter_ab(flat).shape == model.inter_b(flat).shape == (1, 8, 8, 512)

    out = model.forward(faces, faces)
    assert out.src_code.shape == out.dst_code.shape == (1, 8, 8, 1024)

    x = out.src_code
    sides_channels = []
    for up, res in zip(model.decoder.up, model.decoder.res):
        x = res(up(x))
        sides_channels.append(tuple(x.shape[1:]))
    assert sides_channels == [(16, 16, 512), (32, 32, 256), (64, 64, 128)]
    assert out.src_src.shape == (1, 128, 128, 3)  # -d doubles 64 -> 128

    m = out.src_code
    mask_stages = []
    for up in model.decoder.mask_up:
        m = up(m)
        mask_stages.append(tuple(m.shape[1:]))
    assert mask_stages == [(16, 16, 176), (32, 32, 88), (64, 64, 44), (128, 128, 22)]
    assert out.src_src_mask.shape == (1, 128, 128, 1)


def test_same_seed_same_weights_and_different_seed_different(df_model: SAEHDModel) -> None:
    again = SAEHDModel(_small("df-ud"), seed=7)
    first, second = _snapshot(df_model), _snapshot(again)
    assert list(first) == list(second)
    assert all(np.array_equal(first[k], second[k]) for k in first)

    other = _snapshot(SAEHDModel(_small("df-ud"), seed=8))
    kernels = [k for k in first if k.endswith("/kernel")]
    assert all(not np.array_equal(first[k], other[k]) for k in kernels)
    assert all(not first[k].any() for k in first if k.endswith("/bias"))  # biases start at zero

    # Weights depend on (seed, name) only: a layer built on its own with the same name matches.
    alone = Conv2D(3, E, 5, strides=2, seed=7, name="encoder/down_0/conv")
    np.testing.assert_array_equal(alone.kernel.numpy(), first["encoder/down_0/conv/kernel"])


def test_glorot_uniform_bounds_and_spread() -> None:
    dense = Dense(400, 600, seed=1, name="probe/dense")
    limit = math.sqrt(6.0 / (400 + 600))
    values = dense.kernel.numpy()
    assert np.abs(values).max() <= limit
    assert abs(values.std() - limit / math.sqrt(3.0)) < 0.01 * limit  # std of U(-l, l) is l/√3
    assert abs(values.mean()) < 0.01 * limit


def test_reinitialise_inters_resets_only_inter_blocks(liae_model: SAEHDModel, df_model: SAEHDModel) -> None:
    for model, inter_parts in ((liae_model, ("inter_ab", "inter_b")), (df_model, ("inter",))):
        initial = _snapshot(model)
        for v in model.variables:
            v.assign_add(tf.ones_like(v))  # stands in for training
        model.reinitialise_inters()
        after = _snapshot(model)
        for name, value in after.items():
            if name.split("/")[0] in inter_parts:
                np.testing.assert_array_equal(value, initial[name])
            else:
                np.testing.assert_array_equal(value, initial[name] + 1.0)

        model.reinitialise_inters(seed=99)
        reseeded = _snapshot(model)
        inter_kernels = [k for k in reseeded if k.split("/")[0] in inter_parts and k.endswith("kernel")]
        assert inter_kernels and all(not np.array_equal(reseeded[k], initial[k]) for k in inter_kernels)

        for name, v in model.named_variables().items():  # leave the shared fixture at its built state
            v.assign(initial[name])
        model.reinitialise_inters()


def test_freeze_excludes_inter_ab_for_liae_only(liae_model: SAEHDModel, df_model: SAEHDModel) -> None:
    parts = liae_model.variables_by_part()
    frozen = liae_model.trainable_variables_for(freeze_inter_ab=True)
    frozen_ids = {id(v) for v in frozen}
    assert not frozen_ids & {id(v) for v in parts["inter_ab"].values()}
    assert len(frozen) == len(liae_model.variables) - len(parts["inter_ab"])
    for part in ("encoder", "inter_b", "decoder"):
        assert {id(v) for v in parts[part].values()} <= frozen_ids
    assert len(liae_model.trainable_variables_for(freeze_inter_ab=False)) == len(liae_model.variables)

    for flag in (True, False):
        assert len(df_model.trainable_variables_for(freeze_inter_ab=flag)) == len(df_model.variables)
    assert set(df_model.variables_by_part()) == {"encoder", "inter", "decoder_src", "decoder_dst"}
    assert set(parts) == {"encoder", "inter_ab", "inter_b", "decoder"}


@pytest.mark.parametrize("fixture", ["liae_model", "df_model"])
def test_swap_equals_forward_src_dst(fixture: str, request: pytest.FixtureRequest) -> None:
    model: SAEHDModel = request.getfixturevalue(fixture)
    src, dst = _faces(2, RES, 5), _faces(2, RES, 6)
    out = model.forward(src, dst)
    face, face_mask, dst_mask = model.swap(dst)
    np.testing.assert_allclose(face.numpy(), out.src_dst.numpy(), atol=1e-6)
    np.testing.assert_allclose(face_mask.numpy(), out.src_dst_mask.numpy(), atol=1e-6)
    np.testing.assert_allclose(dst_mask.numpy(), out.dst_dst_mask.numpy(), atol=1e-6)
    # The swap really is a different output from the dst reconstruction.
    assert np.abs(out.src_dst.numpy() - out.dst_dst.numpy()).max() > 1e-4


def test_forward_runs_compiled_and_in_half_precision(df_model: SAEHDModel) -> None:
    faces = _faces(2, RES, 9)
    eager = df_model.forward(faces, faces)
    from train.gradients import compiled

    traced = compiled(df_model.forward, df_model.variables, Forward)(faces.numpy(), faces.numpy())
    assert isinstance(traced, Forward)
    np.testing.assert_allclose(np.asarray(traced.src_dst), eager.src_dst.numpy(), atol=1e-5)

    half = SAEHDModel(_small("df-ud"), seed=7, compute_dtype=tf.float16)
    out16 = half.forward(faces, faces)
    assert out16.src_dst.dtype == tf.float32
    assert all(v.dtype == "float32" for v in half.variables)
    np.testing.assert_allclose(out16.src_dst.numpy(), eager.src_dst.numpy(), atol=1e-2)


def test_forward_refuses_wrong_input_size(df_model: SAEHDModel) -> None:
    with pytest.raises(ValueError, match="warped_src"):
        df_model.forward(_faces(1, 32, 0), _faces(1, RES, 0))


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("df", "df"),
        ("liae", "liae"),
        ("liae-ud", "liae-ud"),
        ("liae-du", "liae-ud"),
        ("DF-CTUD", "df-udtc"),
        (" liae-t ", "liae-t"),
        ("df-c", "df-c"),
    ],
)
def test_architecture_parse_accepts(text: str, canonical: str) -> None:
    archi = Architecture.parse(text)
    assert str(archi) == canonical
    assert Architecture.parse(str(archi)) == archi


@pytest.mark.parametrize(
    "text", ["", "df-", "liae-uu", "liae-x", "dfl", "df_ud", "df-u-d", "-ud", "liae ud", "lia-ud", "df-udtcu"]
)
def test_architecture_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="'df' or 'liae'"):
        Architecture.parse(text)


def test_architecture_fields_and_resolution_multiple() -> None:
    archi = Architecture.parse("liae-ud")
    assert (archi.kind, archi.u, archi.d, archi.t, archi.c) == ("liae", True, True, False, False)
    assert archi.resolution_multiple == 32
    assert Architecture.parse("df-utc").resolution_multiple == 16


def test_model_shape_validate() -> None:
    good = ModelShape(128, Architecture.parse("liae-ud"), 256, 64, 64, 22)
    assert good.validate() is good
    ModelShape(80, Architecture.parse("df-t"), 32, 16, 16, 16).validate()  # 16-multiple is enough without -d
    ModelShape(640, Architecture.parse("df-d"), 1024, 256, 256, 256).validate()

    bad = [
        {"resolution": 48},
        {"resolution": 656},
        {"resolution": 72},  # not a multiple of 32 (-d)
        {"resolution": 80},  # multiple of 16 but not of 32 (-d)
        {"resolution": 128.0},
        {"ae_dims": 31},
        {"ae_dims": 1025},
        {"e_dims": 14},
        {"e_dims": 258},
        {"e_dims": 17},
        {"d_dims": 33},
        {"d_mask_dims": 21},
        {"d_mask_dims": True},
    ]
    fields = {
        "resolution": 128,
        "archi": Architecture.parse("liae-ud"),
        "ae_dims": 256,
        "e_dims": 64,
        "d_dims": 64,
        "d_mask_dims": 22,
    }
    for change in bad:
        (field,) = change
        with pytest.raises(ValueError, match=field):
            ModelShape(**{**fields, **change}).validate()
    with pytest.raises(ValueError, match="resolution"):
        SAEHDModel(ModelShape(**{**fields, "resolution": 112}), seed=0)


def test_t_variant_at_a_resolution_not_divisible_by_32() -> None:
    """-t halves five times; at 80 px the encoder ends at ⌈80/32⌉ = 3 and the decoder still reaches 80."""
    shape = ModelShape(80, Architecture.parse("liae-t"), AE, E, D, M)
    model = SAEHDModel(shape, seed=1)
    faces = _faces(1, 80, 3)
    assert model.encoder(faces).shape == (1, 3 * 3 * 8 * E)
    face, face_mask, dst_mask = model.swap(faces)
    assert face.shape == (1, 80, 80, 3) and face_mask.shape == dst_mask.shape == (1, 80, 80, 1)
    counts = {
        p: sum(int(np.prod(v.shape)) for v in vs.values()) for p, vs in model.variables_by_part().items()
    }
    assert counts == expected_parameter_counts(shape)


def test_layer_blocks_against_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 6)).astype(np.float32)

    expected = x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(pixel_norm(tf.constant(x)).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(cos_activation(tf.constant(x)).numpy(), x * np.cos(x), rtol=1e-5, atol=1e-6)

    # A 1×1 residual block is two matmuls; check it against numpy with non-zero biases.
    block = ResidualBlock(6, kernel=1, seed=0, name="probe/res")
    block.conv_0.bias.assign(rng.normal(size=6).astype(np.float32))
    block.conv_1.bias.assign(rng.normal(size=6).astype(np.float32))
    k0, b0 = block.conv_0.kernel.numpy()[0, 0], block.conv_0.bias.numpy()
    k1, b1 = block.conv_1.kernel.numpy()[0, 0], block.conv_1.bias.numpy()

    def leaky(v: np.ndarray) -> np.ndarray:
        return np.where(v > 0, v, 0.2 * v)

    reference = leaky(x + leaky(x @ k0 + b0) @ k1 + b1)
    np.testing.assert_allclose(block(tf.constant(x)).numpy(), reference, rtol=1e-5, atol=1e-5)

    def identity(v: tf.Tensor) -> tf.Tensor:
        return v

    down = Downscale(6, 10, activation=identity, seed=0, name="probe/down")
    assert down(tf.constant(x)).shape == (2, 2, 2, 10)
    up = Upscale(6, 5, activation=identity, seed=0, name="probe/up")
    y = up(tf.constant(x))
    assert y.shape == (2, 8, 8, 5) and up.conv.kernel.shape == (3, 3, 6, 20)
    # Pixel shuffle: output (2i + a, 2j + b, c) is conv channel (2a + b)·5 + c at (i, j).
    conv = up.conv(tf.constant(x)).numpy()
    np.testing.assert_allclose(y.numpy()[:, 3, 4, 2], conv[:, 1, 2, (2 * 1 + 0) * 5 + 2], rtol=1e-6)
