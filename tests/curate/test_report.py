"""Reports: the numbers match the database, the terminal and JSON forms agree, the HTML page renders."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from curate.reports.report import build_report, stale_kinds
from curate.reports.html import write_html_report
from curate.scan.pipeline import default_aligned_dir
from curate import faceset as faceset_module
from curate.faceset import FacesetReader
from facesmith.cli import app


@pytest.fixture(scope="module")
def analysed(analysed_faceset) -> Path:
    return analysed_faceset


def test_report_numbers_match_the_database(analysed):
    report = build_report(analysed)
    with duckdb.connect(str(analysed), read_only=True) as connection:
        faces = connection.execute("SELECT count(*) FROM faces").fetchone()[0]
        main = connection.execute("SELECT count(*) FROM identities WHERE label = 'main'").fetchone()[0]
        dropped = connection.execute("SELECT count(*) FROM duplicates WHERE NOT keep").fetchone()[0]
        scanned = connection.execute("SELECT summary->>'faces' FROM runs WHERE status = 'done'").fetchone()[0]
        per_image = dict(connection.execute("SELECT path, face_count FROM images WHERE status = 'ok'").fetchall())
    assert report.counts["faces"] == faces == int(scanned) == sum(per_image.values())
    # What the photos hold, as lower bounds: the detector may also find a stray face.
    assert per_image["t1.jpg"] >= 6 and all(count >= 1 for count in per_image.values())
    assert len(per_image) == 6 and report.counts["images_ok"] == 6
    assert report.counts["images_rejected"] == 1 and report.rejects_by_reason == {"not-an-image": 1}
    assert report.identities["labels"]["main"] == main >= 4
    assert report.duplicates["faces_to_drop"] == dropped >= 1
    # the whole set's grid holds every face; the advice's grid the faces that can train
    whole, trainable = report.coverage_all, report.coverage
    assert sum(sum(row) for row in whole["counts"]) + whole["faces_outside_range"] + whole["faces_without_pose"] == faces
    assert sum(sum(row) for row in trainable["counts"]) + trainable["faces_outside_range"] \
        + trainable["faces_without_pose"] == report.counts["trainable"]
    with FacesetReader(analysed) as reader:
        assert report.counts["trainable"] == len(reader.trainable_ids(use_selection=False)) <= main - dropped + 1
    assert report.advice[0].startswith(f"faces of the main identity that can train: {report.counts['trainable']} of {faces}")
    assert sum(report.verdicts["sharpness"].values()) == faces
    assert report.advice and all(isinstance(line, str) and line for line in report.advice)
    assert report.stale == []


def test_cli_report_table_and_json_agree(analysed):
    runner = CliRunner()
    table = runner.invoke(app, ["curate", "report", "--db", str(analysed)])
    assert table.exit_code == 0, table.output
    assert "pose coverage" in table.stdout and "advice" in table.stdout
    as_json = runner.invoke(app, ["curate", "report", "--db", str(analysed), "--format", "json"])
    assert as_json.exit_code == 0
    document = json.loads(as_json.stdout)
    assert document["counts"] == build_report(analysed).counts
    assert re.search(rf"faces\s+│\s+{document['counts']['faces']}\b", table.stdout)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed (make test installs it)")
def test_html_report_renders_with_every_image_loaded(analysed, tmp_path):
    page = write_html_report(build_report(analysed), tmp_path / "report.html")
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert html.count("<img ") >= 5 and html.count("<svg") >= 7  # contact sheets, 6 histograms, heat map, map
    # a copy with a probe that records, once loaded, how many images decoded
    probe = page.with_name("probe.html")
    probe.write_text(html.replace("</body>", """<script>
        window.addEventListener('load', () => {
          const images = [...document.images];
          const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
          document.body.setAttribute('data-images', images.length);
          document.body.setAttribute('data-broken', broken);
        });</script></body>"""), encoding="utf-8")
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
         "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    dom = result.stdout
    images = re.search(r'data-images="(\d+)"', dom)
    broken = re.search(r'data-broken="(\d+)"', dom)
    assert images and broken, result.stderr[-2000:]
    assert int(images.group(1)) == html.count("<img ")
    assert int(broken.group(1)) == 0
    # the CLI writes the same page
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["curate", "report", "--db", str(analysed), "--html", str(out)])
    assert result.exit_code == 0 and out.is_file()


@pytest.mark.parametrize(("analysed_at", "finished_at", "stale"), [
    # 02:30+02:00 is before 02:10+01:00 (the night daylight saving ends): the string says later
    ("2024-10-27 00:30:00+00", "2024-10-27 01:10:00+00", True),
    # 02:20+01:00 is after 02:50+02:00: the string says earlier
    ("2024-10-27 01:20:00+00", "2024-10-27 00:50:00+00", False),
])
def test_staleness_compares_instants_not_strings(analysed, tmp_path, monkeypatch, analysed_at, finished_at, stale):
    database = tmp_path / "faceset.duckdb"
    shutil.copyfile(analysed, database)
    with duckdb.connect(str(database)) as connection:
        connection.execute("UPDATE analyses SET analysed_at = ?::TIMESTAMPTZ", [analysed_at])
        connection.execute("UPDATE runs SET finished_at = ?::TIMESTAMPTZ", [finished_at])

    def in_berlin(path, read_only=True):  # a zone with a daylight-saving change
        connection = duckdb.connect(str(path), read_only=read_only)
        connection.execute("SET TimeZone = 'Europe/Berlin'")
        return connection

    monkeypatch.setattr(faceset_module, "open_faceset", in_berlin)  # the reader's door
    report = build_report(database)
    assert report.analyses and sorted(report.stale) == (sorted(report.analyses) if stale else [])


def test_stale_kinds_reads_naive_times_as_utc():
    from datetime import datetime, timedelta, timezone

    scan = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))  # 07:00 UTC
    assert stale_kinds({"before": datetime(2024, 1, 1, 6, 59, 59, 999999),
                        "after": datetime(2024, 1, 1, 7, 0, 0, 1)}, scan) == ["before"]
    assert stale_kinds({"any": datetime(2024, 1, 1)}, None) == []


def test_html_escapes_what_the_data_says(analysed, tmp_path):
    database = tmp_path / "faceset.duckdb"
    shutil.copyfile(analysed, database)
    shutil.copytree(default_aligned_dir(analysed), default_aligned_dir(database))
    attack = '<script>alert(1)</script>" onload="alert(2)'
    with duckdb.connect(str(database)) as connection:
        connection.execute("UPDATE images SET reject_reason = ? WHERE status = 'rejected'", [attack])
        connection.execute("UPDATE images SET path = ? || path", [attack])
        connection.execute("UPDATE identities SET reason = ? WHERE label <> 'main'", [attack])
        connection.execute("UPDATE duplicates SET reason = ?", [attack])
        connection.execute("UPDATE face_checks SET verdict = 'bad' WHERE measure = 'sharpness'")
    report = build_report(database)
    assert report.rejects_by_reason == {attack: 1}
    html = write_html_report(report, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and 'onload="' not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&quot; onload=&quot;alert(2)"
    # in the rejects table and in the captions of the identity and duplicate contact sheets
    assert html.count(escaped) >= 3


def test_html_report_writes_past_a_leftover_temporary_file(analysed, tmp_path):
    (tmp_path / ".report.html.tmp").mkdir()  # what a killed run or a second writer leaves at a fixed name
    page = write_html_report(build_report(analysed), tmp_path / "report.html")
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert sorted(path.name for path in tmp_path.iterdir()) == [".report.html.tmp", "report.html"]
