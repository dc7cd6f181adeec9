"""What every command shares: the --format option, one-line errors, warnings and progress bars."""

from __future__ import annotations

import enum
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.text import Text

from curate.errors import Interrupted
from curate.progress import ProgressCallback
from train.backend import quiet_framework_startup  # noqa: F401  (the CLI's name for it)
from facesmith.render import OutputFormat, printable

FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output as a table, JSON or CSV.")
]


def fail(error: Exception) -> None:
    """Print `error: …` as one line on stderr and exit 1 (130 for a run the user interrupted).

    The message is data, not markup (paths and SQL hold brackets), and is never re-wrapped, so a
    path or file name in it stays whole on its line.
    """
    if isinstance(error, Interrupted):
        Console(stderr=True, soft_wrap=True).print(Text(printable(error)), highlight=False)
        raise typer.Exit(130)
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error:", "red"), " ", printable(error)), highlight=False)
    raise typer.Exit(1)


def warn(warnings: list[str], output: OutputFormat) -> None:
    """Warnings on stderr beside a table; JSON and CSV carry them in their document instead."""
    if output is OutputFormat.table:
        for warning in warnings:
            Console(stderr=True, soft_wrap=True).print(Text(f"warning: {printable(warning)}"), highlight=False)


def wants_progress(output: OutputFormat) -> bool:
    """Bars only for people: table output on a terminal."""
    return output is OutputFormat.table and sys.stderr.isatty()


@contextmanager
def progress(label: str, enabled: bool) -> Iterator[Optional[ProgressCallback]]:
    """A (done, total) callback drawing a bar on stderr; None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


# Options that several commands take, declared once.
ExistingDbOption = Annotated[Path, typer.Option("--db", help="Faceset database file.")]


class RoleName(str, enum.Enum):
    src = "src"
    dst = "dst"


RoleOption = Annotated[Optional[RoleName], typer.Option(
    help="src: the face to learn (analysis thins it to a training set); dst: the frames to merge into "
         "(never thinned: training takes every dst face). Stored with the faceset; a faceset never given "
         "one is a src.", show_default=False)]
NewDbOption = Annotated[Path, typer.Option("--db", help="Faceset database file (created if missing).")]
BackendOption = Annotated[str, typer.Option(help="Face models: 'embedded' (offline default) or 'insightface'.")]
ModelsOption = Annotated[Optional[Path], typer.Option(
    "--models", help="insightface model folder holding PACK/ (default ~/.insightface/models).")]
PackOption = Annotated[str, typer.Option(help="insightface model pack name.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda (onnxruntime execution provider).")]
RuntimeOption = Annotated[str, typer.Option(
    help="Where the embedder runs: auto (the GPU through onnxruntime, else OpenVINO on the CPU when "
         "installed, else onnxruntime), onnxruntime or openvino.")]
FaceTypeOption = Annotated[str, typer.Option(help="Aligned crop type: half, mid_full, full, whole_face, head.")]
ResolutionOption = Annotated[int, typer.Option(help="Aligned crop size in pixels.")]
AlignedOption = Annotated[Optional[Path], typer.Option(
    help="Folder for aligned crops (default: <db name>_aligned next to the database).")]
