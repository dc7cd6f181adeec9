"""The `curate analyze` and `curate report` commands: duplicates and identities in, reports out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from curate.errors import FacesmithError
from curate.faceset import FacesetReader
from facesmith.console import (
    ExistingDbOption,
    FormatOption,
    RoleOption,
    fail,
)
from facesmith.render import OutputFormat, printable, render_rows, stdout_console, to_json


def register(curate_app: typer.Typer) -> None:
    @curate_app.command("analyze")
    def analyze(
        db: ExistingDbOption = Path("faceset.duckdb"),
        identity: Annotated[Optional[Path], typer.Option(
            "--identity", help="A photo of the main person: an image of the faceset, or any photo "
                               "elsewhere (it is only looked at, never added); default: the largest cluster.")] = None,
        role: RoleOption = None,
        min_cosine: Annotated[Optional[float], typer.Option(
            help="Near duplicates: least embedding cosine to count as the same picture "
                 "(default: the library's).")] = None,
        max_phash_bits: Annotated[Optional[int], typer.Option(
            help="Near duplicates: most differing perceptual-hash bits of 64 (default: the library's).")] = None,
        max_pose_delta: Annotated[Optional[float], typer.Option(
            help="Near duplicates: most degrees of yaw or pitch between the same picture; a face "
                 "turned further is a new pose (default: the library's).")] = None,
        max_expression_delta: Annotated[Optional[float], typer.Option(
            help="Near duplicates: most change of eyes, mouth and brows, in tolerances "
                 "(default: the library's).")] = None,
        max_light_delta: Annotated[Optional[float], typer.Option(
            help="Near duplicates: most change of the lighting direction (left/right, top/bottom "
                 "asymmetry) (default: the library's).")] = None,
        identity_distance: Annotated[Optional[float], typer.Option(
            help="Identities: cosine distance that separates people (default: per backend).")] = None,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Find exact and near duplicates and the main identity; store why for every face.

        Near duplicates are the same picture: a face is only dropped against the face kept in its
        place, and only when it matches it in identity, perceptual hash, pose, expression and light.
        """
        from curate.analysis.duplicates import DuplicateSettings, analyze_duplicates
        from curate.analysis.identities import IdentitySettings, analyze_identities
        from curate.store import set_role

        try:
            overrides = {key: value for key, value in (
                ("min_cosine", min_cosine), ("max_phash_distance", max_phash_bits),
                ("max_pose_delta", max_pose_delta), ("max_expression_delta", max_expression_delta),
                ("max_light_delta", max_light_delta)) if value is not None}
            duplicate_settings = DuplicateSettings(**overrides)
            identity_settings = IdentitySettings(distance_threshold=identity_distance)
            if role is not None:
                set_role(db, role.value)
            duplicates = analyze_duplicates(db, duplicate_settings)
            identities = analyze_identities(db, identity_settings, pin_image=identity)
            with FacesetReader(db) as reader:
                faceset_role = reader.role
        except FacesmithError as error:
            fail(error)
        result = {"role": faceset_role, "duplicates": duplicates.to_dict(), "identities": identities.to_dict()}
        if output is OutputFormat.json:
            typer.echo(to_json(result))
            return
        dropping = "faces to drop" if faceset_role == "src" else "duplicate faces (dst: reported, never dropped)"
        rows = [
            ("role", faceset_role),
            ("duplicate groups", duplicates.groups), (dropping, duplicates.faces_to_drop),
            *((f"  {kind}", count) for kind, count in duplicates.by_kind.items()),
            ("largest group", duplicates.largest_group),
            ("identity clusters (people)", identities.clusters),
            *((f"  {label}", count) for label, count in identities.labels.items()),
            ("unreliable faces (not clustered)", identities.unreliable),
            ("pinned by", identities.pinned or "largest cluster"),
        ]
        render_rows(["analysis", "result"], rows, output, stdout_console(), title=f"analysis of {db}")

    @curate_app.command("report")
    def report(
        db: ExistingDbOption = Path("faceset.duckdb"),
        html: Annotated[Optional[Path], typer.Option(
            "--html", help="Also write one self-contained HTML page with plots and contact sheets.")] = None,
        yaw_bin: Annotated[int, typer.Option(help="Coverage grid: yaw bin width in degrees.")] = 15,
        pitch_bin: Annotated[int, typer.Option(help="Coverage grid: pitch bin width in degrees.")] = 15,
        model_dir: Annotated[Optional[Path], typer.Option(
            "--model-dir", show_default=False,
            help="A model folder trained on this faceset: also list the faces it learns worst (highest "
                 "running training loss), with their quality verdicts.")] = None,
        hardest: Annotated[int, typer.Option(
            "--hardest", min=1, help="With --model-dir: how many of the hardest faces to list.")] = 10,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Counts, rejects, quality, duplicates, identities, pose/lighting coverage and advice."""
        from curate.analysis.coverage import CoverageSettings
        from curate.reports.report import build_report

        try:
            built = build_report(db, CoverageSettings(yaw_bin=yaw_bin, pitch_bin=pitch_bin), model_dir, hardest)
            if html is not None:
                from curate.reports.html import write_html_report

                write_html_report(built, html)
        except FacesmithError as error:
            fail(error)
        if output is OutputFormat.json:
            typer.echo(to_json(built.to_dict()))
            return
        if output is OutputFormat.csv:
            render_rows(["what", "number"], list(built.counts.items()), output, stdout_console())
            return
        from facesmith.report_terminal import render_report

        console = stdout_console()
        render_report(built, console)
        if html is not None:
            console.print(Text(printable(f"HTML report: {html}")))
