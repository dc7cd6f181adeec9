"""The training report: read from a model folder with a real merge check, and its self-contained HTML page."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pytest

from curate.reports.svg_plots import line_chart
from merge.checks import SHEET_LABEL_WIDTH, MergeCheckResult, check_model
from merge.report import downsample_losses, training_report, write_training_html


class _Page(HTMLParser):
    """What a test needs of the page: svg count, rows per table section, image sources, external links."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs = 0
        self.rows: dict[str, int] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self.section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "svg":
            self.svgs += 1
        elif tag == "section":
            self.section = values.get("id")
        elif tag == "tr" and self.section:
            self.rows[self.section] = self.rows.get(self.section, 0) + 1
        elif tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("src", "href"):
            if values.get(name) and not values[name].startswith("data:"):
                self.external.append(values[name])

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def insert_flagged_check(model_dir: Path, iteration: int, best_iteration: int) -> None:
    """A merge check row as the training loop would store it once overtraining is flagged."""
    detail = f"overtraining: held-out src loss 12% above its best; best so far at iteration {best_iteration}"
    row = MergeCheckResult(
        iteration=iteration, checked_at=datetime.now(timezone.utc), train_src_loss=0.5, validation_src_loss=2.0,
        train_dst_loss=0.5, validation_dst_loss=1.8, generalisation_gap=1.5, identity_similarity=0.4,
        dst_identity_similarity=0.1, expression_error=0.2, sharpness_ratio=0.9, artefact_score=0.01, frames=4,
        training_loss=1.0, overtraining=True, best_iteration=best_iteration, detail=detail, contact_sheet=None)
    connection = duckdb.connect(str(model_dir / "model.duckdb"))
    try:
        connection.execute(f"INSERT INTO merge_checks VALUES ({', '.join('?' for _ in row.to_row())})",
                           list(row.to_row()))
    finally:
        connection.close()


@pytest.fixture(scope="module")
def checked_model(module_dirs, tiny_model, analyzer) -> tuple[Path, MergeCheckResult]:
    """A copy of the tiny model with one real merge check at its last iteration."""
    model_dir = module_dirs("report") / "model"
    shutil.copytree(tiny_model, model_dir)
    return model_dir, check_model(model_dir, analyzer=analyzer)


def test_the_report_holds_status_losses_and_the_check(checked_model):
    model_dir, result = checked_model
    report = training_report(model_dir)
    assert [check["iteration"] for check in report.checks] == [30]
    assert report.checks[0]["validation_src_loss"] == pytest.approx(result.validation_src_loss)
    assert report.status["iteration"] == 30 and report.status["phase"]
    assert not report.overtraining and report.best_iteration == 30 and report.warning is None
    assert report.loss_iterations == list(range(1, 31)) and len(report.src_loss) == len(report.dst_loss) == 30
    assert report.advice and all(isinstance(line, str) and line for line in report.advice)
    # every event the model logged, the merge check's evaluation among them
    assert any(e["kind"] == "evaluation" and e["iteration"] == 30 for e in report.events)
    assert {"checkpoint", "evaluation"} <= {event["kind"] for event in report.events}
    headers, rows = report.check_table()
    assert headers[:2] == ["iteration", "quality"] and "held-out src loss" in headers
    assert rows == [[30, pytest.approx(result.quality_score), *rows[0][2:]]] and len(rows[0]) == len(headers)


def test_the_html_page_is_self_contained(checked_model, tmp_path):
    model_dir, result = checked_model
    out = write_training_html(training_report(model_dir), tmp_path / "pages" / "training.html")
    assert out.is_file() and not list(out.parent.glob(".*.tmp"))
    page = parse(out)
    assert page.svgs >= 2  # the loss curve and the held-out vs training chart
    assert page.rows["merge-checks"] == 1 + 1  # header + one row per check
    assert page.external == []
    # one contact sheet (PNG); the faces the model learns worst are inline JPEG thumbnails
    sheets = [image for image in page.images if image.startswith("data:image/png;base64,")]
    thumbnails = [image for image in page.images if image.startswith("data:image/jpeg;base64,")]
    assert len(sheets) == 1 and len(thumbnails) >= 2 and len(sheets) + len(thumbnails) == len(page.images)
    png = base64.b64decode(sheets[0].split(",", 1)[1])
    assert png == (model_dir / result.contact_sheet).read_bytes()
    sheet = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert sheet is not None and sheet.shape[:2] == (18 + 64 * result.frames, SHEET_LABEL_WIDTH + 3 * 64)
    text = out.read_text(encoding="utf-8")
    assert "OVERTRAINING" not in text and "merge check at 30" in text
    assert all(f"<li>{name}</li>" in text for name in result.frame_names.splitlines())  # the sheet's rows, named


def test_a_flagged_check_shows_the_banner_and_the_best_iteration(checked_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(checked_model[0], model_dir)
    insert_flagged_check(model_dir, iteration=60, best_iteration=30)
    report = training_report(model_dir)
    assert report.overtraining and report.best_iteration == 30
    assert "best so far at iteration 30" in report.warning
    assert "30" in report.advice[0] and not any(line.startswith("Training loss:") for line in report.advice)
    text = write_training_html(report, tmp_path / "training.html").read_text(encoding="utf-8")
    assert "OVERTRAINING" in text and "best iteration so far: 30." in text
    assert parse(tmp_path / "training.html").rows["merge-checks"] == 1 + 2


def test_text_from_the_model_folder_is_escaped(checked_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(checked_model[0], model_dir)
    connection = duckdb.connect(str(model_dir / "model.duckdb"))
    try:
        connection.execute("INSERT INTO events VALUES (5, now(), 'note', '<script>alert(1)</script>')")
    finally:
        connection.close()
    text = write_training_html(training_report(model_dir), tmp_path / "training.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_not_a_model_folder(tmp_path):
    from train.loop import TrainingError

    with pytest.raises(TrainingError, match="is not a model folder"):
        training_report(tmp_path)


def test_downsampling_averages_stretches_and_keeps_gaps():
    iterations = np.arange(1, 5001, dtype=np.int64)
    losses = np.stack([np.linspace(2.0, 1.0, 5000), np.full(5000, 3.0)], axis=1)
    losses[2500:2505, 1] = np.nan  # exactly one averaged stretch without a finite loss
    losses[:5, 0] = np.nan
    xs, ys = downsample_losses(iterations, losses, limit=1000)
    assert xs.shape == (1000,) and ys.shape == (1000, 2)
    assert xs[0] == 5 and xs[-1] == 5000 and np.all(np.diff(xs) > 0)
    assert math.isnan(ys[0, 0]) and math.isnan(ys[500, 1]) and ys[501, 1] == 3.0
    assert ys[1, 0] == pytest.approx(losses[5:10, 0].mean())
    short_xs, short_ys = downsample_losses(iterations[:10], losses[:10])
    assert short_xs is not None and len(short_xs) == 10 and short_ys.shape == (10, 2)


def test_line_chart_breaks_lines_at_gaps_and_draws_a_lone_point():
    chart = line_chart({"a": ([1, 2, 3, 4], [1.0, math.nan, 2.0, 3.0]), "<b>": ([1, 4], [2.0, 2.5])},
                       "losses", markers=[(2, "check at 2")], highlight=(3, "best 3"), log_x=True)
    paths = re.findall(r'<path d="([^"]+)"', chart)
    assert len(paths) == 2 and paths[0].count("M") == 2 and paths[1].count("M") == 1 and "&lt;b&gt;" in chart
    assert "best 3" in chart and "check at 2" in chart and "log scale" in chart
    lone = line_chart({"held-out": ([30], [0.7])}, "one check", dots=True)
    assert "<circle" in lone and "no data" not in lone
    assert "no data" in line_chart({"a": ([1], [math.nan])}, "empty")


def test_importing_the_report_does_not_import_tensorflow():
    completed = subprocess.run(
        [sys.executable, "-c", "import sys, merge.report; print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "False"
