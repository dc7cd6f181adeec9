"""`curate import-dfl` and `curate export-dfl` on the command line: help, formats, exit codes, errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from curate.interop.dfl import read_app15, read_dfl_metadata, write_app15
from curate.scan.pipeline import ScanSettings, scan_folder
from curate.store import FacesetStore
from tests.cli.helpers import assert_one_line_error, flat, invoke


@pytest.mark.parametrize("args", [
    ["curate", "import-dfl"],
    ["curate", "export-dfl"],
    ["curate", "export-dfl", "--out", "x", "--quality", "0"],
    ["curate", "export-dfl", "--out", "x", "--format", "xml"],
    ["curate", "import-dfl", ".", "--resolution", "many"],
])
def test_usage_errors_exit_2(args):
    result = invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.output)


@pytest.fixture(scope="module")
def faceset(module_dirs, obama_paths) -> Path:
    """Two Obama photos scanned at 128 px (one face each)."""
    from curate.faces.backends.embedded import EmbeddedFaceAnalyzer

    photos = module_dirs("photos")
    for path in obama_paths[:2]:
        shutil.copy(path, photos / path.name)
    database = module_dirs("faceset") / "faceset.duckdb"
    summary = scan_folder(photos, database, ScanSettings(resolution=128), EmbeddedFaceAnalyzer(device="cpu"))
    assert summary.faces == 2
    return database


def test_export_table(tmp_path, faceset):
    result = invoke("curate", "export-dfl", "--db", faceset, "--out", tmp_path / "aligned")
    assert result.exit_code == 0, result.output
    assert flat(result.stdout) == f"exported 2 faces to {tmp_path / 'aligned'}"
    assert sorted(path.name for path in (tmp_path / "aligned").iterdir()) == ["00000.jpg", "00001.jpg"]


def test_export_json_and_csv(tmp_path, faceset):
    result = invoke("curate", "export-dfl", "--db", faceset, "--out", tmp_path / "a", "--format", "json",
                    "--quality", "80")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["faces"] == 2 and len(report["files"]) == 2
    assert all(read_dfl_metadata(Path(path)).face_type == "whole_face" for path in report["files"])

    result = invoke("curate", "export-dfl", "--db", faceset, "--out", tmp_path / "b", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["file"] and [Path(row[0]).name for row in rows[1:]] == ["00000.jpg", "00001.jpg"]


def test_export_follows_the_selection_unless_all(tmp_path, faceset):
    database = tmp_path / "faceset.duckdb"
    shutil.copy(faceset, database)
    shutil.copytree(faceset.parent / "faceset_aligned", tmp_path / "faceset_aligned")
    with FacesetStore(database) as store:
        face_ids = [row[0] for row in store.connection.execute("SELECT face_id FROM faces ORDER BY face_id").fetchall()]
        store.replace_analysis("selection", "selection", [
            (face_ids[1], True, 1, 0, 0, "front", "selected", "neutral"),
            (face_ids[0], False, None, 0, 0, "front", "duplicate", "neutral"),
        ], {})
    result = invoke("curate", "export-dfl", "--db", database, "--out", tmp_path / "chosen", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["faces"] == 1
    result = invoke("curate", "export-dfl", "--db", database, "--out", tmp_path / "all", "--all", "--format", "json")
    assert json.loads(result.stdout)["faces"] == 2


def test_export_errors(tmp_path, faceset):
    message = assert_one_line_error(invoke("curate", "export-dfl", "--db", tmp_path / "none.duckdb", "--out", tmp_path / "x"))
    assert "no faceset" in message
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.jpg").write_bytes(b"x")
    message = assert_one_line_error(invoke("curate", "export-dfl", "--db", faceset, "--out", tmp_path / "full"))
    assert "already holds JPEG files" in message


@pytest.fixture(scope="module")
def dfl_folder(module_dirs, faceset) -> tuple[Path, Path]:
    """Two exported faces plus one whose metadata would run `touch MARKER`."""
    folder = module_dirs("dfl") / "aligned"
    result = invoke("curate", "export-dfl", "--db", faceset, "--out", folder)
    assert result.exit_code == 0, result.output
    marker = folder.parent / "ran"
    good = (folder / "00000.jpg").read_bytes()
    assert read_app15(good)
    (folder / "crafted.jpg").write_bytes(write_app15(good, f"cos\nsystem\n(Vtouch {marker}\ntR.".encode()))
    return folder, marker


def test_import_json(tmp_path, dfl_folder):
    folder, marker = dfl_folder
    result = invoke("curate", "import-dfl", folder, "--db", tmp_path / "f.duckdb", "--resolution", "128",
                    "--device", "cpu", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["files"], summary["with_metadata"], summary["rejected"]) == (3, 2, 1)
    assert summary["reasons"] == {"unsafe-metadata: refused global os.system": 1}
    assert summary["faces"] == 3 and summary["scan"]["images_ok"] == 3
    assert not marker.exists()


def test_import_table_and_csv(tmp_path, dfl_folder):
    folder, marker = dfl_folder
    result = invoke("curate", "import-dfl", folder, "--db", tmp_path / "f.duckdb", "--resolution", "128",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    shown = flat(result.stdout)
    for text in ("files 3", "with DFL metadata 2", "without metadata 0", "rejected 1",
                 "unsafe-metadata: refused global os.system 1", "faces found 3"):
        assert text in shown, (text, shown)
    result = invoke("curate", "import-dfl", folder, "--db", tmp_path / "f.duckdb", "--resolution", "128",
                    "--device", "cpu", "--format", "csv")
    assert result.exit_code == 0, result.output
    header, values = list(csv.reader(io.StringIO(result.stdout)))
    row = dict(zip(header, values))
    assert row["with_metadata"] == "2" and row["rejected"] == "1" and row["faces"] == "0"  # nothing new to scan
    assert not marker.exists()


def test_import_errors(tmp_path, dfl_folder):
    message = assert_one_line_error(invoke("curate", "import-dfl", tmp_path / "nowhere", "--db", tmp_path / "f.duckdb"))
    assert "not a folder" in message
    message = assert_one_line_error(
        invoke("curate", "import-dfl", dfl_folder[0], "--db", tmp_path / "f.duckdb", "--face-type", "torso")
    )
    assert "unknown face type" in message
