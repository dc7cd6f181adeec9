"""The CLI facing hostile names, runaway queries and busy files (issue 17): escaped output, bounded SQL,
clear messages."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.scan.pipeline import ScanSettings, scan_folder
from tests.cli.helpers import assert_one_line_error, invoke

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b31m\u202egpj.jpg"  # retitle, clear, colour, 8-bit CSI, bidi


@pytest.fixture(scope="module")
def hostile_faceset(module_dirs, analyzer) -> Path:
    folder = module_dirs("hostile_names") / "photos"
    folder.mkdir()
    (folder / HOSTILE).write_bytes(b"not an image")
    database = folder.parent / "faceset.duckdb"
    scan_folder(folder, database, ScanSettings(resolution=64), analyzer=analyzer)
    return database


RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


def test_sql_tables_show_control_characters_escaped(hostile_faceset):
    result = invoke("sql", "SELECT path, reject_reason FROM images", "--db", hostile_faceset)
    assert result.exit_code == 0, result.output
    assert not any(control in result.stdout for control in RAW_CONTROLS), repr(result.stdout)
    assert "\\x1b[31mred\\x9b31m\\u202egpj.jpg" in result.stdout.replace("\n", "").replace("│", "").replace(" ", "")


def test_sql_json_and_csv_keep_the_name_without_raw_controls(hostile_faceset):
    as_json = invoke("sql", "SELECT path FROM images", "--db", hostile_faceset, "--format", "json")
    assert not any(control in as_json.stdout for control in RAW_CONTROLS), repr(as_json.stdout)
    assert json.loads(as_json.stdout) == [{"path": HOSTILE}]  # JSON escapes read back as the name
    as_csv = invoke("sql", "SELECT path FROM images", "--db", hostile_faceset, "--format", "csv")
    assert not any(control in as_csv.stdout for control in RAW_CONTROLS), repr(as_csv.stdout)
    assert list(csv.reader(io.StringIO(as_csv.stdout)))[1][0].startswith("\\x1b]0;owned")


def test_reports_and_errors_escape_control_characters(hostile_faceset, tmp_path):
    report = invoke("curate", "report", "--db", hostile_faceset)
    assert report.exit_code == 0, report.output
    assert not any(control in report.stdout for control in RAW_CONTROLS)
    missing = invoke("curate", "scan", tmp_path / HOSTILE, "--db", tmp_path / "f.duckdb")
    message = assert_one_line_error(missing)
    assert "\\x1b[2J" in message and not any(control in message for control in RAW_CONTROLS)


def test_a_runaway_query_is_stopped_in_time_and_memory(hostile_faceset):
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1e15) SELECT count(*) FROM r"
    stopped = invoke("sql", endless, "--db", hostile_faceset, "--timeout", "1")
    assert "query stopped after 1 s" in assert_one_line_error(stopped)
    greedy = "SELECT list(range(i)) AS l FROM range(200000) t(i) ORDER BY random()"
    refused = invoke("sql", greedy, "--db", hostile_faceset, "--memory-limit", "100MB")
    assert "needs more than 100MB of memory" in assert_one_line_error(refused)
    assert "is not a size" in assert_one_line_error(invoke("sql", "SELECT 1", "--db", hostile_faceset,
                                                           "--memory-limit", "lots"))


_HOLD = """
import sys
from pathlib import Path
kind, path = sys.argv[1], Path(sys.argv[2])
if kind == "faceset":
    from curate.store import FacesetStore
    holder = FacesetStore(path)
else:
    from train.history import ModelHistory
    holder = ModelHistory(path)
print("holding", flush=True)
sys.stdin.read()
holder.close()
"""


def hold(kind: str, path: Path) -> subprocess.Popen:
    """Another process with the file open for writing, as a scan or a training run has it."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD, kind, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert process.stdout.readline().strip() == "holding"
    return process


def test_reading_a_faceset_while_a_scan_writes_it_says_what_to_do(hostile_faceset, tmp_path):
    copy = tmp_path / "busy.duckdb"
    copy.write_bytes(hostile_faceset.read_bytes())
    holder = hold("faceset", copy)
    try:
        message = assert_one_line_error(invoke("sql", "SELECT 1", "--db", copy))
    finally:
        holder.communicate("", timeout=60)
    assert f"it is being written by process {holder.pid}" in message and "then run this again" in message
    assert invoke("sql", "SELECT 1", "--db", copy).exit_code == 0  # and works once it is let go


def test_train_status_while_training_holds_the_history_says_what_to_do(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text('{"requested": {}, "structure": {}}')
    holder = hold("history", model_dir)
    try:
        message = assert_one_line_error(invoke("train", "status", "--model-dir", model_dir))
    finally:
        holder.communicate("", timeout=60)
    assert "lock is held by training" in message and "Ctrl-C" in message


def test_a_report_while_a_scan_writes_the_faceset_says_what_to_do(hostile_faceset, tmp_path):
    copy = tmp_path / "busy.duckdb"
    copy.write_bytes(hostile_faceset.read_bytes())
    holder = hold("faceset", copy)
    try:
        message = assert_one_line_error(invoke("curate", "report", "--db", copy))
    finally:
        holder.communicate("", timeout=60)
    assert f"it is being written by process {holder.pid}" in message
