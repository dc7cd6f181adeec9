"""Typer flags generated from declared options, so each option's help and range live in one place."""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

_PYTHON_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def _flag(spec: Any) -> str:
    return "--" + spec.name.replace("_", "-")


def option_help(spec: Any) -> str:
    """The declared help plus its choices or range and default (no square brackets: Rich eats them)."""
    parts = [spec.help]
    if spec.choices:
        parts.append(f"(one of: {', '.join(spec.choices)})")
    elif spec.minimum is not None or spec.maximum is not None:
        low = "" if spec.minimum is None else f"{spec.minimum:g}"
        high = "" if spec.maximum is None else f"{spec.maximum:g}"
        parts.append(f"(range {low}..{high})")
    if spec.default is not None and not getattr(spec, "phase_default", False):
        parts.append(f"(default: {spec.default})")
    return " ".join(parts)


def _parameter(spec: Any, panel: str, structural_panel: str | None) -> inspect.Parameter:
    # Booleans take a value (--pretrain true) rather than a --x/--no-x pair: the same spelling as in
    # the TOML file, a way to switch off an option an earlier session switched on, and a help page
    # that stays readable in an 80-column terminal.
    python_type = str if spec.type == "bool" else _PYTHON_TYPES[spec.type]
    if structural_panel and getattr(spec, "structural", False):
        panel = structural_panel
    option = typer.Option(_flag(spec), help=option_help(spec), rich_help_panel=panel, show_default=False,
                          metavar="true|false" if spec.type == "bool" else None)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[python_type], option])


def with_option_flags(specs: Sequence[Any], panel: str, structural_panel: str | None = None,
                      extra: Sequence[tuple[Sequence[Any], str]] = ()
                      ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a command taking `**options` with one keyword flag per declared option; `extra` adds
    further (specs, help panel) groups, whose flags arrive in the same `**options`."""

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(function)
        # The command modules' annotations are strings (postponed evaluation): resolve them for Typer.
        hints = typing.get_type_hints(function, include_extras=True)
        fixed = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
                 if p.kind is not inspect.Parameter.VAR_KEYWORD]
        function.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=fixed + [_parameter(spec, panel, structural_panel) for spec in specs]
            + [_parameter(spec, group_panel, None) for group, group_panel in extra for spec in group])
        return function

    return decorate


def given(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags the user actually passed (Typer hands every undeclared one over as None)."""
    return {name: value for name, value in flags.items() if value is not None}


def render_option_table(specs: Sequence[Any], output: Any, title: str) -> None:
    """`train options` / `merge options`: one row per declared option."""
    from facesmith.render import render_rows, stdout_console

    rows = [spec.as_row() for spec in specs]
    columns = list(rows[0])
    render_rows(columns, [[row[c] for c in columns] for row in rows], output, stdout_console(), title=title)
