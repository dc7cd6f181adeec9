"""Render a faceset Report as Rich tables in the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from curate.reports.report import Report
from facesmith.render import printable


def _pairs(title: str, items, headers=("what", "number")) -> Table:
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in items:
        table.add_row(*(Text(printable(value)) for value in row))
    return table


def _coverage_grid(coverage: dict) -> Table | None:
    counts, yaw_edges, pitch_edges = coverage.get("counts"), coverage.get("yaw_edges"), coverage.get("pitch_edges")
    if not counts or not yaw_edges or not pitch_edges:
        return None
    table = Table(title="pose coverage of the faces that can train: faces per yaw (columns) × pitch (rows) bin, °; · = none",
                  title_justify="left", show_lines=False, padding=(0, 1))
    table.add_column("pitch \\ yaw", justify="right")
    for edge in yaw_edges[:-1]:
        table.add_column(f"{int(edge)}", justify="right")
    for row in reversed(range(len(pitch_edges) - 1)):
        cells = []
        for column in range(len(yaw_edges) - 1):
            count = counts[column][row]
            cells.append(Text(str(count), style="bold") if count else Text("·", style="red"))
        table.add_row(f"{int(pitch_edges[row])}", *cells)
    return table


def render_report(report: Report, console: Console) -> None:
    console.print(Text(f"faceset {printable(report.database)} ({report.role})", style="bold"))
    for warning in report.warnings:
        console.print(Text(f"warning: {printable(warning)}", style="yellow"))
    if report.stale:
        console.print(Text(f"note: scanned again after these analyses ran: {', '.join(report.stale)} "
                           "(run 'facesmith curate analyze')", style="yellow"))
    console.print(_pairs("counts", report.counts.items()))
    if report.rejects_by_reason:
        console.print(_pairs("rejected files", report.rejects_by_reason.items(), ("reason", "files")))
    if report.verdicts:
        console.print(_pairs("quality checks", [(m, v["ok"], v["warn"], v["bad"]) for m, v in report.verdicts.items()],
                             ("measure", "ok", "warn", "bad")))
    medians = [(h.measure, f"{h.median:.3g}") for h in report.histograms if h.median is not None]
    if medians:
        console.print(_pairs("medians", medians, ("measure", "median")))
    if report.duplicates:
        console.print(_pairs("duplicates", [("groups", report.duplicates["groups"]),
                                            ("faces to drop", report.duplicates["faces_to_drop"]),
                                            *report.duplicates["by_kind"].items()]))
    if report.identities:
        console.print(_pairs("identities", [("clusters", report.identities["clusters"]),
                                            *report.identities["labels"].items()]))
    if any(report.decisions.values()):
        console.print(_pairs("decided by hand (curate review)", report.decisions.items(), ("decision", "faces")))
    grid = _coverage_grid(report.coverage)
    if grid is not None:
        console.print(grid)
    lighting = report.coverage.get("lighting") or {}
    if lighting:
        console.print(_pairs("lighting", lighting.items(), ("light from", "faces")))
    if report.selection:
        console.print(_pairs("selection", [("selected", report.selection["selected"]),
                                           ("faces", report.selection["faces"]),
                                           *report.selection["excluded_by_reason"].items()]))
    if report.advice:
        console.print(Text("advice", style="bold"))
        for line in report.advice:
            console.print(Text(f"  • {printable(line)}"))
