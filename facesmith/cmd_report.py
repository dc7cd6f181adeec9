"""The `curate analyze` and `curate report` commands: duplicates and identities in, reports out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from curate.errors import FacesmithError
from facesmith.console import (
    ExistingDbOption,
    FormatOption,
    fail,
)
from facesmith.render import OutputFormat, printable, render_rows, stdout_console, to_json


def register(curate_app: typer.Typer) -> None:
    @curate_app.command("analyze")
    def analyze(
        db: ExistingDbOption = Path("faceset.duckdb"),
        identity: Annotated[Optional[Path], typer.Option(
            "--identity", help="An image (under the scanned folder) whose face is the main identity; "
                               "default: the largest cluster.")] = None,
        min_cosine: Annotated[Optional[float], typer.Option(
            help="Near duplicates: least embedding cosine to count as the same shot "
                 "(default: the library's).")] = None,
        max_phash_bits: Annotated[Optional[int], typer.Option(
            help="Near duplicates: most differing perceptual-hash bits of 64 (default: the library's).")] = None,
        identity_distance: Annotated[Optional[float], typer.Option(
            help="Identities: cosine distance that separates people (default: per backend).")] = None,
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Find exact and near duplicates and the main identity; store why for every face."""
        from curate.analysis.duplicates import DuplicateSettings, analyze_duplicates
        from curate.analysis.identities import IdentitySettings, analyze_identities

        try:
            overrides = {key: value for key, value in
                         (("min_cosine", min_cosine), ("max_phash_distance", max_phash_bits)) if value is not None}
            duplicates = analyze_duplicates(db, DuplicateSettings(**overrides))
            identities = analyze_identities(db, IdentitySettings(distance_threshold=identity_distance),
                                            pin_image=identity)
        except FacesmithError as error:
            fail(error)
        result = {"duplicates": duplicates.to_dict(), "identities": identities.to_dict()}
        if output is OutputFormat.json:
            typer.echo(to_json(result))
            return
        rows = [
            ("duplicate groups", duplicates.groups), ("faces to drop", duplicates.faces_to_drop),
            *((f"  {kind}", count) for kind, count in duplicates.by_kind.items()),
            ("identity clusters", identities.clusters),
            *((f"  {label}", count) for label, count in identities.labels.items()),
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
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Counts, rejects, quality, duplicates, identities, pose/lighting coverage and advice."""
        from curate.analysis.coverage import CoverageSettings
        from curate.reports.report import build_report

        try:
            built = build_report(db, CoverageSettings(yaw_bin=yaw_bin, pitch_bin=pitch_bin))
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
