"""The shared option machinery: specs from a dataclass, coercion, range and choice checks, TOML in and out."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from curate.options import (
    OptionSpec,
    check_range,
    coerce,
    declare,
    load_toml,
    option_specs,
    to_toml,
    tomllib,
)


class ToyError(Exception):
    pass


@dataclass(frozen=True)
class Toy:
    size: int = declare(8, "How big.", minimum=1, maximum=64, structural=True)
    ratio: float = declare(0.5, "A share.", minimum=0.0, maximum=1.0)
    mode: str = declare("fast", "How to run.", choices=("fast", "slow"))
    verbose: bool = declare(False, "Talk more.")
    warp: bool | None = declare(None, "Phase decides.", phase_default=True)
    seed: int = declare(0, "Seed.", minimum=0)


@dataclass(frozen=True)
class Plain:
    count: int = declare(3, "A count.", minimum=0, maximum=9)
    name: str = declare("a", "A name.")


SPECS = {spec.name: spec for spec in option_specs(Toy)}


def test_specs_follow_the_declarations_in_order():
    assert list(SPECS) == ["size", "ratio", "mode", "verbose", "warp", "seed"]
    assert [spec.type for spec in SPECS.values()] == ["int", "float", "str", "bool", "bool", "int"]
    assert SPECS["size"] == OptionSpec("size", "int", 8, "How big.", 1, 64, None, structural=True)
    assert SPECS["warp"].phase_default and SPECS["warp"].default is None
    assert SPECS["ratio"].structural is False


def test_rows_show_allowed_values_and_a_structural_column_only_where_declared():
    assert SPECS["size"].as_row() == {"option": "size", "type": "int", "default": 8, "allowed": "1..64",
                                      "structural": True, "help": "How big."}
    assert SPECS["mode"].as_row()["allowed"] == "fast, slow"
    assert SPECS["seed"].as_row()["allowed"] == ">= 0"
    assert SPECS["verbose"].as_row()["allowed"] == ""
    plain = option_specs(Plain)
    assert [spec.structural for spec in plain] == [None, None]
    assert list(plain[0].as_row()) == ["option", "type", "default", "allowed", "help"]


def test_real_annotations_work_as_well_as_postponed_ones():
    assert option_specs(Toy)[4].type == "bool"  # "bool | None" as a string here
    namespace: dict = {}
    exec("from dataclasses import dataclass\n"
         "from curate.options import declare\n"
         "@dataclass(frozen=True)\n"
         "class Live:\n"
         "    flag: bool | None = declare(None, 'x', phase_default=True)\n"
         "    size: int = declare(1, 'y')\n", namespace)
    assert [spec.type for spec in option_specs(namespace["Live"])] == ["bool", "int"]


@pytest.mark.parametrize("name, value, expected", [
    ("size", "12", 12), ("size", 12.0, 12), ("size", 7, 7),
    ("ratio", "0.25", 0.25), ("ratio", 1, 1.0),
    ("mode", "slow", "slow"),
    ("verbose", True, True), ("verbose", "yes", True), ("verbose", " On ", True), ("verbose", "1", True),
    ("verbose", "false", False), ("verbose", "NO", False), ("verbose", "off", False), ("verbose", "0", False),
    ("warp", None, None),
])
def test_values_are_coerced_to_the_declared_type(name, value, expected):
    result = coerce(SPECS[name], value, ToyError)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("name, value, message", [
    ("size", 2.5, "option size must be a int, got 2.5"),
    ("size", True, "option size must be a int"),
    ("size", "big", "option size must be a int"),
    ("size", float("inf"), "option size must be a int"),
    ("ratio", "nan", "option ratio must be a float"),
    ("ratio", False, "option ratio must be a float"),
    ("verbose", "maybe", "option verbose must be a bool"),
    ("verbose", 1, "option verbose must be a bool"),
    ("mode", 3, "option mode must be a str"),
    ("seed", None, "option seed needs a value"),
])
def test_wrong_types_raise_the_given_error_naming_the_option(name, value, message):
    with pytest.raises(ToyError, match=message):
        coerce(SPECS[name], value, ToyError)


@pytest.mark.parametrize("name, value, message", [
    ("size", 0, "toy option size must be >= 1, got 0"),
    ("size", 65, "toy option size must be <= 64, got 65"),
    ("ratio", 1.5, "toy option ratio must be <= 1.0"),
    ("mode", "medium", "toy option mode must be one of fast, slow, got 'medium'"),
])
def test_out_of_range_values_and_unknown_choices_are_refused(name, value, message):
    with pytest.raises(ToyError, match=message):
        check_range(SPECS[name], value, ToyError, "toy option")


def test_values_in_range_and_none_pass():
    for name, value in (("size", 1), ("size", 64), ("ratio", 0.0), ("mode", "fast"), ("warp", None)):
        check_range(SPECS[name], value, ToyError)


def test_toml_reads_the_table_and_top_level_keys_with_the_top_level_winning(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text('size = 4\n[toy]\nsize = 16\nmode = "slow"\n')
    assert load_toml(path, "toy", ToyError, "toy file") == {"size": 4, "mode": "slow"}
    path.write_text('ratio = 0.1\nverbose = true\n')
    assert load_toml(path, "toy", ToyError, "toy file") == {"ratio": 0.1, "verbose": True}


def test_toml_problems_raise_the_given_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("size = = 3")
    with pytest.raises(ToyError, match="toy file .*bad.toml is not valid TOML"):
        load_toml(bad, "toy", ToyError, "toy file")
    with pytest.raises(ToyError, match="cannot read toy file .*missing.toml"):
        load_toml(tmp_path / "missing.toml", "toy", ToyError, "toy file")


def deeply_nested_toml(levels: int = 5000) -> str:
    """About 10 KB: `x = [[[…]]]`, which tomllib parses by recursion, one frame per level."""
    return "x = " + "[" * levels + "]" * levels + "\n"


def test_deeply_nested_or_huge_toml_is_a_clear_error(tmp_path):
    nested = tmp_path / "nested.toml"
    nested.write_text(deeply_nested_toml())
    assert nested.stat().st_size < 11_000
    with pytest.raises(ToyError, match="nests arrays or tables too deeply"):
        load_toml(nested, "toy", ToyError, "toy file")
    huge = tmp_path / "huge.toml"
    huge.write_text("# padding\n" * 200_000)
    with pytest.raises(ToyError, match="larger than 1024 KiB"):
        load_toml(huge, "toy", ToyError, "toy file")


def test_to_toml_round_trips_through_tomllib_and_drops_none(tmp_path):
    values = {"size": 16, "ratio": 5e-05, "mode": 'sl"o\\w\n', "verbose": True, "warp": None, "seed": 0}
    text = to_toml(values, "toy", "toy options")
    assert text.startswith("# toy options\n[toy]\n")
    document = tomllib.loads(text)
    assert document == {"toy": {name: value for name, value in values.items() if value is not None}}
    path = tmp_path / "toy.toml"
    path.write_text(text)
    loaded = load_toml(path, "toy", ToyError, "toy file")
    assert {name: coerce(SPECS[name], value, ToyError) for name, value in loaded.items()} == {
        name: value for name, value in values.items() if value is not None}
