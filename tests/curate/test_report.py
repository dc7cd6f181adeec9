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

from curate.report import build_report
from curate.report_html import write_html_report
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
    assert report.counts["faces"] == faces == 3 + 1 + 6 + 1
    assert report.counts["images_rejected"] == 1 and report.rejects_by_reason == {"not-an-image": 1}
    assert report.identities["labels"]["main"] == main >= 4
    assert report.duplicates["faces_to_drop"] == dropped >= 1
    assert sum(sum(row) for row in report.coverage["counts"]) + report.coverage["faces_outside_range"] \
        + report.coverage["faces_without_pose"] == faces
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
