"""curate scan end to end on real photos: rows, crops, incremental re-scans, hostile input, kills."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pytest

from curate.errors import StoreError
from curate.scan.pipeline import ScanSettings, default_aligned_dir, scan_folder
from tests.curate.conftest import load_bgr

FAST = ScanSettings(resolution=128, batch_size=4)


def rows(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture()
def people(tmp_path, obama_paths, biden_path, t1_path) -> Path:
    folder = tmp_path / "people"
    (folder / "more").mkdir(parents=True)
    for path in obama_paths:
        shutil.copy(path, folder / path.name)
    shutil.copy(biden_path, folder / "more" / biden_path.name)
    shutil.copy(t1_path, folder / "more" / t1_path.name)
    return folder


def test_scan_writes_images_faces_and_crops(people, tmp_path, analyzer):
    database = tmp_path / "db" / "faceset.duckdb"
    summary = scan_folder(people, database, FAST, analyzer=analyzer)
    assert summary.images_found == 5 and summary.images_ok == 5 and summary.images_rejected == 0
    assert summary.faces == 3 + 1 + 6
    assert "CPUExecutionProvider" in summary.providers

    images = dict(rows(database, "SELECT path, face_count FROM images WHERE status = 'ok'"))
    assert images == {"obama.jpg": 1, "obama2.jpg": 1, "obama3.jpg": 1, "more/biden.jpg": 1, "more/t1.jpg": 6}
    faces = rows(database, """
        SELECT f.face_id, len(f.embedding), len(f.landmarks68), f.yaw, f.pitch, f.roll, f.face_size,
               f.sharpness, f.brightness, f.phash, f.aligned_path, f.image_to_face, f.bbox
        FROM faces f""")
    assert len(faces) == 10
    for face_id, dim, n68, yaw, pitch, roll, size, sharpness, brightness, phash, aligned, matrix, bbox in faces:
        assert dim == 128 and n68 == 136
        assert -90 <= yaw <= 90 and -90 <= pitch <= 90 and -90 <= roll <= 90
        assert size > 20 and sharpness > 0 and 0 < brightness < 1 and len(phash) == 16
        crop = cv2.imread(str(database.parent / aligned))
        assert crop is not None and crop.shape == (128, 128, 3)
        # the stored matrix maps the box centre into the crop
        m = np.array(matrix).reshape(2, 3)
        centre = m @ np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2, 1.0])
        assert 0 < centre[0] < 128 and 0 < centre[1] < 128
    checks = rows(database, "SELECT count(*), count(DISTINCT face_id) FROM face_checks")[0]
    assert checks == (10 * 12, 10)  # 9 image checks and 3 landmark checks (frame_edge, alignment, detection)
    measures = {m for (m,) in rows(database, "SELECT DISTINCT measure FROM face_checks")}
    assert {"frame_edge", "alignment", "detection"} <= measures
    run = rows(database, "SELECT backend, providers, status, settings->>'face_type' FROM runs")
    # the providers recorded are the ones the models run on (the embedder's may be OpenVINO's)
    assert run == [("embedded", analyzer.providers, "done", "whole_face")]
    assert analyzer.providers[0] == "CPUExecutionProvider"


def test_rescan_is_incremental(people, tmp_path, analyzer):
    database = tmp_path / "faceset.duckdb"
    scan_folder(people, database, FAST, analyzer=analyzer)
    again = scan_folder(people, database, FAST, analyzer=analyzer)
    assert again.images_processed == 0 and again.images_unchanged == 5

    # same bytes, new mtime: remembered, not re-analysed
    os.utime(people / "obama.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))
    touched = scan_folder(people, database, FAST, analyzer=analyzer)
    assert touched.images_processed == 0

    # changed content and a new file are processed, nothing else
    cv2.imwrite(str(people / "obama2.jpg"), np.ascontiguousarray(load_bgr(people / "obama2.jpg")[:, ::-1]))
    shutil.copy(people / "obama.jpg", people / "copy.jpg")
    changed = scan_folder(people, database, FAST, analyzer=analyzer)
    assert changed.images_processed == 2
    assert rows(database, "SELECT count(*) FROM images")[0][0] == 6
    assert rows(database, "SELECT count(*) FROM faces")[0][0] == 11
    assert rows(database, "SELECT count(*) FROM runs WHERE status = 'done'")[0][0] == 4


def test_rescan_with_other_settings_is_refused(people, tmp_path, analyzer):
    database = tmp_path / "faceset.duckdb"
    scan_folder(people, database, FAST, analyzer=analyzer)
    (people / "new.jpg").write_bytes((people / "obama.jpg").read_bytes())
    with pytest.raises(StoreError, match="resolution"):
        scan_folder(people, database, ScanSettings(resolution=256), analyzer=analyzer)


def test_hostile_corpus_never_crashes_and_keeps_good_rows(tmp_path, analyzer, obama_paths):
    from tests.hostile_corpus import build_hostile_corpus

    folder = tmp_path / "hostile"
    folder.mkdir()
    expected = build_hostile_corpus(folder, good_image=load_bgr(obama_paths[0]))
    assert len(expected) >= 20
    database = tmp_path / "faceset.duckdb"
    summary = scan_folder(folder, database, FAST, analyzer=analyzer)
    stored = {path: (status, reason) for path, status, reason in
              rows(database, "SELECT path, status, reject_reason FROM images")}
    for path, expectation in expected.items():
        assert path in stored, f"{path} has no row"
        assert stored[path] == (expectation.status, expectation.reason), path
    good = [p for p in expected if Path(p).name.startswith("good")]
    assert len(good) >= 2
    for path in good:
        assert rows(database, f"SELECT face_count FROM images WHERE path = '{path}'")[0][0] == 1
    assert summary.images_rejected == sum(e.status == "rejected" for e in expected.values())


def test_sharpness_and_brightness_follow_blur_and_darkening(tmp_path, analyzer, obama_paths):
    folder = tmp_path / "variants"
    folder.mkdir()
    image = load_bgr(obama_paths[0])
    sigmas = [0, 1, 2, 4, 8]
    for sigma in sigmas:
        blurred = image if sigma == 0 else cv2.GaussianBlur(image, (0, 0), sigma)
        cv2.imwrite(str(folder / f"blur_{sigma}.png"), blurred)
    gains = [1.0, 0.75, 0.5, 0.3]
    for gain in gains:
        cv2.imwrite(str(folder / f"dark_{int(gain * 100):03d}.png"), (image * gain).astype(np.uint8))
    database = tmp_path / "faceset.duckdb"
    scan_folder(folder, database, ScanSettings(batch_size=4), analyzer=analyzer)
    found = dict(rows(database, "SELECT i.path, f.sharpness FROM faces f JOIN images i USING (image_id)"))
    sharpness = [found[f"blur_{sigma}.png"] for sigma in sigmas]
    assert all(a > b for a, b in zip(sharpness, sharpness[1:])), sharpness
    brightness = [rows(database, f"""SELECT f.brightness FROM faces f JOIN images i USING (image_id)
                                    WHERE i.path = 'dark_{int(g * 100):03d}.png'""")[0][0] for g in gains]
    assert all(a > b for a, b in zip(brightness, brightness[1:])), brightness


def _table_dump(database: Path) -> dict[str, list[tuple]]:
    """Every row that a scan writes, without the run that wrote it."""
    return {
        "images": rows(database, "SELECT * EXCLUDE (run_id) FROM images ORDER BY image_id"),
        # the crops folder is named after the database; the file names must match
        "faces": rows(database, "SELECT * EXCLUDE (aligned_path), parse_filename(aligned_path) "
                                "FROM faces ORDER BY face_id"),
        "face_checks": rows(database, "SELECT * FROM face_checks ORDER BY face_id, measure"),
    }


@pytest.mark.slow
def test_scan_killed_with_sigkill_resumes_to_identical_rows(tmp_path, obama_paths, t1_path, biden_path):
    folder = tmp_path / "many"
    folder.mkdir()
    sources = [*obama_paths, t1_path, biden_path]
    for index in range(24):
        shutil.copy(sources[index % len(sources)], folder / f"{index:03d}{sources[index % len(sources)].suffix}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    command = [sys.executable, "-m", "facesmith", "curate", "scan", str(folder), "--resolution", "128",
               "--batch-size", "2", "--format", "json"]

    reference = tmp_path / "reference.duckdb"
    subprocess.run([*command, "--db", str(reference)], check=True, capture_output=True, timeout=600)

    killed_db = tmp_path / "killed.duckdb"
    aligned = default_aligned_dir(killed_db)
    for wanted_crops in (2, 14):  # kill once early, once mid-way through what is left
        process = subprocess.Popen([*command, "--db", str(killed_db)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if aligned.is_dir() and len(list(aligned.glob("*.jpg"))) >= wanted_crops:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished = subprocess.run([*command, "--db", str(killed_db)], check=True, capture_output=True, timeout=600)
    assert b'"images_processed"' in finished.stdout

    assert _table_dump(killed_db) == _table_dump(reference)
    statuses = [status for (status,) in rows(killed_db, "SELECT status FROM runs ORDER BY started_at")]
    assert statuses[-1] == "done" and "interrupted" in statuses
    # no half-written crop is left behind
    assert not list(aligned.glob(".*.tmp"))
    crops = {p.name: p.read_bytes() for p in aligned.glob("*.jpg")}
    assert crops == {p.name: p.read_bytes() for p in default_aligned_dir(reference).glob("*.jpg")}



def test_a_crop_write_torn_by_a_kill_is_cleaned_up(people, tmp_path, analyzer):
    # What SIGKILL leaves when it lands inside write_atomically: the temporary file, never renamed.
    database = tmp_path / "faceset.duckdb"
    aligned = default_aligned_dir(database)
    aligned.mkdir(parents=True)
    torn = aligned / ".0123456789abcdef_00.jpg.k3j2l1.tmp"
    torn.write_bytes(b"\xff\xd8\xff half a JPEG")
    scan_folder(people, database, FAST, analyzer=analyzer)
    assert not torn.exists()
    assert len(list(aligned.glob("*.jpg"))) == 10


def test_vanished_files_and_dropped_faces_leave_no_rows_or_crops(people, tmp_path, analyzer):
    database = tmp_path / "faceset.duckdb"
    scan_folder(people, database, FAST, analyzer=analyzer)
    aligned = default_aligned_dir(database)
    t1_id = rows(database, "SELECT image_id FROM images WHERE path = 'more/t1.jpg'")[0][0]
    assert len(list(aligned.glob(f"{t1_id}_*.jpg"))) == 6

    (people / "obama2.jpg").unlink()
    # t1 now shows one person: five of its six crops must go
    image = load_bgr(people / "more" / "t1.jpg")
    cv2.imwrite(str(people / "more" / "t1.jpg"), image[250:480, 700:900])
    summary = scan_folder(people, database, FAST, analyzer=analyzer)
    assert summary.images_removed == 1
    assert rows(database, "SELECT count(*) FROM images WHERE path = 'obama2.jpg'")[0][0] == 0
    faces_left = rows(database, "SELECT face_id FROM faces")
    crops_left = {p.stem for p in aligned.glob("*.jpg")}
    assert crops_left == {face_id for (face_id,) in faces_left}
    assert rows(database, "SELECT face_count FROM images WHERE path = 'more/t1.jpg'")[0][0] == 1


def test_a_second_folder_is_refused_for_the_same_faceset(people, tmp_path, analyzer, biden_path):
    database = tmp_path / "faceset.duckdb"
    scan_folder(people, database, FAST, analyzer=analyzer)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(biden_path, other / "obama.jpg")  # same relative name, other person
    with pytest.raises(StoreError, match="source folder"):
        scan_folder(other, database, FAST, analyzer=analyzer)
    assert rows(database, "SELECT count(*) FROM images")[0][0] == 5


class _Failing:
    """A backend whose face finder breaks on one file and returns landmarks PnP cannot solve on
    another: the scan must record both and go on."""

    def __init__(self, real):
        self.real = real
        self.name, self.embedding_dim = real.name, real.embedding_dim
        self.providers, self.models = real.providers, real.models

    def locate(self, image):
        if image.shape[0] == 321:
            raise RuntimeError("model exploded")
        faces = self.real.locate(image)
        if image.shape[0] == 322:
            from curate.records import LocatedFace

            return [LocatedFace(f.bbox, f.det_score, f.landmarks5, np.zeros((68, 2), np.float32)) for f in faces]
        return faces

    def embed(self, crops):
        return self.real.embed(crops)


def test_a_failing_image_is_rejected_and_a_poseless_face_is_stored_without_pose(tmp_path, analyzer, obama_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = load_bgr(obama_paths[0])
    cv2.imwrite(str(folder / "explodes.png"), cv2.resize(image, (300, 321)))
    cv2.imwrite(str(folder / "degenerate.png"), cv2.resize(image, (300, 322)))
    shutil.copy(obama_paths[1], folder / "fine.jpg")
    database = tmp_path / "faceset.duckdb"
    summary = scan_folder(folder, database, FAST, analyzer=_Failing(analyzer))
    assert summary.rejected_by_reason == {"analysis-error": 1}
    stored = dict(rows(database, "SELECT path, status FROM images"))
    assert stored == {"explodes.png": "rejected", "fine.jpg": "ok", "degenerate.png": "ok"}
    poses = rows(database, "SELECT i.path, f.yaw FROM faces f JOIN images i USING (image_id) ORDER BY 1")
    assert [path for path, _ in poses] == ["degenerate.png", "fine.jpg"]
    assert poses[0][1] is None and poses[1][1] is not None
    assert rows(database, "SELECT count(*) FROM coverage")[0][0] >= 1  # views cope with NULL pose


def test_unknown_device_and_backend_are_clear_errors():
    from curate.errors import FacesmithError

    with pytest.raises(FacesmithError, match="device"):
        ScanSettings(device="gpu")
    with pytest.raises(FacesmithError, match="backend"):
        ScanSettings(backend="bogus")


def test_records_round_trip_through_their_rows(people, tmp_path, analyzer):
    from curate.records import FaceRecord, ImageRecord
    from curate.store import FACE_COLUMNS, IMAGE_COLUMNS

    database = tmp_path / "faceset.duckdb"
    scan_folder(people, database, FAST, analyzer=analyzer)
    for row in rows(database, f"SELECT {IMAGE_COLUMNS} FROM images"):
        assert ImageRecord.from_row(row).to_row() == row
    faces = rows(database, f"SELECT {FACE_COLUMNS} FROM faces")
    assert len(faces) == 10
    for row in faces:
        assert FaceRecord.from_row(row).to_row() == tuple(list(v) if isinstance(v, tuple) else v for v in row)
