"""The scan under a failing machine and clumsy use: nothing lost, one-line errors, Ctrl-C saves (issue 17)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from curate.errors import StoreError
from curate.scan.pipeline import ScanSettings, scan_folder

REPO = Path(__file__).resolve().parents[2]

# Runs the facesmith CLI with a file-size limit (RLIMIT_FSIZE): every write past it fails with
# EFBIG, as writes to a full disk fail with ENOSPC, for any user (root included, whom a read-only
# folder would not stop). SIGXFSZ is ignored so the write fails instead of killing the process.
_LIMITED = """
import resource, runpy, signal, sys
limit = int(sys.argv[1])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["facesmith"] + sys.argv[2:]
runpy.run_module("facesmith", run_name="__main__")
"""


def facesmith(*args: object, file_size_limit: int = 0, **popen: object) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", _LIMITED, str(file_size_limit), *map(str, args)],
                          capture_output=True, text=True, env=environment, timeout=600, **popen)


def rows(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
def photo_folder(tmp_path: Path, obama_paths: list[Path], biden_path: Path) -> Path:
    """A folder scanned once while it held only a text file: the faceset exists, the photos are new."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("shoot list\n")
    return folder


def add_photos(folder: Path, paths: list[Path]) -> None:
    for path in paths:
        shutil.copy(path, folder / path.name)


def test_crops_that_cannot_be_written_stop_the_scan_and_lose_no_photo(tmp_path, photo_folder, obama_paths):
    database = tmp_path / "faces.duckdb"
    assert facesmith("curate", "scan", photo_folder, "--db", database).returncode == 0
    add_photos(photo_folder, obama_paths[:2])
    # 8 KiB: the database's small writes fit, a 256 px crop (~20 KB) does not.
    failed = facesmith("curate", "scan", photo_folder, "--db", database, file_size_limit=8192)
    message = assert_one_line_error(failed)
    assert "cannot write an aligned crop" in message and "then run it again" in message
    # Not a verdict on the photos: no row says they are bad, and the next scan reads them.
    assert rows(database, "SELECT count(*) FROM images WHERE reject_reason = 'analysis-error'") == [(0,)]
    again = facesmith("curate", "scan", photo_folder, "--db", database, "--format", "json")
    assert again.returncode == 0, again.stderr
    statuses = dict(rows(database, "SELECT path, status FROM images"))
    assert statuses == {"notes.txt": "rejected", "obama.jpg": "ok", "obama2.jpg": "ok"}
    assert rows(database, "SELECT count(*) FROM faces")[0][0] >= 2
    assert ("interrupted",) in rows(database, "SELECT status FROM runs")


def test_a_full_disk_under_the_database_is_one_line_and_the_next_scan_recovers(tmp_path, photo_folder,
                                                                                obama_paths):
    database = tmp_path / "faces.duckdb"
    small = ("--resolution", "32")  # crops of ~1.5 KB fit under the limit; the batch's rows do not
    assert facesmith("curate", "scan", photo_folder, "--db", database, *small).returncode == 0
    add_photos(photo_folder, obama_paths[:2])
    failed = facesmith("curate", "scan", photo_folder, "--db", database, *small, file_size_limit=4096)
    message = assert_one_line_error(failed)
    assert f"cannot write a batch to {database}" in message and "file size limit" in message
    again = facesmith("curate", "scan", photo_folder, "--db", database, *small)
    assert again.returncode == 0, again.stderr
    assert rows(database, "SELECT count(*) FROM images WHERE status = 'ok'") == [(2,)]
    assert rows(database, "SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]


def test_two_facesets_never_share_a_crop_folder(tmp_path, analyzer, obama_paths, biden_path):
    """faces.duckdb and faces.db both default to faces_aligned/; the same relative name in two
    source folders made the second scan overwrite the first faceset's crop."""
    first, second = tmp_path / "obama", tmp_path / "biden"
    first.mkdir()
    second.mkdir()
    shutil.copy(obama_paths[0], first / "a.jpg")
    shutil.copy(biden_path, second / "a.jpg")
    settings = ScanSettings(resolution=64)
    scan_folder(first, tmp_path / "faces.duckdb", settings, analyzer=analyzer)
    crops = sorted((tmp_path / "faces_aligned").glob("*.jpg"))
    assert crops
    before = {crop.name: hashlib.sha256(crop.read_bytes()).hexdigest() for crop in crops}
    with pytest.raises(StoreError, match="holds the aligned crops of another faceset"):
        scan_folder(second, tmp_path / "faces.db", settings, analyzer=analyzer)
    after = {crop.name: hashlib.sha256(crop.read_bytes()).hexdigest()
             for crop in (tmp_path / "faces_aligned").glob("*.jpg")}
    assert after == before
    # Its own folder works, and the first faceset still scans into its own.
    scan_folder(second, tmp_path / "faces.db", settings, analyzer=analyzer, aligned_dir=tmp_path / "biden_crops")
    assert scan_folder(first, tmp_path / "faces.duckdb", settings, analyzer=analyzer).images_unchanged == 1


def test_a_crop_folder_of_unknown_crops_is_not_taken_over(tmp_path, analyzer, obama_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(obama_paths[0], folder / "a.jpg")
    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "0123456789abcdef_00.jpg").write_bytes(b"someone else's crop")
    with pytest.raises(StoreError, match="already holds aligned crops"):
        scan_folder(folder, tmp_path / "f.duckdb", ScanSettings(resolution=64), analyzer=analyzer, aligned_dir=crops)
    assert (crops / "0123456789abcdef_00.jpg").read_bytes() == b"someone else's crop"


def test_a_rescan_with_nothing_to_do_still_checks_the_settings(tmp_path, analyzer, obama_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(obama_paths[0], folder / "a.jpg")
    database = tmp_path / "f.duckdb"
    scan_folder(folder, database, ScanSettings(resolution=64), analyzer=analyzer)
    for changed, what in ((ScanSettings(resolution=64, backend="insightface"), "backend"),
                          (ScanSettings(resolution=128), "resolution"),
                          (ScanSettings(resolution=64, face_type="head"), "face type")):
        with pytest.raises(StoreError, match=f"scanned with {what}"):
            scan_folder(folder, database, changed)  # no analyser: nothing to do, no pack needed
    assert rows(database, "SELECT backend, count(*) FROM runs GROUP BY ALL") == [("embedded", 1)]
    assert scan_folder(folder, database, ScanSettings(resolution=64)).images_unchanged == 1


def test_a_huge_file_is_one_row_and_the_others_are_scanned(tmp_path, analyzer, obama_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(obama_paths[0], folder / "a.jpg")
    with open(folder / "huge.jpg", "wb") as handle:  # 40 GiB, sparse: no disk blocks
        handle.write(b"\xff\xd8\xff")
        handle.truncate(40 * 2**30)
    database = tmp_path / "f.duckdb"
    summary = scan_folder(folder, database, ScanSettings(resolution=64), analyzer=analyzer)
    assert summary.rejected_by_reason == {"too-large": 1} and summary.images_ok == 1
    assert dict(rows(database, "SELECT path, status FROM images")) == {"a.jpg": "ok", "huge.jpg": "rejected"}


def test_ctrl_c_says_what_was_saved_and_exits_130(tmp_path, obama_paths, biden_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(120):  # enough work that the interrupt lands mid-scan
        source = (obama_paths + [biden_path])[index % 4]
        shutil.copy(source, folder / f"{index:03d}{source.suffix}")
    database = tmp_path / "f.duckdb"
    environment = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    process = subprocess.Popen([sys.executable, "-m", "facesmith", "curate", "scan", folder, "--db", database,
                                "--resolution", "64", "--batch-size", "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    crops = tmp_path / "f_aligned"
    deadline = time.monotonic() + 300
    # Crops are written ahead of their rows (at most two batches): 40 means some batches are committed.
    while not (crops.is_dir() and len(list(crops.glob("*.jpg"))) >= 40) and process.poll() is None:
        assert time.monotonic() < deadline, "the scan never wrote a crop"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, (process.returncode, stdout, stderr)
    assert "Traceback" not in stderr
    assert "scan interrupted:" in stderr and "run the same command again to continue" in stderr, stderr
    saved = rows(database, "SELECT count(*) FROM images")[0][0]
    assert 0 < saved < 120
    assert f"{saved} images saved" in stderr
    assert rows(database, "SELECT status FROM runs") == [("interrupted",)]
    again = facesmith("curate", "scan", folder, "--db", database, "--resolution", "64", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert rows(database, "SELECT count(*) FROM images")[0][0] == 120


def test_crops_and_reports_are_written_with_the_users_umask(tmp_path, analyzer, obama_paths):
    import stat

    from curate.reports.html import write_html_report
    from curate.reports.report import build_report

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(obama_paths[0], folder / "a.jpg")
    previous = os.umask(0o022)
    try:
        scan_folder(folder, tmp_path / "f.duckdb", ScanSettings(resolution=64), analyzer=analyzer)
        report = write_html_report(build_report(tmp_path / "f.duckdb"), tmp_path / "report.html")
    finally:
        os.umask(previous)
    crops = list((tmp_path / "f_aligned").glob("*.jpg"))
    assert crops
    for path in [*crops, Path(report)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # mkstemp made them 0600
