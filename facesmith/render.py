"""Render rows and summaries as a Rich table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


# Characters a terminal may act on rather than show: C0 and C1 controls (ESC starts colour,
# cursor and title sequences; U+009B is an 8-bit CSI), DEL, and the bidirectional overrides that
# reorder what is shown. A file name is data: any of these in it is shown as an escape instead.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# In CSV the line breaks and tabs of a value are the format's own business (quoted), not a risk.
_UNPRINTABLE_IN_CSV = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_JSON_UNESCAPED = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` as a terminal shows it literally: control characters become visible escapes
    ('\\x1b'), so a file name cannot recolour, move the cursor, retitle or reorder the screen."""
    return _UNPRINTABLE.sub(_escape, str(text))


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
    return printable(_plain(value))


def _csv_value(value: Any) -> Any:
    plain = _plain(value)
    return _UNPRINTABLE_IN_CSV.sub(_escape, plain) if isinstance(plain, str) else plain


def to_json(value: Any) -> str:
    # default=str: UUID, INTERVAL (timedelta) and other DuckDB values without a JSON form.
    # json escapes C0 controls itself; C1 controls and bidi overrides get \u escapes too, which
    # read back as the same string.
    text = json.dumps(_plain(value), indent=2, ensure_ascii=False, default=str)
    return _JSON_UNESCAPED.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def render_rows(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], output: OutputFormat, console: Console,
    title: str | None = None,
) -> None:
    if output is OutputFormat.json:
        console.file.write(to_json([dict(zip(columns, row)) for row in rows]) + "\n")
    elif output is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([_csv_value(column) for column in columns])
        for row in rows:
            writer.writerow([_csv_value(value) for value in row])
        console.file.write(buffer.getvalue())
    else:
        table = Table(title=None if title is None else printable(title), show_lines=False)
        # Text, not str: cell values are data and must not be read as Rich markup ('[x]').
        for column in columns:
            table.add_column(Text(printable(column)), overflow="fold")
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
        table = Table(title=printable(title), show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for name, value in rows:
            table.add_row(Text(printable(name)), Text(printable(value)))
        console.print(table)
