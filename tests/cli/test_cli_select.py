"""`curate extract` and `curate select` on the command line: help, output formats, exit codes, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import duckdb
import pytest

from curate.scan.pipeline import ScanSettings, scan_folder
from tests.cli.helpers import assert_one_line_error, invoke
from tests.curate.test_video import write_video

# -- extract ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(module_dirs) -> Path:
    return write_video(module_dirs("cli_video") / "clip.avi", "MJPG", 25.0, 50)


def test_extract_json(video, tmp_path):
    out = tmp_path / "frames"
    result = invoke("curate", "extract", video, "--fps", 5, "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames_sampled"] == 10 and summary["frames_written"] == 10 and summary["source_fps"] == 25.0
    assert sorted(path.name for path in out.iterdir())[:2] == ["clip_000000.png", "clip_000005.png"]
    again = json.loads(invoke("curate", "extract", video, "--fps", 5, "--out", out, "--format", "json").stdout)
    assert again["frames_written"] == 0 and again["frames_existing"] == 10


def test_extract_table_and_default_folder(tmp_path):
    clip = write_video(tmp_path / "holiday [1].avi", "MJPG", 25.0, 25)
    result = invoke("curate", "extract", clip, "--fps", 2, "--jpeg-quality", 90)
    assert result.exit_code == 0, result.output
    assert "frames kept" in result.stdout and "2 at 2 fps" in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    # 0.5 s lies halfway between frames 12 and 13: the earlier one is taken.
    assert sorted(path.name for path in (tmp_path / "holiday [1]_frames").iterdir()) == [
        "holiday [1]_000000.jpg", "holiday [1]_000012.jpg"]


def test_extract_csv(video, tmp_path):
    result = invoke("curate", "extract", video, "--out", tmp_path / "frames", "--max-frames", 3, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 1 and rows[0]["frames_sampled"] == "3" and rows[0]["fps"] == "5.0"


def test_extract_errors(video, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    assert "cannot read" in assert_one_line_error(invoke("curate", "extract", corrupt, "--out", tmp_path / "a"))
    assert "no video at" in assert_one_line_error(invoke("curate", "extract", tmp_path / "nope.mp4"))
    assert "frames per second" in assert_one_line_error(invoke("curate", "extract", video, "--fps", 0))
    assert invoke("curate", "extract").exit_code == 2
    assert invoke("curate", "extract", video, "--fps", "fast").exit_code == 2
    assert invoke("curate", "extract", video, "--format", "xml").exit_code == 2


# -- select ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faceset(module_dirs, obama_paths, t1_path) -> Path:
    from curate.faces.backends.embedded import EmbeddedFaceAnalyzer

    folder = module_dirs("cli_select")
    photos = folder / "photos"
    photos.mkdir()
    for path in [*obama_paths, t1_path]:
        image = cv2.imread(str(path))
        cv2.imwrite(str(photos / f"{path.stem}.jpg"), image)
        cv2.imwrite(str(photos / f"{path.stem}_mirror.jpg"), cv2.flip(image, 1))
    database = folder / "faceset.duckdb"
    scan_folder(photos, database, ScanSettings(resolution=128, batch_size=8), analyzer=EmbeddedFaceAnalyzer("cpu"))
    return database


def test_select_table(faceset, tmp_path):
    out = tmp_path / "selected"
    result = invoke("curate", "select", "--db", faceset, "--budget", 5, "--out", out)
    assert result.exit_code == 0, result.output
    assert "selected" in result.stdout and "5 of a budget of 5" in result.stdout
    assert "left out: over budget" in result.stdout
    assert "warning: no duplicates analysis yet" in result.stderr
    assert len([path for path in out.iterdir() if path.suffix == ".jpg"]) == 5


def test_select_json_and_rows(faceset, tmp_path):
    out = tmp_path / "selected"
    result = invoke("curate", "select", "--db", faceset, "--budget", 4, "--out", out, "--no-lighting",
                    "--no-expression", "--yaw-bin", 30, "--exclude-bad", "none", "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    summary = json.loads(result.stdout)
    assert summary["selected"] == 4 and summary["files_written"] == 4 and summary["budget"] == 4
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["settings"] == {"budget": 4, "yaw_bin": 30, "pitch_bin": 15, "lighting": False,
                                    "light_threshold": 0.1, "exclude_bad": [], "expression": False}
    with duckdb.connect(str(faceset), read_only=True) as connection:
        picked = connection.execute("SELECT count(*) FROM selection WHERE selected").fetchone()[0]
        yaw_bins = {row[0] for row in connection.execute("SELECT DISTINCT yaw_bin FROM selection").fetchall()}
    assert picked == 4 and all(value % 30 == 0 for value in yaw_bins)


def test_select_csv(faceset, tmp_path):
    result = invoke("curate", "select", "--db", faceset, "--budget", 2, "--out", tmp_path / "s", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["selected"] == "2" and "excluded_over budget" in rows[0]


def test_select_errors(faceset, tmp_path):
    assert "no faceset" in assert_one_line_error(
        invoke("curate", "select", "--db", tmp_path / "missing.duckdb", "--out", tmp_path / "s"))
    assert "budget" in assert_one_line_error(
        invoke("curate", "select", "--db", faceset, "--budget", 0, "--out", tmp_path / "s"))
    assert "unknown quality measure" in assert_one_line_error(
        invoke("curate", "select", "--db", faceset, "--exclude-bad", "wrinkles", "--out", tmp_path / "s"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert "holds files" in assert_one_line_error(invoke("curate", "select", "--db", faceset, "--out", busy))
    assert invoke("curate", "select", "--db", faceset).exit_code == 2  # --out is required
    assert invoke("curate", "select", "--db", faceset, "--out", busy, "--budget", "many").exit_code == 2
