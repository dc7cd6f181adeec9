"""`curate decide`, `curate decisions` (list, export, apply) and `curate review`'s refusals."""

from __future__ import annotations

import csv
import io
import json
import socket

import duckdb

from curate.faceset import FacesetReader
from tests.cli.helpers import assert_one_line_error, flat, invoke
from tests.curate.test_review_api import copy_faceset


def test_decide_then_list_as_table_json_and_csv(analysed_faceset, tmp_path):
    database = copy_faceset(analysed_faceset, tmp_path / "set")
    with FacesetReader(database) as reader:
        trains = [s.face_id for s in reader.statuses() if s.trains]
    result = invoke("curate", "decide", trains[0], trains[1], "--action", "exclude", "--why", "blinking",
                    "--db", database, "--format", "json")
    assert result.exit_code == 0, result.output
    assert [row["face_id"] for row in json.loads(result.stdout)] == trains[:2]
    assert invoke("curate", "decide", trains[0], "--action", "tag", "--value", "redo", "--db", database).exit_code == 0
    listed = json.loads(invoke("curate", "decisions", "--db", database, "--format", "json").stdout)
    assert [(d["face_id"], d["action"], d["why"]) for d in listed] == [
        (trains[0], "exclude", "blinking"), (trains[1], "exclude", "blinking"), (trains[0], "tag", None)]
    rows = list(csv.DictReader(io.StringIO(invoke("curate", "decisions", "--db", database, "--format", "csv").stdout)))
    assert [row["action"] for row in rows] == ["exclude", "exclude", "tag"] and rows[2]["value"] == "redo"
    table = invoke("curate", "decisions", "--db", database)
    assert table.exit_code == 0 and "blinking" in flat(table.stdout)
    with FacesetReader(database) as reader:
        statuses = {s.face_id: s for s in reader.statuses()}
    assert not statuses[trains[0]].trains and not statuses[trains[1]].trains


def test_export_and_apply_to_another_faceset(analysed_faceset, tmp_path):
    source = copy_faceset(analysed_faceset, tmp_path / "a")
    target = copy_faceset(analysed_faceset, tmp_path / "b")
    with FacesetReader(source) as reader:
        face_ids = [s.face_id for s in reader.statuses() if s.trains][:2]
    assert invoke("curate", "decide", *face_ids, "--action", "exclude", "--db", source).exit_code == 0
    exported = tmp_path / "decisions.json"
    result = invoke("curate", "decisions", "--db", source, "--export", exported, "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["exported"] == 2
    applied = invoke("curate", "decisions", "--db", target, "--apply", exported, "--format", "json")
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout) == {"read": 2, "applied": 2, "unmatched": 0}
    with FacesetReader(target) as reader:
        assert {r.face_id for r in reader.decision_log()} == set(face_ids)
        assert not any(s.trains for s in reader.statuses() if s.face_id in face_ids)


def test_decision_mistakes_are_one_line_errors(analysed_faceset, tmp_path):
    database = copy_faceset(analysed_faceset, tmp_path / "set")
    assert "no face" in assert_one_line_error(invoke("curate", "decide", "nope_00", "--action", "exclude", "--db", database))
    assert assert_one_line_error(invoke("curate", "decide", "x", "--action", "label", "--value", "bob", "--db", database))
    assert "not both" in assert_one_line_error(invoke("curate", "decisions", "--db", database, "--export", tmp_path / "a.json",
                                                      "--apply", tmp_path / "b.json"))
    (tmp_path / "junk.json").write_text("{not json")
    assert "not a facesmith decisions file" in assert_one_line_error(
        invoke("curate", "decisions", "--db", database, "--apply", tmp_path / "junk.json"))
    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0


def test_review_refuses_a_missing_faceset_and_a_taken_port(analysed_faceset, tmp_path):
    assert "no faceset" in assert_one_line_error(invoke("curate", "review", "--db", tmp_path / "none.duckdb", "--no-browser"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = assert_one_line_error(invoke("curate", "review", "--db", analysed_faceset, "--no-browser", "--port", port))
    assert f"port {port}" in message and "in use" in message


def test_review_help_names_every_option():
    text = flat(invoke("curate", "review", "--help").stdout)
    for option in ("--db", "--host", "--port", "--no-browser", "--cache"):
        assert option in text
    assert "token" in text
