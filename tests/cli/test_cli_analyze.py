"""`curate analyze` from the command line: JSON for scripts, a table for people, clear errors."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from curate.scan.pipeline import ScanSettings, scan_folder
from facesmith.cli import app


def test_analyze_json_and_table(tmp_path, analyzer, obama_paths, biden_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in [*obama_paths, biden_path]:
        shutil.copy(path, folder / path.name)
    shutil.copy(obama_paths[0], folder / "same_bytes.jpg")
    database = tmp_path / "faceset.duckdb"
    scan_folder(folder, database, ScanSettings(resolution=64), analyzer=analyzer)
    runner = CliRunner()
    result = runner.invoke(app, ["curate", "analyze", "--db", str(database), "--identity", "obama.jpg",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["duplicates"]["by_kind"]["exact-file"] == 1
    assert document["identities"]["labels"]["main"] == 4  # three Obama photos and the copy
    assert document["identities"]["pinned"] == "obama.jpg"
    table = runner.invoke(app, ["curate", "analyze", "--db", str(database)])
    assert table.exit_code == 0 and "duplicate groups" in table.stdout


def test_analyze_without_a_faceset_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["curate", "analyze", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and "curate scan" in result.stderr
    assert "Traceback" not in result.output


def test_a_faceset_without_faces_analyses_reports_and_selects(tmp_path, analyzer):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "readme.txt").write_text("no photos yet")
    database = tmp_path / "faceset.duckdb"
    scan_folder(folder, database, ScanSettings(resolution=64), analyzer=analyzer)
    runner = CliRunner()
    for args in (["analyze"], ["report"], ["select", "--out", str(tmp_path / "selected")]):
        result = runner.invoke(app, ["curate", *args, "--db", str(database), "--format", "json"])
        assert result.exit_code == 0, (args, result.output)
        json.loads(result.stdout)
    report = json.loads(runner.invoke(app, ["curate", "report", "--db", str(database), "--format", "json"]).stdout)
    assert report["counts"]["faces"] == 0 and report["counts"]["images_rejected"] == 1
    assert any("no faces" in line for line in report["advice"])
