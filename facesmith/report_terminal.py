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


HARDEST_HEADERS = ("rank", "face", "image #face", "training loss", "x median", "seen", "trains", "quality verdicts",
                   "identity", "why it does not train")


def hardest_rows(training_loss: dict) -> list[tuple]:
    """One row per face of a HardestFaces document (curate.training_loss), for HARDEST_HEADERS."""
    return [(face["rank"], face["face_id"], f"{face['path']} #{face['face_index']}", f"{face['loss']:.4f}",
             "-" if face["ratio"] is None else f"{face['ratio']:.2f}", face["seen"], "yes" if face["trains"] else "no",
             face["verdicts"], face["identity"] or "-", face["status"] or "-")
            for face in training_loss.get("faces", [])]


def hardest_title(training_loss: dict) -> str:
    if training_loss.get("iteration") is None:
        return f"no per-face training loss in {training_loss.get('model_dir')} yet (stored with each checkpoint)"
    return (f"{training_loss['side']} faces the model learns worst: running loss at iteration "
            f"{training_loss['iteration']} of {training_loss['model_dir']} (median {training_loss['median']:.4f}, "
            f"{training_loss['faces_with_loss']} faces)")


def render_hardest(training_loss: dict, console: Console) -> None:
    """The hardest faces as a Rich table (a title line alone when the model has recorded none)."""
    rows = hardest_rows(training_loss)
    if not rows:
        console.print(Text(printable(hardest_title(training_loss))))
        return
    table = Table(title=printable(hardest_title(training_loss)), title_justify="left")
    for header in HARDEST_HEADERS:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(printable(value)) for value in row))
    console.print(table)


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
    if report.training_loss:
        render_hardest(report.training_loss, console)
    if report.advice:
        console.print(Text("advice", style="bold"))
        for line in report.advice:
            console.print(Text(f"  • {printable(line)}"))
