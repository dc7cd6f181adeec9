"""Render rows and summaries as a Rich table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


def stdout_console() -> Console:
    """Rich console for results: the terminal's width on a terminal; wide enough for paths and
    numbers when piped or logged, where Rich would otherwise assume 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _plain(value: Any) -> Any:
    """JSON-safe form of DuckDB values (timestamps, decimals, NaN, nested lists)."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        shown = ", ".join(_cell(item) for item in value[:4])
        return f"[{shown}, … {len(value)} values]"
    return str(_plain(value))


def to_json(value: Any) -> str:
    # default=str: UUID, INTERVAL (timedelta) and other DuckDB values without a JSON form.
    return json.dumps(_plain(value), indent=2, ensure_ascii=False, default=str)


def render_rows(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], output: OutputFormat, console: Console,
    title: str | None = None,
) -> None:
    if output is OutputFormat.json:
        console.file.write(to_json([dict(zip(columns, row)) for row in rows]) + "\n")
    elif output is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_plain(value) for value in row])
        console.file.write(buffer.getvalue())
    else:
        table = Table(title=title, show_lines=False)
        # Text, not str: cell values are data and must not be read as Rich markup ('[x]').
        for column in columns:
            table.add_column(Text(column), overflow="fold")
        for row in rows:
            table.add_row(*(Text(_cell(value)) for value in row))
        console.print(table)


def flatten(values: dict[str, Any]) -> dict[str, Any]:
    """One level of keys for CSV: nested dicts become `key_subkey`, lists join with '; '."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{sub}": item for sub, item in value.items()})
        elif isinstance(value, list):
            flat[key] = "; ".join(str(item) for item in value)
        else:
            flat[key] = value
    return flat


def render_summary(summary: dict[str, Any], output: OutputFormat, title: str, rows: list[tuple[str, str]]) -> None:
    """A command's result: the whole summary as JSON or one CSV row, or the chosen `rows` as a
    two-column table for people."""
    console = stdout_console()
    if output is OutputFormat.json:
        console.file.write(to_json(summary) + "\n")
    elif output is OutputFormat.csv:
        flat = flatten(summary)
        render_rows(list(flat), [list(flat.values())], output, console)
    else:
        table = Table(title=title, show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for name, value in rows:
            table.add_row(Text(name), Text(value))
        console.print(table)
