"""The `curate import-dfl` and `curate export-dfl` commands: DeepFaceLab aligned folders in and out."""

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

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
    RuntimeOption,
    fail,
    progress,
    wants_progress,
)
from facesmith.render import (
    OutputFormat,
    printable,
    render_rows,
    render_summary,
    stdout_console,
    to_json,
)


def register(curate_app: typer.Typer) -> None:
    """Add the DFL commands to the `curate` sub-app."""

    @curate_app.command("import-dfl")
    def import_dfl(
        folder: Annotated[Path, typer.Argument(help="DeepFaceLab aligned folder (JPEGs with DFL metadata).")],
        db: NewDbOption = Path("faceset.duckdb"),
        face_type: FaceTypeOption = "whole_face",
        resolution: ResolutionOption = 256,
        backend: BackendOption = "embedded",
        models: ModelsOption = None,
        pack: PackOption = "buffalo_l",
        device: DeviceOption = "auto",
        runtime: RuntimeOption = "auto",
        aligned: AlignedOption = None,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Import a DFL aligned folder: scan its faces and store each file's DFL metadata.

        The metadata is read with a restricted unpickler: a file whose metadata would run code,
        or is malformed, is recorded as rejected with the reason, and the rest still imports.
        """
        from curate.interop.dfl import import_dfl_folder
        from curate.errors import FacesmithError
        from curate.scan.pipeline import ScanSettings

        try:
            settings = ScanSettings(
                face_type=face_type, resolution=resolution, backend=backend,
                models_dir=str(models) if models else None, pack=pack, device=device, runtime=runtime,
            )
            with progress("importing", wants_progress(output)) as on_progress:
                summary = import_dfl_folder(folder, db, settings, aligned_dir=aligned, on_progress=on_progress)
        except (FacesmithError, OSError) as error:  # OSError: e.g. --db under a file
            fail(error)
        rows = [
            ("files", str(summary.files)),
            ("with DFL metadata", str(summary.with_metadata)),
            ("without metadata", str(summary.without_metadata)),
            ("rejected", str(summary.rejected)),
            *((f"  {reason}", str(count)) for reason, count in summary.reasons.items()),
            ("faces found", str(summary.faces)),
            ("database", summary.database),
        ]
        render_summary(summary.to_dict(), output, "DFL import", rows)

    @curate_app.command("export-dfl")
    def export_dfl(
        out: Annotated[Path, typer.Option("--out", help="Folder for the DFL aligned JPEGs (must hold no JPEGs yet).")],
        db: ExistingDbOption = Path("faceset.duckdb"),
        all_faces: Annotated[bool, typer.Option("--all", help="Export every face, not only the selection's.")] = False,
        quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality of the written faces.")] = 90,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Write faces as DFL aligned JPEGs (00000.jpg, …) that DeepFaceLab can train on.

        By default the faces chosen by `curate select` when a selection exists, else every face.
        """
        from curate.interop.dfl import export_dfl as export
        from curate.errors import FacesmithError

        try:
            with progress("exporting", wants_progress(output)) as on_progress:
                written = export(db, out, quality=quality, all_faces=all_faces, on_progress=on_progress)
        except (FacesmithError, OSError) as error:
            fail(error)
        console = stdout_console()
        if output is OutputFormat.json:
            typer.echo(to_json({"out_dir": str(out), "faces": len(written), "files": [str(p) for p in written]}))
            return
        if output is OutputFormat.csv:
            render_rows(["file"], [[str(path)] for path in written], output, console)
            return
        console.print(Text(printable(f"exported {len(written)} faces to {out}")))


