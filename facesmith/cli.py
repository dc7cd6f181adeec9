"""The facesmith command line: a thin Typer layer over the curate library (train and merge follow)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from curate import __version__
from curate.errors import FacesmithError
from facesmith.console import (
    AlignedOption,
    BackendOption,
    DeviceOption,
    ExistingDbOption,
    FaceTypeOption,
    FormatOption,
    ModelsOption,
    NewDbOption,
    PackOption,
    ResolutionOption,
    fail,
    progress,
    wants_progress,
)
from facesmith.render import OutputFormat, render_rows, stdout_console, to_json

app = typer.Typer(
    name="facesmith",
    help="Curate a faceset, train SAEHD on it and check the training by merging.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
curate_app = typer.Typer(
    help="Scan images into a DuckDB faceset: faces, landmarks, pose, identity, quality.",
    no_args_is_help=True,
)
app.add_typer(curate_app, name="curate")

def _version(value: bool) -> None:
    if value:
        typer.echo(f"facesmith {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@curate_app.command("scan")
def scan(
    source: Annotated[Path, typer.Argument(help="Folder of images, scanned recursively.")],
    db: NewDbOption = Path("faceset.duckdb"),
    backend: BackendOption = "embedded",
    models: ModelsOption = None,
    pack: PackOption = "buffalo_l",
    device: DeviceOption = "auto",
    face_type: FaceTypeOption = "whole_face",
    resolution: ResolutionOption = 256,
    aligned: AlignedOption = None,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch and per transaction.")] = 16,
    workers: Annotated[int, typer.Option(help="Decoding threads.")] = 2,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Analyse every image under SOURCE into the faceset: only new or changed files are read."""
    from curate.scan import ScanSettings, scan_folder

    console = stdout_console()
    try:
        settings = ScanSettings(
            face_type=face_type, resolution=resolution, backend=backend,
            models_dir=str(models) if models else None, pack=pack, device=device,
            batch_size=batch_size, workers=workers,
        )
        with progress("scanning", wants_progress(output)) as on_progress:
            summary = scan_folder(source, db, settings, aligned_dir=aligned, on_progress=on_progress)
    except (FacesmithError, OSError) as error:  # OSError: e.g. --db or --aligned under a file
        fail(error)
    if output is OutputFormat.json:
        typer.echo(to_json(summary.to_dict()))
        return
    if output is OutputFormat.csv:
        items = summary.to_dict()
        render_rows(list(items), [list(items.values())], output, console)
        return
    _print_summary(summary, console)


def _print_summary(summary, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"scan {summary.run_id}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images found", str(summary.images_found))
    table.add_row("unchanged (skipped)", str(summary.images_unchanged))
    table.add_row("processed", str(summary.images_processed))
    table.add_row("  ok", str(summary.images_ok))
    table.add_row("  rejected", str(summary.images_rejected))
    for reason, count in summary.rejected_by_reason.items():
        table.add_row(f"    {reason}", str(count))
    if summary.images_removed:
        table.add_row("removed (gone from the folder)", str(summary.images_removed))
    table.add_row("faces found", str(summary.faces))
    table.add_row("time", f"{summary.seconds:.1f} s ({summary.images_per_second:.1f} images/s)")
    table.add_row("backend", summary.backend)
    table.add_row("device / providers", f"{summary.device} / {', '.join(summary.providers) or '-'}")
    table.add_row("database", Text(summary.database))
    console.print(table)


@app.command("sql")
def sql(
    query: Annotated[str, typer.Argument(help="SQL to run (SELECT, DESCRIBE, SHOW, EXPLAIN, PRAGMA).")],
    db: ExistingDbOption = Path("faceset.duckdb"),
    output: FormatOption = OutputFormat.table,
) -> None:
    """Query a faceset read-only: statements that would change it are refused."""
    from curate.store import query_read_only

    try:
        result = query_read_only(db, query)
    except FacesmithError as error:
        fail(error)
    render_rows(result.columns, result.rows, output, stdout_console())


def _register_commands() -> None:
    from facesmith import cmd_dfl, cmd_report, cmd_select

    for module in (cmd_report, cmd_select, cmd_dfl):
        module.register(curate_app)


_register_commands()

if __name__ == "__main__":
    app()
