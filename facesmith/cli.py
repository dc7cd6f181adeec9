"""The facesmith command line: a thin Typer layer over the curate, train and merge libraries."""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

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
    RoleOption,
    RuntimeOption,
    fail,
    progress,
    wants_progress,
)
from facesmith.render import OutputFormat, printable, render_rows, render_summary, stdout_console

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


class ScanEngineName(str, enum.Enum):
    local = "local"
    ray = "ray"


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
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, _PrintableLog) for existing in handler.filters):
            handler.addFilter(_PrintableLog())


class _PrintableLog(logging.Filter):
    """Log messages name files: their control characters are shown escaped, never sent raw."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = printable(record.getMessage()), None
        return True


@curate_app.command("scan")
def scan(
    source: Annotated[Path, typer.Argument(help="Folder of images, scanned recursively.")],
    db: NewDbOption = Path("faceset.duckdb"),
    backend: BackendOption = "embedded",
    models: ModelsOption = None,
    pack: PackOption = "buffalo_l",
    device: DeviceOption = "auto",
    runtime: RuntimeOption = "auto",
    face_type: FaceTypeOption = "whole_face",
    resolution: ResolutionOption = 256,
    aligned: AlignedOption = None,
    batch_size: Annotated[int, typer.Option(help="Images per inference batch and per transaction.")] = 16,
    workers: Annotated[int, typer.Option(help="Decoding threads (local engine).")] = 2,
    max_file_mb: Annotated[int, typer.Option(
        "--max-file-mb", min=1, help="Files larger than this many MiB are rejected 'too-large' without being read.",
    )] = 1024,
    engine: Annotated[ScanEngineName, typer.Option(
        help="local: threads on this machine. ray: Ray Data workers and an actor pool (one actor per "
             "GPU), for hundreds of thousands of frames or several machines; needs the 'ray' extra.",
    )] = ScanEngineName.local,
    address: Annotated[Optional[str], typer.Option(
        help="Ray cluster to join, e.g. auto (the cluster this machine belongs to) or ray://HOST:10001; "
             "default: a private local instance for this scan.", show_default=False,
    )] = None,
    ray_cpus: Annotated[Optional[int], typer.Option(
        help="CPUs of the private local Ray instance (default: every core).", min=1, show_default=False,
    )] = None,
    ray_actors: Annotated[Optional[int], typer.Option(
        help="Face-analysis actors (default: one per GPU, or one per CPU without GPUs); more actors "
             "than GPUs share them.", min=1, show_default=False,
    )] = None,
    keep_shards: Annotated[bool, typer.Option(
        "--keep-shards", help="Keep the Parquet shards the Ray engine loads (in <db>_shards/<run>/); by default each "
             "is deleted once it is in the faceset.",
    )] = False,
    role: RoleOption = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Analyse every image under SOURCE into the faceset: only new or changed files are read."""
    from curate.scan.pipeline import ScanSettings, scan_folder

    try:
        settings = ScanSettings(
            face_type=face_type, resolution=resolution, backend=backend,
            models_dir=str(models) if models else None, pack=pack, device=device, runtime=runtime,
            batch_size=batch_size, workers=workers, max_bytes=max_file_mb * 2**20,
        )
        scan_engine = None
        if engine is ScanEngineName.ray:
            scan_engine = ray_engine(address, ray_cpus, ray_actors, keep_shards)
        with progress("scanning", wants_progress(output)) as on_progress:
            summary = scan_folder(source, db, settings, aligned_dir=aligned, on_progress=on_progress,
                                  engine=scan_engine, role=role.value if role else None)
    except (FacesmithError, OSError) as error:  # OSError: e.g. --db or --aligned under a file
        fail(error)
    rows = [
        ("images found", str(summary.images_found)),
        ("unchanged (skipped)", str(summary.images_unchanged)),
        ("processed", str(summary.images_processed)),
        ("  ok", str(summary.images_ok)),
        ("  rejected", str(summary.images_rejected)),
        *((f"    {reason}", str(count)) for reason, count in summary.rejected_by_reason.items()),
        *([("removed (gone from the folder)", str(summary.images_removed))] if summary.images_removed else []),
        ("faces found", str(summary.faces)),
        ("time", f"{summary.seconds:.1f} s ({summary.images_per_second:.1f} images/s)"),
        ("backend / engine", f"{summary.backend} / {summary.engine}"),
        ("device / providers", f"{summary.device} / {', '.join(summary.providers) or '-'}"),
        ("database", summary.database),
    ]
    render_summary(summary.to_dict(), output, f"scan {summary.run_id}", rows)


def ray_engine(address: str | None, cpus: int | None, actors: int | None, keep_shards: bool):
    """The Ray engine, or a clear error naming the extra to install."""
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as error:
        raise FacesmithError(f"--engine ray needs Ray Data ({error.name} is not installed): "
                             "pip install 'facesmith[ray]'") from error
    from curate.scan.ray_engine import RayEngine

    return RayEngine(address=address, num_cpus=cpus, actors=actors, keep_shards=keep_shards)


@app.command("sql")
def sql(
    query: Annotated[str, typer.Argument(help="SQL to run (SELECT, DESCRIBE, SHOW, EXPLAIN, PRAGMA).")],
    db: ExistingDbOption = Path("faceset.duckdb"),
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.001, help="Stop the query after this many seconds.")] = 60.0,
    memory_limit: Annotated[str, typer.Option(
        "--memory-limit", help="Most memory the query may use (DuckDB sizes: 512MB, 2GB); nothing spills to disk.",
    )] = "2GB",
    output: FormatOption = OutputFormat.table,
) -> None:
    """Query a faceset read-only: statements that would change it are refused; time and memory are bounded."""
    from curate.store import query_read_only

    try:
        result = query_read_only(db, query, timeout_s=timeout, memory_limit=memory_limit)
    except FacesmithError as error:
        fail(error)
    render_rows(result.columns, result.rows, output, stdout_console())


def _register_commands() -> None:
    from facesmith import cmd_dfl, cmd_merge, cmd_report, cmd_review, cmd_select, cmd_train

    for module in (cmd_report, cmd_select, cmd_dfl, cmd_review):
        module.register(curate_app)
    cmd_train.register(app)
    cmd_merge.register(app)


_register_commands()

if __name__ == "__main__":
    app()
