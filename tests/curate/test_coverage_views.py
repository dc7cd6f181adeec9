"""The SQL views `coverage` and `lighting` agree with curate.analysis.coverage's default bins."""

from __future__ import annotations

import shutil

from curate.analysis.coverage import coverage_grid_sql, lighting_sql
from curate.scan.pipeline import ScanSettings, scan_folder
from curate.store import query_read_only


def test_views_match_the_coverage_module(tmp_path, analyzer, obama_paths, t1_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in [*obama_paths, t1_path]:
        shutil.copy(path, folder / path.name)
    database = tmp_path / "faceset.duckdb"
    scan_folder(folder, database, ScanSettings(resolution=64), analyzer=analyzer)
    view = query_read_only(database, "SELECT * FROM coverage").rows
    assert view and view == query_read_only(database, coverage_grid_sql()).rows
    lighting = query_read_only(database, "SELECT * FROM lighting").rows
    assert lighting == query_read_only(database, lighting_sql()).rows
    assert sum(faces for _, faces in lighting) == 9
