"""Options declared once on a frozen dataclass (type, default, range, help), coerced, checked and read from TOML."""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from curate.limits import MAX_CONFIG_BYTES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

OPTION_TYPES = ("bool", "int", "float", "str")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def declare(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
            choices: tuple[str, ...] | None = None, structural: bool = False, phase_default: bool = False,
            ) -> Any:
    """A dataclass field holding one option's default and declaration.

    `structural`: fixed when the thing configured is created (a model's shape). `phase_default`:
    `None` is a valid value meaning "what the phase implies", filled in later by the caller.
    Typed `Any` like `dataclasses.field`, so `name: int = declare(...)` type-checks.
    """
    metadata = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices,
                "structural": structural, "phase_default": phase_default}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionSpec:
    """One declared option, for help text, flags, validation and an options table.

    `structural` is None when the option set declares no structural option at all; the table row
    then has no "structural" column.
    """

    name: str
    type: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    structural: bool | None = None
    phase_default: bool = False

    @property
    def allowed(self) -> str:
        """The choices or the range as text ('' when anything of the type goes)."""
        if self.choices:
            return ", ".join(self.choices)
        if self.minimum is None and self.maximum is None:
            return ""
        if self.maximum is None:
            return f">= {self.minimum}"
        if self.minimum is None:
            return f"<= {self.maximum}"
        return f"{self.minimum}..{self.maximum}"

    def as_row(self) -> dict[str, Any]:
        row = {"option": self.name, "type": self.type, "default": self.default, "allowed": self.allowed}
        if self.structural is not None:
            row["structural"] = self.structural
        row["help"] = self.help
        return row


def _type_name(annotation: Any) -> str:
    """'bool', 'int', 'float' or 'str' for an annotation such as `int`, `bool | None` or "float | None"."""
    if isinstance(annotation, str):  # postponed annotations (`from __future__ import annotations`)
        names = {part.strip() for part in annotation.split("|")} - {"None"}
    else:
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        members = typing.get_args(annotation) if union else (annotation,)
        names = {getattr(member, "__name__", str(member)) for member in members if member is not type(None)}
    if len(names) == 1 and (name := names.pop()) in OPTION_TYPES:
        return name
    raise TypeError(f"unsupported option type {annotation!r}")


def option_specs(cls: type) -> tuple[OptionSpec, ...]:
    """The declarations of every field of a dataclass made with `declare`, in declaration order."""
    declared = fields(cls)
    has_structure = any(f.metadata.get("structural") for f in declared)
    return tuple(
        OptionSpec(name=f.name, type=_type_name(f.type), default=f.default, help=f.metadata["help"],
                   minimum=f.metadata["minimum"], maximum=f.metadata["maximum"], choices=f.metadata["choices"],
                   structural=bool(f.metadata["structural"]) if has_structure else None,
                   phase_default=bool(f.metadata["phase_default"]))
        for f in declared
    )


def coerce(spec: OptionSpec, value: Any, error: type[Exception], what: str = "option") -> Any:
    """The value converted to the option's type, or `error` naming the option ("{what} {name} ...").

    Booleans also take the words true/yes/on/1 and false/no/off/0; ints refuse fractions and bools;
    floats must be finite; strings must already be strings. None passes only for a phase default.
    """
    if value is None:
        if spec.phase_default:
            return None
        raise error(f"{what} {spec.name} needs a value")
    kind = spec.type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
                return value.strip().lower() in TRUE_WORDS
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError, OverflowError):
        raise error(f"{what} {spec.name} must be a {kind}, got {value!r}") from None


def check_range(spec: OptionSpec, value: Any, error: type[Exception], what: str = "option") -> None:
    """Raise `error` naming the option when a (coerced) value is not a choice or out of range; None passes."""
    if value is None:
        return
    if spec.choices is not None and value not in spec.choices:
        raise error(f"{what} {spec.name} must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise error(f"{what} {spec.name} must be >= {spec.minimum}, got {value}")
    if spec.maximum is not None and value > spec.maximum:
        raise error(f"{what} {spec.name} must be <= {spec.maximum}, got {value}")


def load_toml(path: Path, table: str, error: type[Exception], what: str) -> dict[str, Any]:
    """Option values from a TOML file: keys under a [table] table and top-level keys (those win).

    `what` names the file in messages ("cannot read {what} {path}: ...", "{what} {path} is not valid TOML").
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise error(f"{what} {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not an options file")
        document = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"cannot read {what} {path}: {problem}") from problem
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{what} {path} is not valid TOML: {problem}") from problem
    except RecursionError as problem:
        # tomllib parses nested arrays and inline tables by recursion: thousands of levels (a
        # 10 KB file) exhaust Python's stack. No options file nests more than a few.
        raise error(f"{what} {path} nests arrays or tables too deeply to be an options file") from problem
    section = document.get(table)
    values = dict(section) if isinstance(section, dict) else {}
    values.update({key: value for key, value in document.items() if key != table})
    return values


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's string escapes are valid TOML basic-string escapes
    if isinstance(value, (int, float)):
        return repr(value)  # inf and nan are spelled the same in TOML
    raise TypeError(f"cannot write {value!r} as a TOML option value")


def to_toml(values: dict[str, Any], table: str, title: str) -> str:
    """A TOML document: a `# title` comment, then a [table] holding every value that is not None."""
    lines = [f"# {title}", f"[{table}]"]
    lines += [f"{name} = {_toml_value(value)}" for name, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"
