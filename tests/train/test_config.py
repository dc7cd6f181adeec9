"""Training options: declared once, validated, phase defaults, pretrain forcing, TOML round trip."""

from __future__ import annotations

import pytest

from curate.options import tomllib
from train.config import (
    STRUCTURAL_OPTIONS,
    ConfigError,
    TrainConfig,
    config_to_toml,
    load_toml,
    option_specs,
    resolve_config,
)


def test_every_option_is_declared_with_help_and_a_type():
    specs = option_specs()
    assert len(specs) == len(TrainConfig.__dataclass_fields__)
    for spec in specs:
        assert spec.help.strip(), spec.name
        assert spec.type in ("bool", "int", "float", "str")
    assert set(STRUCTURAL_OPTIONS) == {"resolution", "face_type", "archi", "ae_dims", "e_dims", "d_dims",
                                       "d_mask_dims"}


@pytest.mark.parametrize("phase, warp, dropout, gan", [
    ("rw", True, False, 0.0), ("lrd", False, True, 0.0), ("gan", False, True, 0.1)])
def test_phase_defaults(phase, warp, dropout, gan):
    config, _ = resolve_config({"phase": phase})
    assert (config.random_warp, config.lr_dropout, config.gan_power) == (warp, dropout, gan)


def test_explicit_options_beat_phase_defaults():
    config, _ = resolve_config({"phase": "lrd", "random_warp": True, "gan_power": 0.3})
    assert config.random_warp is True and config.gan_power == 0.3 and config.lr_dropout is True


def test_pretrain_forces_its_options_and_says_so():
    config, notes = resolve_config({"pretrain": True, "gan_power": 1.0, "random_warp": True})
    assert (config.random_warp, config.gan_power, config.uniform_yaw, config.random_src_flip) == (
        False, 0.0, True, True)
    assert any("pretrain forces" in note and "gan_power" in note for note in notes)


def test_resolution_floored_to_the_variant_multiple_and_archi_normalised():
    config, notes = resolve_config({"resolution": 100, "archi": "LIAE-DU"})
    assert config.archi == "liae-ud" and config.resolution == 96
    assert any("floored to 96" in note for note in notes)
    config, _ = resolve_config({"resolution": 100, "archi": "df"})
    assert config.resolution == 96 and config.effective_d_mask_dims == 22


@pytest.mark.parametrize("values, message", [
    ({"resolution": 32}, "resolution must be >= 64"),
    ({"ae_dims": 2000}, "ae_dims must be <= 1024"),
    ({"ct_mode": "xyz"}, "ct_mode must be one of"),
    ({"archi": "liae-uu"}, "option archi"),
    ({"archi": "vgg"}, "option archi"),
    ({"batch_size": "eight"}, "batch_size must be a int"),
    ({"batch_size": 2.5}, "batch_size must be a int"),
    ({"masked_training": "maybe"}, "masked_training must be a bool"),
    ({"true_face_power": 0.01}, "only with the df"),
    ({"phase": "gan", "gan_power": 0.0}, "needs gan_power > 0"),
    ({"no_such_option": 1}, "unknown option"),
])
def test_bad_values_are_refused_with_the_option_named(values, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(values)


def test_structure_of_an_existing_model_wins():
    stored = {"resolution": 64, "face_type": "full", "archi": "df", "ae_dims": 64, "e_dims": 16,
              "d_dims": 16, "d_mask_dims": 16}
    config, notes = resolve_config({"resolution": 128, "batch_size": 4}, stored)
    assert config.resolution == 64 and config.archi == "df" and config.batch_size == 4
    assert any("resolution is fixed at model creation" in note for note in notes)


def test_toml_round_trip(tmp_path):
    config, _ = resolve_config({"phase": "lrd", "ct_mode": "rct", "batch_size": 4, "archi": "df-ud"})
    path = tmp_path / "options.toml"
    path.write_text(config_to_toml(config))
    assert tomllib.loads(path.read_text())["train"]["ct_mode"] == "rct"
    again, _ = resolve_config(load_toml(path))
    assert again == config


def test_toml_errors_are_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "missing.toml")


def test_colour_transfer_choices_match_the_implemented_modes():
    from train.color_transfer import COLOR_TRANSFER_MODES
    from train.config import COLOR_TRANSFER_CHOICES

    assert tuple(COLOR_TRANSFER_CHOICES) == tuple(COLOR_TRANSFER_MODES)
