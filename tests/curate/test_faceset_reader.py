"""The faceset reader on a real analysed faceset: which faces train and why not, roles, and a person's decisions honoured by every stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from curate.analysis.duplicates import analyze_duplicates
from curate.analysis.selection import SelectionSettings, select_and_export
from curate.decisions import Decision, DecisionError, apply_decisions, export_decisions, list_decisions, record_decisions
from curate.errors import FacesmithError
from curate.faceset import QUALITY_GATES, FaceDecisions, FacesetReader, fold_decisions
from curate.store import set_role
from train.faceset_data import read_curated_faces


@pytest.fixture()
def faceset(analysed_faceset, tmp_path) -> Path:
    """A private copy of the session's analysed faceset (three Obama photos and a small copy of
    one, Biden, the six people of t1.jpg), with its crops beside it."""
    database = tmp_path / "faceset.duckdb"
    shutil.copyfile(analysed_faceset, database)
    shutil.copytree(analysed_faceset.parent / "faceset_aligned", tmp_path / "faceset_aligned")
    return database


def _by_path(database: Path) -> dict[str, str]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return dict(connection.execute(
            "SELECT i.path, f.face_id FROM faces f JOIN images i USING (image_id) WHERE f.face_index = 0").fetchall())


def test_statuses_say_why_each_src_face_does_not_train(faceset):
    with FacesetReader(faceset) as reader:
        statuses = {status.face_id: status for status in reader.statuses(use_selection=False)}
        labels = reader.identity_labels()
        dropped = reader.dropped_duplicates()
        bad = reader.bad_checks()
        assert reader.role == "src" and reader.info().has_selection
    assert len(statuses) == len(labels) >= 11
    for face_id, status in statuses.items():
        expected_out = labels[face_id][0] != "main" or face_id in dropped or face_id in bad
        assert status.trains is not expected_out, (face_id, status)
        kinds = {reason.kind for reason in status.reasons}
        assert ("duplicate" in kinds) == (face_id in dropped)
        assert (kinds & {"other-person", "outlier"} != set()) == (labels[face_id][0] != "main")
        assert ("quality" in kinds) == (face_id in bad)
    paths = _by_path(faceset)
    biden = statuses[paths["biden.jpg"]]
    assert not biden.trains and biden.reason.startswith("other person (distance")
    # with the selection: selected faces only
    with FacesetReader(faceset) as reader:
        picked = set(reader.selected())
        training = set(reader.trainable_ids())
    assert training == picked and picked <= {face_id for face_id, s in statuses.items() if s.trains}


def test_the_statuses_of_some_faces_are_their_rows_of_the_whole_answer(faceset):
    """The review app asks for the decided faces only after each decision: the same rows, with the
    hand decisions, duplicates, labels, verdicts and the selection all still applied."""
    with FacesetReader(faceset) as reader:
        ids = list(reader.faces().face_ids)
    record_decisions(faceset, [Decision(ids[0], "exclude", why="test"), Decision(ids[1], "include"),
                               Decision(ids[2], "label", value="other-person")], who="test")
    with FacesetReader(faceset) as reader:
        for use_selection in (True, False):
            whole = {status.face_id: status for status in reader.statuses(use_selection)}
            kinds = {reason.kind for status in whole.values() for reason in status.reasons}
            assert {"decision", "duplicate", "other-person"} <= kinds  # the per-face sources are exercised
            some = ids[::3] + ids[:3] + ["no-such-face"]
            part = reader.statuses(use_selection, face_ids=some)
            assert [status.face_id for status in part] == sorted(set(some) - {"no-such-face"})
            assert all(status == whole[status.face_id] for status in part)
            assert reader.statuses(use_selection, face_ids=[]) == []
        as_dst = reader.statuses(as_role="dst", face_ids=ids[:4])
        assert [status.trains for status in as_dst] == [False, True, True, True]  # only the exclusion holds


def test_a_dst_faceset_trains_on_every_face(faceset):
    set_role(faceset, "dst")
    with FacesetReader(faceset) as reader:
        assert reader.role == "dst" and reader.info().role == "dst"
        assert reader.trainable_ids() == reader.faces().face_ids
    with pytest.raises(FacesmithError, match="role is src .* or dst"):
        set_role(faceset, "source")


def test_decisions_win_over_analysis_everywhere(faceset, tmp_path):
    paths = _by_path(faceset)
    with FacesetReader(faceset) as reader:
        eligible = reader.trainable_ids(use_selection=False)
    excluded, biden = eligible[0], paths["biden.jpg"]
    rows = record_decisions(faceset, [
        Decision(excluded, "exclude", why="eyes half closed"),
        Decision(biden, "include", why="a stand-in we want"),
        Decision(biden, "tag", "stand-in"),
    ], who="tester")
    assert [row.decision_id for row in rows] == [1, 2, 3] and rows[0].content_hash and rows[0].who == "tester"
    with FacesetReader(faceset) as reader:
        status = {s.face_id: s for s in reader.statuses(use_selection=False)}
        decided = reader.decisions()
    assert not status[excluded].trains and status[excluded].decided
    assert status[excluded].reasons[0].text == "excluded by hand by tester: eyes half closed"
    assert status[biden].trains and status[biden].decided and decided[biden].tags == ("stand-in",)
    # selection, training and export all follow
    select_and_export(faceset, tmp_path / "selected", SelectionSettings())
    with duckdb.connect(str(faceset), read_only=True) as connection:
        chosen = dict(connection.execute("SELECT face_id, selected FROM selection").fetchall())
        reason = connection.execute("SELECT reason FROM selection WHERE face_id = ?", [excluded]).fetchone()[0]
    assert chosen[biden] is True and chosen[excluded] is False and reason.startswith("excluded by hand")
    trained = {face.face_id for face in read_curated_faces(faceset)}
    assert biden in trained and excluded not in trained
    # the latest decision wins; reset goes back to automatic
    record_decisions(faceset, [Decision(excluded, "include"), Decision(biden, "reset")], who="tester")
    with FacesetReader(faceset) as reader:
        status = {s.face_id: s for s in reader.statuses(use_selection=False)}
    assert status[excluded].trains and not status[biden].trains
    assert [row.action for row in list_decisions(faceset)] == ["exclude", "include", "tag", "include", "reset"]


def test_a_hand_picked_keeper_keeps_its_group(faceset):
    with duckdb.connect(str(faceset), read_only=True) as connection:
        kept, dropped = connection.execute(
            "SELECT group_id, face_id FROM duplicates WHERE NOT keep ORDER BY face_id LIMIT 1").fetchone()
    record_decisions(faceset, [Decision(dropped, "keeper", why="the better expression")], who="tester")
    summary = analyze_duplicates(faceset)
    with duckdb.connect(str(faceset), read_only=True) as connection:
        rows = dict(connection.execute("SELECT face_id, keep FROM duplicates").fetchall())
        reason = connection.execute("SELECT reason FROM duplicates WHERE face_id = ?", [kept]).fetchone()[0]
    assert rows[dropped] is True and rows[kept] is False and summary.keepers_by_hand == 1
    assert "chosen by hand" in reason


def test_label_decisions_override_identity(faceset):
    paths = _by_path(faceset)
    obama = paths["obama.jpg"]
    record_decisions(faceset, [Decision(obama, "label", "other-person")], who="tester")
    with FacesetReader(faceset) as reader:
        status = {s.face_id: s for s in reader.statuses(use_selection=False)}
    assert not status[obama].trains and status[obama].reasons[0].text == "other person (labelled by hand)"


def test_decisions_move_to_another_faceset_by_content(faceset, tmp_path):
    paths = _by_path(faceset)
    record_decisions(faceset, [Decision(paths["obama2.jpg"], "exclude", why="blurred by hand")], who="tester")
    out = tmp_path / "decisions.json"
    assert export_decisions(faceset, out) == 1 and json.loads(out.read_text())["decisions"][0]["action"] == "exclude"
    # the same images under other face ids: rename every face id in a copy
    other = tmp_path / "other.duckdb"
    shutil.copyfile(faceset, other)
    with duckdb.connect(str(other)) as connection:
        connection.execute("DELETE FROM decisions")
        for table in ("face_checks", "duplicates", "identities", "selection"):
            connection.execute(f"UPDATE {table} SET face_id = 'x' || face_id")
        connection.execute("UPDATE faces SET face_id = 'x' || face_id")
    summary = apply_decisions(out, other, who="importer")
    assert (summary.read, summary.applied, summary.unmatched) == (1, 1, 0)
    with FacesetReader(other) as reader:
        decided = reader.decisions()
        log = reader.decision_log()
    assert decided == {"x" + paths["obama2.jpg"]: FaceDecisions(inclusion="exclude", inclusion_why=log[0].why,
                                                                 inclusion_who="importer")}
    assert "blurred by hand" in log[0].why and "decided by tester" in log[0].why


def test_bad_decisions_are_refused(faceset, tmp_path):
    with pytest.raises(DecisionError, match="unknown decision"):
        Decision("f", "delete")
    with pytest.raises(DecisionError, match="labelled"):
        Decision("f", "label", "boss")
    with pytest.raises(DecisionError, match="no face nope"):
        record_decisions(faceset, [Decision("nope", "exclude")])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DecisionError, match="not a facesmith decisions file"):
        apply_decisions(tmp_path / "bad.json", faceset)


def test_fold_keeps_the_latest_and_the_tags():
    from datetime import datetime, timezone

    from curate.faceset import DecisionRow

    now = datetime.now(timezone.utc)
    rows = [DecisionRow(n, "f", None, 0, action, value, "me", now, None) for n, (action, value) in enumerate([
        ("exclude", None), ("tag", "blink"), ("tag", "dark"), ("untag", "blink"), ("include", None),
        ("label", "main"), ("keeper", None), ("keeper", "off")], start=1)]
    assert fold_decisions(reversed(rows))["f"] == FaceDecisions(inclusion="include", inclusion_who="me", label="main",
                                                                keeper=False, tags=("dark",))
    assert QUALITY_GATES[:3] == ("brightness", "shadows_clipped", "highlights_clipped")
