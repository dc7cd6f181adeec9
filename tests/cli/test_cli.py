"""The facesmith command line: help everywhere, exit codes, one-line errors and clean machine output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from curate import __version__
from facesmith.cli import app
from tests.cli.helpers import assert_one_line_error, flat, invoke


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- help -----------------------------------------------------------------------------------


def _walk(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, path + (name,))


COMMANDS = list(_walk(typer.main.get_command(app)))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "facesmith" for p, _ in COMMANDS])
def test_every_command_documents_itself_and_its_options(path, command):
    assert (command.help or "").strip(), f"{path} has no description"
    params = command.get_params(command.context_class(command, info_name=command.name))  # with --help
    undocumented = [
        param.opts[0] for param in params
        if param.param_type_name in ("option", "argument") and "--help" not in param.opts
        and not (getattr(param, "help", None) or "").strip()
    ]
    assert not undocumented, f"{' '.join(path)}: no help for {undocumented}"

    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    shown = flat(result.stdout)
    assert flat(command.help.split("\n\n")[0]) in shown
    for param in params:
        if param.param_type_name == "option":
            assert param.opts[0] in shown
            assert flat(param.help) in shown, (param.opts, param.help)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"facesmith {__version__}"


@pytest.mark.parametrize(
    "args",
    [[], ["curate"], ["curate", "scan"], ["sql"], ["curate", "scan", ".", "--format", "xml"],
     ["curate", "scan", ".", "--resolution", "many"], ["no-such-command"], ["sql", "SELECT 1", "--bogus"]],
    ids=["bare", "bare-group", "scan-no-source", "sql-no-query", "bad-format", "bad-int", "unknown-command",
         "unknown-option"],
)
def test_usage_errors_never_exit_zero(args):
    result = invoke(*args)
    assert result.exit_code == 2, (result.exit_code, result.output)


# -- curate scan -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(module_dirs, obama_paths, t1_path) -> Path:
    """obama.jpg (one face) and t1.jpg (six faces)."""
    folder = module_dirs("photos")
    shutil.copy(obama_paths[0], folder / obama_paths[0].name)
    shutil.copy(t1_path, folder / t1_path.name)
    return folder


@pytest.fixture(scope="module")
def scanned(photos, module_dirs) -> tuple[Path, dict]:
    """One real `facesmith curate scan --format json` process; its database serves the sql tests too.

    A subprocess, so anything a native library writes to file descriptor 1 would show up in stdout.
    """
    database = module_dirs("db") / "faceset.duckdb"
    completed = subprocess.run(
        [sys.executable, "-m", "facesmith", "curate", "scan", str(photos), "--db", str(database),
         "--format", "json", "--device", "cpu", "--resolution", "64", "--batch-size", "4"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return database, json.loads(completed.stdout)  # the whole of stdout is one JSON document


def test_scan_json(scanned):
    database, summary = scanned
    assert summary["images_found"] == 2 and summary["images_ok"] == 2 and summary["images_rejected"] == 0
    assert summary["faces"] == 7
    assert "CPUExecutionProvider" in summary["providers"]
    assert summary["database"] == str(database)


def test_rescan_processes_nothing(scanned, photos):
    database, _ = scanned
    result = invoke("curate", "scan", photos, "--db", database, "--format", "json", "--resolution", "64")
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["images_processed"] == 0 and again["images_unchanged"] == 2 and again["faces"] == 0

    table = invoke("curate", "scan", photos, "--db", database, "--resolution", "64")
    assert table.exit_code == 0, table.output
    assert "faces found" in table.stdout and "unchanged" in table.stdout


def test_scan_table(tmp_path, obama_paths):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(obama_paths[0], folder / "obama.jpg")
    database = tmp_path / "[db]" / "faceset.duckdb"  # brackets: Rich must print the path, not read markup
    result = invoke("curate", "scan", folder, "--db", database, "--device", "cpu", "--resolution", "64")
    assert result.exit_code == 0, result.output
    assert re.search(r"faces found\s*│\s*1\b", result.stdout), result.stdout
    assert "[db]" in flat(result.stdout).replace(" ", "")
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_scan_csv(scanned, photos):
    database, _ = scanned
    result = invoke("curate", "scan", photos, "--db", database, "--format", "csv", "--resolution", "64")
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["images_found"] == "2" and row["images_processed"] == "0"


def test_scan_missing_folder(tmp_path):
    missing = tmp_path / "a folder whose name is long enough to push the message past eighty columns"
    message = assert_one_line_error(invoke("curate", "scan", missing, "--db", tmp_path / "f.duckdb"))
    assert message.count("\n") == 1 and message.endswith("\n")
    assert str(missing) in message


def test_scan_folder_name_with_markup_characters(tmp_path):
    missing = tmp_path / "[/red] and [bold]"
    message = assert_one_line_error(invoke("curate", "scan", missing, "--db", tmp_path / "f.duckdb"))
    assert str(missing) in message


def test_scan_insightface_without_models(tmp_path, photos):
    models = tmp_path / "models dir that is empty"
    models.mkdir()
    message = assert_one_line_error(invoke(
        "curate", "scan", photos, "--db", tmp_path / "f.duckdb", "--backend", "insightface", "--models", models,
    ), one_line=False)
    assert str(models) in message
    assert "det_10g.onnx" in message


def test_scan_unknown_backend(tmp_path, photos):
    message = assert_one_line_error(invoke("curate", "scan", photos, "--db", tmp_path / "f.duckdb", "--backend", "magic"))
    assert "unknown backend 'magic'" in message


def test_scan_unknown_face_type(tmp_path, photos):
    result = invoke("curate", "scan", photos, "--db", tmp_path / "f.duckdb", "--face-type", "bogus")
    assert result.exit_code != 0
    message = assert_one_line_error(result)
    assert "unknown face type 'bogus'" in message and "whole_face" in message
    assert message.count("\n") == 1


def test_scan_odd_resolution(tmp_path, photos):
    message = assert_one_line_error(invoke("curate", "scan", photos, "--db", tmp_path / "f.duckdb", "--resolution", "33"))
    assert "resolution" in message


def test_scan_database_under_a_file(tmp_path, photos):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    message = assert_one_line_error(invoke("curate", "scan", photos, "--db", blocker / "f.duckdb"))
    assert "not-a-folder" in message


# -- sql -------------------------------------------------------------------------------------

SELECT_FACES = "SELECT i.path, count(*) AS faces FROM faces f JOIN images i USING (image_id) GROUP BY 1 ORDER BY 1"


def test_sql_json(scanned):
    database, _ = scanned
    result = invoke("sql", "--db", database, SELECT_FACES, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"path": "obama.jpg", "faces": 1}, {"path": "t1.jpg", "faces": 6}]


def test_sql_csv(scanned):
    database, _ = scanned
    result = invoke("sql", "--db", database, SELECT_FACES, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout))) == [["path", "faces"], ["obama.jpg", "1"], ["t1.jpg", "6"]]


def test_sql_table(scanned):
    database, _ = scanned
    result = invoke("sql", "--db", database, SELECT_FACES)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("path" in line and "faces" in line for line in lines)
    assert any("t1.jpg" in line and "6" in line for line in lines)


def test_sql_values_without_a_json_form(scanned):
    database, _ = scanned
    sql = ("SELECT uuid() AS id, INTERVAL 2 DAY AS span, TIME '12:30:00' AS at, 1.5::DECIMAL(4, 2) AS d, "
           "'nan'::DOUBLE AS n, '[x] and [/y]' AS markup, embedding FROM faces LIMIT 1")
    result = invoke("sql", "--db", database, sql, "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert len(row["id"]) == 36 and row["at"] == "12:30:00" and row["d"] == 1.5 and row["n"] is None
    assert row["markup"] == "[x] and [/y]" and len(row["embedding"]) == 128

    table = invoke("sql", "--db", database, "SELECT '[x] and [/y]' AS \"[col]\"")
    assert table.exit_code == 0, table.output
    assert "[x] and [/y]" in table.stdout and "[col]" in table.stdout


@pytest.mark.parametrize("statement", ["DELETE FROM images", "SELECT 1; DROP TABLE faces", "UPDATE EXTENSIONS"])
def test_sql_refuses_writes(scanned, statement):
    database, _ = scanned
    before = sha256(database)
    message = assert_one_line_error(invoke("sql", "--db", database, statement))
    assert "refused" in message
    assert sha256(database) == before
    assert json.loads(invoke("sql", "--db", database, "SELECT count(*) AS n FROM images", "-f", "json").stdout) == [
        {"n": 2}
    ]


def test_sql_missing_database(tmp_path):
    message = assert_one_line_error(invoke("sql", "--db", tmp_path / "absent.duckdb", "SELECT 1"))
    assert "no faceset" in message
    assert not (tmp_path / "absent.duckdb").exists()


def test_sql_syntax_error(scanned):
    database, _ = scanned
    result = invoke("sql", "--db", database, "SELEC 1")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


# -- process-level checks --------------------------------------------------------------------


def test_help_imports_no_heavy_libraries():
    script = (
        "import sys\n"
        "from facesmith.cli import app\n"
        "for args in (['--help'], ['sql', '--help'], ['curate', 'scan', '--help']):\n"
        "    try:\n"
        "        app(args, prog_name='facesmith')\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, (args, stop.code)\n"
        "heavy = [name for name in ('tensorflow', 'torch', 'dlib', 'onnxruntime', 'cv2') if name in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_opencv_major_version_below_5():
    import cv2

    assert int(cv2.__version__.split(".")[0]) < 5, cv2.__version__
