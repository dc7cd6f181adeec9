"""`curate review` (the local web app), `curate decisions` (list, export, apply) and `curate decide`."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from curate.errors import FacesmithError
from facesmith.console import ExistingDbOption, FormatOption, fail
from facesmith.render import OutputFormat, render_rows, render_summary, stdout_console


class DecisionAction(str, enum.Enum):
    exclude = "exclude"
    include = "include"
    reset = "reset"
    keeper = "keeper"
    label = "label"
    tag = "tag"
    untag = "untag"


def register(curate_app: typer.Typer) -> None:
    """Add `review`, `decisions` and `decide` to the `curate` command group."""

    @curate_app.command("review")
    def review(
        db: ExistingDbOption = Path("faceset.duckdb"),
        host: Annotated[str, typer.Option(
            help="Address to listen on. The default answers this machine only; any other address "
                 "(e.g. 0.0.0.0) also requires the random token printed in the URL.")] = "127.0.0.1",
        port: Annotated[Optional[int], typer.Option(
            help="Port to listen on (default: 8765, or any free port when 8765 is taken).",
            min=0, max=65535, show_default=False)] = None,
        no_browser: Annotated[bool, typer.Option(
            "--no-browser", help="Print the address only; do not open a browser.")] = False,
        cache: Annotated[Optional[Path], typer.Option(
            help="Folder for the thumbnails (default: <db name>_review/ next to the database).",
            show_default=False)] = None,
        model_dir: Annotated[Optional[Path], typer.Option(
            "--model-dir", show_default=False,
            help="A model folder trained on this faceset: show each face's running training loss (a column to "
                 "sort and filter by, and the side panel), to find the faces the model cannot learn.")] = None,
    ) -> None:
        """Open a local web app over the faceset: every face in a grid, filters, duplicate groups, an embeddings map, and keyboard decisions recorded in the faceset."""
        from curate.review.server import ReviewAddress, serve

        def ready(address: ReviewAddress) -> None:
            # flush: a script (or a test) reading our stdout learns the address at once
            typer.echo(f"facesmith review of {db} at {address.url}")
            if address.token:
                typer.echo("the token in the address is required: keep it to people you trust")
            typer.echo("press Ctrl+C to stop", err=True)
            if not no_browser:
                import webbrowser

                webbrowser.open(address.url)

        try:
            if model_dir is not None:
                from curate.training_loss import history_path

                if not history_path(model_dir).is_file():
                    raise FacesmithError(f"{model_dir} is not a model folder (no {history_path(model_dir).name}): "
                                         "give the folder 'facesmith train run --model-dir' trained")
            serve(db, host=host, port=port, cache_dir=cache, on_ready=ready, model_dir=model_dir)
        except FacesmithError as error:
            fail(error)
        except KeyboardInterrupt:
            pass

    @curate_app.command("decisions")
    def decisions(
        db: ExistingDbOption = Path("faceset.duckdb"),
        export: Annotated[Optional[Path], typer.Option(
            "--export", help="Write every decision to this JSON file (to apply to another faceset).",
            show_default=False)] = None,
        apply: Annotated[Optional[Path], typer.Option(
            "--apply", help="Record the decisions of this exported JSON file in --db, matching faces by "
                            "their image's content hash and face index.", show_default=False)] = None,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """List the decisions made on the faceset's faces (oldest first), or export or apply them."""
        from curate.decisions import apply_decisions, export_decisions, list_decisions
        from curate.faceset import DECISION_COLUMNS

        if export is not None and apply is not None:
            fail(FacesmithError("give --export or --apply, not both"))
        try:
            if export is not None:
                count = export_decisions(db, export)
                render_summary({"exported": count, "file": str(export)}, output, "decisions exported",
                               [("decisions", str(count)), ("file", str(export))])
                return
            if apply is not None:
                summary = apply_decisions(apply, db)
                render_summary(summary.to_dict(), output, f"decisions applied to {db.name}", [
                    ("in the file", str(summary.read)), ("recorded", str(summary.applied)),
                    ("no matching face", str(summary.unmatched))])
                return
            rows = list_decisions(db)
        except (FacesmithError, OSError) as error:
            fail(error)
        render_rows(list(DECISION_COLUMNS), [row.to_row() for row in rows], output, stdout_console(),
                    title=f"decisions in {db.name}")

    @curate_app.command("decide")
    def decide(
        face_ids: Annotated[list[str], typer.Argument(help="Face ids to decide on (see 'facesmith sql').")],
        action: Annotated[DecisionAction, typer.Option(help="What to decide.")],
        db: ExistingDbOption = Path("faceset.duckdb"),
        value: Annotated[Optional[str], typer.Option(
            help="label: main or other-person (none: back to automatic); tag/untag: the tag's text.",
            show_default=False)] = None,
        why: Annotated[Optional[str], typer.Option(help="The reason, kept with the decision.",
                                                   show_default=False)] = None,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Record a decision on faces, as the review app does: exclude, include, keeper, label, tag, reset."""
        from curate.decisions import Decision, record_decisions
        from curate.faceset import DECISION_COLUMNS

        try:
            rows = record_decisions(db, [Decision(face_id, action.value, value, why) for face_id in face_ids])
        except FacesmithError as error:
            fail(error)
        render_rows(list(DECISION_COLUMNS), [row.to_row() for row in rows], output, stdout_console(),
                    title=f"recorded in {db.name}")
