"""`facesmith merge run|check|report|options` and `facesmith verify`: thin commands over the merge library."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from curate.errors import FacesmithError, Interrupted
from facesmith.console import FormatOption, fail, progress, wants_progress, warn
from facesmith.option_flags import given, render_option_table, with_option_flags
from facesmith.render import OutputFormat, printable, render_rows, render_summary, stdout_console
from merge.quality import check_option_specs
from merge.settings import load_toml, option_specs

merge_app = typer.Typer(
    help="Put a trained model's face into frames or a video (labelled as synthetic), and run merge "
         "checks that score held-out frames and flag overtraining.",
    no_args_is_help=True,
)

ModelDirOption = Annotated[Path, typer.Option("--model-dir", help="Model folder written by 'facesmith train run'.")]


def _number(value: Any, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def register(app: typer.Typer) -> None:
    """Add the `merge` command group and `verify` to the root app."""
    app.add_typer(merge_app, name="merge")

    @merge_app.command("run")
    @with_option_flags(option_specs(), "Merge options")
    def run(
        model_dir: ModelDirOption,
        frames: Annotated[Path, typer.Option("--frames", help="A folder of frames (sorted by name) or a video file.")],
        out: Annotated[Path, typer.Option("--out", help="Folder for the merged frames (created; re-runs resume).")],
        video: Annotated[Optional[Path], typer.Option("--video", help="Also encode the merged frames into this "
                                                      "video (H.264, labelled in its metadata).")] = None,
        config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of merge options (top-level "
                                                       "keys or a 'merge' table); flags override it.")] = None,
        step: Annotated[Optional[int], typer.Option("--step", help="Use the checkpoint of this iteration "
                                                    "(default: the newest).")] = None,
        frame_range: Annotated[Optional[str], typer.Option(
            "--range", help="Merge only frames START:END of the source (0-based, END excluded, as a Python "
                            "slice: 100:400, 100: or :400).")] = None,
        fps: Annotated[Optional[float], typer.Option(
            "--fps", help="Frame rate of --video (default: the source video's; 25 for a folder of frames).")] = None,
        output: FormatOption = OutputFormat.table,
        **options: Any,
    ) -> None:
        """Merge every face of every frame with the model; frames and video carry the synthetic label.

        A video keeps the source video's frame rate and audio (cut to --range)."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from merge.runner import FrameRange, merge_frames, parse_frame_range
        from merge.settings import resolve_settings

        try:
            values = load_toml(config) if config is not None else {}
            values.update(given(options))
            settings = resolve_settings(values)
            chosen = parse_frame_range(frame_range) if frame_range is not None else FrameRange()
            with progress("merging", wants_progress(output)) as on_progress:
                summary = merge_frames(model_dir, frames, out, settings, video=video, step=step,
                                       on_progress=on_progress, frame_range=chosen, fps=fps)
        except KeyboardInterrupt:
            saved = sum(1 for path in out.glob("*") if path.suffix.lower() in (".png", ".jpg"))
            fail(Interrupted(f"merge interrupted: {saved} merged frames are in {out}; run the same command "
                             "again to continue (frames already written are skipped)"))
        except (FacesmithError, OSError) as error:
            fail(error)
        warn(summary.warnings, output)
        render_summary(summary.to_dict(), output, f"merge {frames.name}", [
            ("frames", f"{summary.frames} ({summary.merged} merged, {summary.skipped} already done, "
                       f"{summary.without_face} without a face)"),
            ("faces", str(summary.faces)),
            ("model iteration", str(summary.model_iteration)),
            ("time", f"{summary.seconds:.1f} s ({summary.frames_per_second:.2f} frames/s)"),
            ("frames written to", summary.out_dir),
            ("video", "-" if not summary.video else
             f"{summary.video} ({summary.fps:g} fps, {'with' if summary.audio else 'no'} audio)"),
        ])

    @merge_app.command("preview")
    @with_option_flags(option_specs(), "Merge options")
    def preview(
        model_dir: ModelDirOption,
        frames: Annotated[Path, typer.Option("--frames", help="A folder of frames (sorted by name) or a video file.")],
        out: Annotated[Path, typer.Option("--out", help="The merged frame to write (.png or .jpg).")],
        frame: Annotated[int, typer.Option("--frame", min=0, help="Which frame of the source (0-based, in "
                                           "source order).")] = 0,
        config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of merge options (top-level "
                                                       "keys or a 'merge' table); flags override it.")] = None,
        step: Annotated[Optional[int], typer.Option("--step", help="Use the checkpoint of this iteration "
                                                    "(default: the newest).")] = None,
        output: FormatOption = OutputFormat.table,
        **options: Any,
    ) -> None:
        """Merge one frame with the current settings and write it: try settings before a whole run."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from merge.runner import merge_preview
        from merge.settings import resolve_settings

        try:
            values = load_toml(config) if config is not None else {}
            values.update(given(options))
            result = merge_preview(model_dir, frames, out, resolve_settings(values), frame=frame, step=step)
        except (FacesmithError, OSError) as error:
            fail(error)
        warn(result.warnings, output)
        render_summary(result.to_dict(), output, f"merge preview of {result.frame}", [
            ("frame", f"{result.frame} (number {result.frame_index})"),
            ("faces", str(result.faces)),
            ("model iteration", str(result.model_iteration)),
            ("written to", result.out),
        ])

    @merge_app.command("check")
    @with_option_flags(check_option_specs(), "Merge-check options (kept by the model)")
    def check(model_dir: ModelDirOption, output: FormatOption = OutputFormat.table, **options: Any) -> None:
        """Merge the model's held-out dst frames now and score them (stored in merge_checks)."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from merge.checks import check_model
        from merge.quality import resolve_check_settings

        try:
            resolve_check_settings(given(options))  # refused before TensorFlow loads
            result = check_model(model_dir, options=given(options))
        except (FacesmithError, OSError) as error:
            fail(error)
        render_summary(result.to_dict(), output, f"merge check at {result.iteration}", [
            ("merge quality", f"{_number(result.quality_score, 3)} ({_number(result.change_since_best, 3)} vs the best "
                              f"check) from identity {_number(result.identity_component, 2)}, expression "
                              f"{_number(result.expression_component, 2)}, sharpness "
                              f"{_number(result.sharpness_component, 2)}, artefacts "
                              f"{_number(result.artefact_component, 2)}, held-out loss "
                              f"{_number(result.loss_component, 2)}"),
            ("decided by", result.rule),
            ("held-out src loss", f"{_number(result.validation_src_loss)} (training faces "
                                  f"{_number(result.train_src_loss)}, gap {_number(result.generalisation_gap)})"),
            ("identity similarity", f"{_number(result.identity_similarity, 3)} (dst before merging "
                                    f"{_number(result.dst_identity_similarity, 3)})"),
            ("expression error", _number(result.expression_error, 3)),
            ("sharpness vs src", _number(result.sharpness_ratio, 2)),
            ("artefacts", _number(result.artefact_score, 3)),
            ("frames", str(result.frames)),
            ("verdict", result.detail),
            ("contact sheet", str(model_dir / result.contact_sheet) if result.contact_sheet else "-"),
        ])

    @merge_app.command("report")
    def report(
        model_dir: ModelDirOption,
        html: Annotated[Optional[Path], typer.Option(
            "--html", help="Also write one self-contained HTML page: loss and held-out charts, every merge "
                           "check, the newest contact sheets, the faces it learns worst and events.")] = None,
        hardest: Annotated[int, typer.Option(
            "--hardest", min=1, help="How many of the faces the model learns worst (highest running training "
                                     "loss) to list per side, with their quality verdicts.")] = 10,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Training so far: status, overtraining warning and best iteration, every merge check, and the faces the model learns worst."""
        from facesmith.report_terminal import render_hardest
        from merge.report import training_report, write_training_html

        try:
            built = training_report(model_dir, hardest)
            if html is not None:
                write_training_html(built, html)
        except (FacesmithError, OSError) as error:
            fail(error)
        if output is OutputFormat.json:
            render_summary({**built.to_dict(), "html": None if html is None else str(html)}, output, "", [])
            return
        if output is OutputFormat.csv:
            # machine output: the stored merge_checks columns under their own names
            columns = list(built.checks[0]) if built.checks else ["iteration"]
            render_rows(columns, [[check[c] for c in columns] for check in built.checks], output, stdout_console())
            return
        status, last = built.status, (built.checks[-1] if built.checks else None)
        render_summary(built.to_dict(), output, f"training report {model_dir}", [
            ("phase", status["phase"]),
            ("iteration", str(status["iteration"])),
            ("ms / iteration", _number(status["ms_per_iteration"], 1)),
            ("loss src / dst", f"{_number(status['src_loss'])} / {_number(status['dst_loss'])}"),
            ("best iteration", "-" if built.best_iteration is None else str(built.best_iteration)),
            ("overtraining", built.warning or "none"),
            ("last merge check", "none" if last is None else (
                f"at {last['iteration']}: quality {_number(last.get('quality_score'), 3)} (decided by "
                f"{last.get('rule') or '-'}), held-out src loss {_number(last['validation_src_loss'])} (gap "
                f"{_number(last['generalisation_gap'])}), identity {_number(last['identity_similarity'], 3)}, "
                f"expression error {_number(last['expression_error'], 3)}, sharpness "
                f"{_number(last['sharpness_ratio'], 2)}, artefacts {_number(last['artefact_score'], 3)}")),
            *(("advice", line) for line in built.advice),
        ])
        render_rows(*built.check_table(), output, stdout_console(), title="merge checks")
        for side in ("src", "dst"):
            if side in built.hardest:
                render_hardest(built.hardest[side], stdout_console())
        warn(built.hardest_notes, output)
        if html is not None:
            stdout_console().print(Text(printable(f"HTML report: {html}")))

    @merge_app.command("options")
    def options_list(output: FormatOption = OutputFormat.table) -> None:
        """Every merge option: type, default, allowed values, help."""
        render_option_table(option_specs(), output, "merge options (set in a TOML file or as --flags)")

    @app.command("verify")
    def verify(
        files: Annotated[list[Path], typer.Argument(help="Images or videos to check.")],
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Say whether files carry facesmith's synthetic label (metadata and/or invisible watermark).
        Exits 0 when every file does, 2 when any does not."""
        from merge.provenance import verify_file

        rows = []
        for path in files:
            try:
                result = verify_file(path)
            except FacesmithError as error:
                fail(error)
            rows.append([str(path), result.synthetic, result.summary])
        render_rows(["file", "synthetic", "evidence"], rows, output, stdout_console())
        if not all(row[1] for row in rows):  # a mix must not pass a script's `verify && …` check
            raise typer.Exit(2)
