"""`facesmith merge report`: the training report as a table, JSON, CSV and an HTML page, and its errors."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from merge.checks import check_model
from tests.cli.helpers import assert_one_line_error, flat, invoke
from tests.merge.test_training_report import insert_flagged_check


@pytest.fixture(scope="module")
def checked_model(module_dirs, tiny_model, analyzer) -> Path:
    """A copy of the tiny model with one real merge check at iteration 30."""
    model_dir = module_dirs("cli_report") / "model"
    shutil.copytree(tiny_model, model_dir)
    check_model(model_dir, analyzer=analyzer)
    return model_dir


def test_report_json_and_html(checked_model, tmp_path):
    html = tmp_path / "training.html"
    result = invoke("merge", "report", "--model-dir", checked_model, "--html", html, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"]["iteration"] == 30 and [c["iteration"] for c in report["checks"]] == [30]
    assert report["overtraining"] is False and report["best_iteration"] == 30
    assert report["html"] == str(html) and html.is_file()
    assert "<svg" in html.read_text(encoding="utf-8")


def test_report_table_and_csv(checked_model):
    result = invoke("merge", "report", "--model-dir", checked_model)
    assert result.exit_code == 0, result.output
    shown = flat(result.stdout)
    assert "best iteration 30" in shown and "overtraining none" in shown
    assert re.search(r"last merge check at 30: quality 0\.\d{3} \(decided by quality\), held-out src loss", shown)
    assert "merge checks" in shown
    rows = list(csv.DictReader(io.StringIO(invoke("merge", "report", "--model-dir", checked_model,
                                                  "--format", "csv").stdout)))
    assert [row["iteration"] for row in rows] == ["30"] and "validation_src_loss" in rows[0]
    assert 0 <= float(rows[0]["quality_score"]) <= 1 and rows[0]["frame_names"]


def test_report_shows_the_overtraining_warning(checked_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(checked_model, model_dir)
    insert_flagged_check(model_dir, iteration=60, best_iteration=30)
    html = tmp_path / "training.html"
    result = invoke("merge", "report", "--model-dir", model_dir, "--html", html)
    assert result.exit_code == 0, result.output
    shown = flat(result.stdout)
    assert "overtraining overtraining: held-out src loss" in shown and "best so far at iteration 30" in shown
    assert f"HTML report: {html}" in result.stdout
    assert "best iteration so far: 30." in html.read_text(encoding="utf-8")


def test_report_of_a_folder_that_is_no_model_is_one_line(tmp_path):
    assert "is not a model folder" in assert_one_line_error(invoke("merge", "report", "--model-dir", tmp_path))
