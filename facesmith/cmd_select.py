"""`curate extract` (video frames) and `curate select` (the training subset): thin CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from curate.errors import FacesmithError
from curate.faceset import QUALITY_GATES
from facesmith.console import (
    ExistingDbOption,
    FormatOption,
    fail,
    progress,
    wants_progress,
    warn,
)
from facesmith.render import OutputFormat, render_summary


def register(curate_app: typer.Typer) -> None:
    """Add `extract` and `select` to the `curate` command group."""

    @curate_app.command("extract")
    def extract(
        video: Annotated[Path, typer.Argument(help="Video file to take frames from (any format OpenCV's FFmpeg reads).")],
        fps: Annotated[float, typer.Option("--fps", help="Frames to keep per second of video, chosen by timestamp.")] = 5.0,
        out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the frames (default: <video name>_frames next to the video).")] = None,
        start: Annotated[Optional[float], typer.Option(help="Start time in seconds.")] = None,
        end: Annotated[Optional[float], typer.Option(help="End time in seconds (exclusive).")] = None,
        max_frames: Annotated[Optional[int], typer.Option(help="Stop after this many frames.")] = None,
        jpeg_quality: Annotated[Optional[int], typer.Option(help="Write JPEG at this quality (1-100) instead of lossless PNG.")] = None,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Write frames of VIDEO at a given rate as <name>_<frame>.png for 'curate scan'; re-runs skip frames already written."""
        from curate.scan.video import extract_frames

        folder = out if out is not None else video.parent / f"{video.stem}_frames"
        try:
            with progress("extracting", wants_progress(output)) as on_progress:
                summary = extract_frames(video, folder, fps, start=start, end=end, max_frames=max_frames,
                                         on_progress=on_progress, jpeg_quality=jpeg_quality)
        except (FacesmithError, OSError) as error:
            fail(error)
        warn(summary.warnings, output)
        source = f"{summary.source_fps:g} fps, {summary.source_frames} frames" if summary.source_fps else "rate unknown"
        times = ("-" if summary.first_time is None
                 else f"{summary.first_time:.2f} s to {summary.last_time:.2f} s")
        render_summary(summary.to_dict(), output, f"extract {video.name}", [
            ("video", summary.video),
            ("source", source),
            ("frames decoded", str(summary.frames_decoded)),
            ("frames kept", f"{summary.frames_sampled} at {summary.fps:g} fps ({times})"),
            ("  written", str(summary.frames_written)),
            ("  already there", str(summary.frames_existing)),
            ("format", summary.image_format),
            ("folder", summary.out_dir),
            ("time", f"{summary.seconds:.1f} s"),
        ])

    @curate_app.command("select")
    def select(
        out: Annotated[Path, typer.Option("--out", help="Folder for the selected aligned faces and manifest.json (new, empty or an earlier selection's).")],
        db: ExistingDbOption = Path("faceset.duckdb"),
        budget: Annotated[Optional[int], typer.Option(help="Number of faces to select (default: every eligible face, in pick order).")] = None,
        yaw_bin: Annotated[int, typer.Option(help="Yaw bin width in degrees.")] = 15,
        pitch_bin: Annotated[int, typer.Option(help="Pitch bin width in degrees.")] = 15,
        no_lighting: Annotated[bool, typer.Option("--no-lighting", help="Cover pose only: leave the lighting direction (left, right, top, bottom, even) out of the cells.")] = False,
        light_threshold: Annotated[float, typer.Option(help="Half-face brightness asymmetry below which a face counts as evenly lit (0-1).")] = 0.10,
        no_expression: Annotated[bool, typer.Option("--no-expression", help="Cover pose and light only: leave the expression (neutral, mouth open, smile, eyes closed) out of the cells.")] = False,
        exclude_bad: Annotated[str, typer.Option(help="Comma-separated quality measures whose 'bad' verdict keeps a face out ('none' for no quality exclusions).")] = ",".join(QUALITY_GATES),
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Choose the faces that best cover pose, expression and lighting, then the sharpest; copy them to OUT and record why every other face was left out. Warns when the budget cannot be filled, and says what kept the other faces out."""
        from curate.analysis.selection import SelectionSettings, select_and_export

        measures = tuple(part.strip() for part in exclude_bad.split(",") if part.strip())
        if measures == ("none",):
            measures = ()
        try:
            settings = SelectionSettings(budget=budget, yaw_bin=yaw_bin, pitch_bin=pitch_bin, lighting=not no_lighting,
                                         light_threshold=light_threshold, exclude_bad=measures,
                                         expression=not no_expression)
            with progress("copying", wants_progress(output)) as on_progress:
                summary = select_and_export(db, out, settings, on_progress=on_progress)
        except (FacesmithError, OSError) as error:
            fail(error)
        warn(summary.warnings, output)
        rows = [
            ("faces", str(summary.faces)),
            ("eligible", str(summary.eligible)),
            ("selected", f"{summary.selected}" + (f" of a budget of {summary.budget}" if summary.budget else "")),
            ("cells covered", f"{summary.cells_selected} of {summary.cells_eligible} occupied"),
        ]
        rows += [(f"  left out: {reason}", str(count)) for reason, count in summary.excluded.items()]
        rows += [("files written", str(summary.files_written)),
                 ("earlier files removed", str(summary.files_removed)),
                 ("manifest", summary.manifest), ("time", f"{summary.seconds:.1f} s")]
        render_summary(summary.to_dict(), output, f"selection from {db.name}", rows)
