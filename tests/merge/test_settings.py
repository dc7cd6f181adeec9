"""Merge settings: DFL's SAEHD defaults, TOML round trip, bad and unknown options refused by name."""

from __future__ import annotations

import dataclasses

import pytest

from curate.errors import FacesmithError
from curate.options import tomllib
from merge.settings import (
    MergeSettings,
    MergeSettingsError,
    load_toml,
    option_specs,
    resolve_settings,
    settings_to_toml,
)


def test_defaults_follow_the_saehd_merger():
    settings = resolve_settings({})
    assert settings == MergeSettings()
    assert (settings.mode, settings.mask_mode, settings.color_transfer) == (
        "overlay", "learned-prd*learned-dst", "rct")
    assert (settings.hist_match_threshold, settings.masked_hist_match) == (238, True)
    assert (settings.erode, settings.blur, settings.motion_blur, settings.face_scale, settings.sharpen_amount) == (
        0, 0, 0, 0, 0)
    assert settings.erode_sides == (0, 0, 0, 0)
    assert (settings.output_format, settings.jpeg_quality, settings.sharpen_mode) == ("png", 95, "none")
    assert settings.face_scale_factor == 1.0


def test_every_option_is_declared_with_help_type_and_allowed_values():
    specs = option_specs()
    assert [spec.name for spec in specs] == [f.name for f in dataclasses.fields(MergeSettings)]
    for spec in specs:
        assert spec.help.strip(), spec.name
        assert spec.type in ("bool", "int", "float", "str"), spec.name
        if spec.type == "str":
            assert spec.choices and spec.default in spec.choices, spec.name
        if spec.type == "int":
            assert spec.minimum is not None and spec.maximum is not None, spec.name
            assert spec.minimum <= spec.default <= spec.maximum, spec.name
        assert spec.as_row()["option"] == spec.name
    by_name = {spec.name: spec for spec in specs}
    assert (by_name["erode"].minimum, by_name["erode"].maximum) == (-400, 400)
    assert (by_name["erode_left"].minimum, by_name["blur"].maximum) == (-400, 400)
    assert (by_name["face_scale"].minimum, by_name["face_scale"].maximum) == (-50, 50)
    assert "dst*learned-prd" in by_name["mask_mode"].choices
    assert "seamless-hist-match" in by_name["mode"].choices


def test_values_are_coerced_to_the_declared_types():
    settings = resolve_settings({"erode": "12", "masked_hist_match": "off", "face_scale": 10.0,
                                 "erode_top": -30})
    assert settings.erode == 12 and settings.masked_hist_match is False and settings.face_scale == 10
    assert settings.erode_sides == (-30, 0, 0, 0)
    assert settings.face_scale_factor == pytest.approx(1.1)


def test_toml_round_trip(tmp_path):
    settings = resolve_settings({"mode": "seamless-hist-match", "mask_mode": "dst*learned-prd", "erode": -20,
                                 "erode_bottom": 35, "blur": 120, "color_transfer": "mkl",
                                 "masked_hist_match": False, "sharpen_mode": "gaussian", "sharpen_amount": -15,
                                 "face_scale": -7, "motion_blur": 40, "output_format": "jpg",
                                 "jpeg_quality": 88})
    path = tmp_path / "merge.toml"
    path.write_text(settings_to_toml(settings))
    document = tomllib.loads(path.read_text())
    assert document["merge"]["mask_mode"] == "dst*learned-prd" and document["merge"]["erode"] == -20
    assert resolve_settings(load_toml(path)) == settings


def test_top_level_keys_load_too_and_win_over_the_table(tmp_path):
    path = tmp_path / "merge.toml"
    path.write_text('blur = 50\n[merge]\nblur = 10\nmode = "hist-match"\n')
    settings = resolve_settings(load_toml(path))
    assert settings.blur == 50 and settings.mode == "hist-match"


@pytest.mark.parametrize("values, message", [
    ({"erode": 401}, "erode must be <= 400"),
    ({"erode_right": -401}, "erode_right must be >= -400"),
    ({"blur": -1}, "blur must be >= 0"),
    ({"hist_match_threshold": 256}, "hist_match_threshold must be <= 255"),
    ({"face_scale": 51}, "face_scale must be <= 50"),
    ({"jpeg_quality": 0}, "jpeg_quality must be >= 1"),
    ({"motion_blur": 101}, "motion_blur must be <= 100"),
    ({"sharpen_amount": -101}, "sharpen_amount must be >= -100"),
    ({"mode": "blend"}, "mode must be one of original, overlay"),
    ({"mask_mode": "xseg"}, "mask_mode must be one of"),
    ({"color_transfer": "mkl-m"}, "color_transfer must be one of"),
    ({"output_format": "webp"}, "output_format must be one of png, jpg"),
    ({"erode": 2.5}, "erode must be a int"),
    ({"blur": "wide"}, "blur must be a int"),
    ({"masked_hist_match": "maybe"}, "masked_hist_match must be a bool"),
    ({"mode": 3}, "mode must be a str"),
])
def test_bad_values_are_refused_with_the_option_named(values, message):
    with pytest.raises(MergeSettingsError, match=message):
        resolve_settings(values)


def test_unknown_options_are_refused():
    with pytest.raises(MergeSettingsError, match="unknown merge option.*super_resolution"):
        resolve_settings({"super_resolution": 50, "erode": 4})


def test_settings_errors_are_facesmith_errors_and_toml_problems_are_reported(tmp_path):
    assert issubclass(MergeSettingsError, FacesmithError)
    bad = tmp_path / "bad.toml"
    bad.write_text("erode = = 3")
    with pytest.raises(MergeSettingsError, match="not valid TOML"):
        load_toml(bad)
    with pytest.raises(MergeSettingsError, match="cannot read"):
        load_toml(tmp_path / "missing.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[merge]\nerode = 4\nwatermark = false\n")
    with pytest.raises(MergeSettingsError, match="watermark"):
        resolve_settings(load_toml(unknown))
