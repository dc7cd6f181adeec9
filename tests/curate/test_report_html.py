"""The HTML report one can act on: file names on every thumbnail, the selection's contact sheet,
rejected files and images without faces by name, verdict bands on the histograms, and a pose
heat map with a count in every cell and a legend."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from curate.decisions import Decision, record_decisions
from curate.faceset import FacesetReader
from curate.reports.html import write_html_report
from curate.reports.report import build_report
from curate.reports.svg_plots import band_text, histogram, verdict_zones
from tests.curate.test_review_api import copy_faceset


@pytest.fixture()
def page(analysed_faceset, tmp_path) -> tuple[Path, str]:
    database = copy_faceset(analysed_faceset, tmp_path / "set")
    with duckdb.connect(str(database)) as connection:  # an image read fine in which no face was found
        connection.execute("""INSERT INTO images SELECT 'nofaceimage00001', 'empty wall.jpg', content_hash, bytes,
                              mtime_ns, width, height, format, mode, 'ok', NULL, 0, run_id
                              FROM images WHERE status = 'ok' LIMIT 1""")
    with FacesetReader(database) as reader:
        first = reader.statuses()[0].face_id
    record_decisions(database, [Decision(first, "exclude"), Decision(first, "tag", "blurry?")], who="tester")
    html = write_html_report(build_report(database), tmp_path / "report.html").read_text(encoding="utf-8")
    return database, html


def test_every_thumbnail_names_its_file(page):
    database, html = page
    with FacesetReader(database) as reader:
        faces = reader.faces()
    names = {f"{path} #{index}" for path, index in zip(faces.paths, faces.face_index.tolist())}
    captions = re.findall(r"<figcaption><b>([^<]*)</b>", html)
    assert len(captions) == html.count("<figure") >= 5
    assert set(captions) <= names


def test_selection_sheet_lists_the_picks_in_order(page):
    database, html = page
    with FacesetReader(database) as reader:
        picked = reader.selected()
    section = html.split("Selected faces in pick order", 1)[1].split("<h2>", 1)[0]
    picks = [int(n) for n in re.findall(r"</b>pick (\d+)</figcaption>", section)]
    assert picks == list(range(1, len(picked) + 1)) and picks


def test_rejected_files_and_images_without_faces_are_listed_by_name(page):
    _, html = page
    assert "notes.txt — not-an-image" in html
    assert "Images without faces (1)" in html and "<li>empty wall.jpg</li>" in html


def test_histograms_shade_the_verdict_bands_and_spell_them_out(page):
    database, html = page
    with duckdb.connect(str(database), read_only=True) as connection:
        band = connection.execute("SELECT bad_low, ok_low, ok_high, bad_high FROM face_checks "
                                  "WHERE measure = 'sharpness' LIMIT 1").fetchone()
    assert band_text(band) in html.replace("&lt;", "<").replace("&gt;", ">")
    assert html.count("<title>ok</title>") >= 4  # sharpness, brightness, contrast, face_size
    assert "decided by hand: excluded" in html and "decided by hand: tagged" in html


def test_band_zones_cover_the_line_in_order():
    zones = verdict_zones((30.0, 150.0, None, None))
    assert zones == [(-float("inf"), 30.0, "bad"), (30.0, 150.0, "warn"), (150.0, float("inf"), "ok")]
    two_sided = verdict_zones((0.12, 0.25, 0.75, 0.88))
    assert [z[2] for z in two_sided] == ["bad", "warn", "ok", "warn", "bad"]
    assert all(a[1] == b[0] for a, b in zip(two_sided, two_sided[1:]))
    svg = histogram([10.0, 100.0, 1000.0], [3, 4], "sharpness", band=(30.0, 150.0, None, None))
    widths = {verdict: float(width) for width, verdict in
              re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)" height="\d+" fill="#\w+"><title>(\w+)</title>', svg)}
    assert set(widths) == {"bad", "warn", "ok"} and widths["ok"] > widths["warn"] > 0


def test_heat_map_writes_every_count_and_a_legend(page):
    database, html = page
    report = build_report(database)
    heat = html.split("faces per yaw × pitch cell", 1)[1].split("</svg>", 1)[0]
    counts = [int(n) for n in re.findall(r'class="count">(\d+)</text>', heat)]
    cells = [n for column in report.coverage["counts"] for n in column if n]
    assert sorted(counts) == sorted(cells) and sum(counts) > 0
    assert 'class="legend"' in heat and f"{max(cells)} faces" in heat and "0 (empty)" in heat
