"""Selection: coverage-first greedy on synthetic tables; export, manifest, exclusions and determinism on real faces."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest

from curate.errors import StoreError
from curate.analysis.selection import (
    MANIFEST_NAME, SelectionError, SelectionRow, SelectionSettings, exclusions, reason_category,
    select_and_export, select_faces,
)
from curate.faceset import FacesetReader
from curate.store import FacesetStore
from tests.curate.test_coverage import synthetic_table


def by_id(rows: list[SelectionRow]) -> dict[str, SelectionRow]:
    return {row.face_id: row for row in rows}


def cell_of(row: SelectionRow) -> tuple:
    return (row.yaw_bin, row.pitch_bin, row.light_bin)


@pytest.fixture()
def spread():
    """60 faces over 12 cells (4 poses × 3 lighting bins), random sharpness, cells of 2..8 faces."""
    rng = np.random.default_rng(7)
    yaw, pitch, lr, sharpness = [], [], [], []
    poses = [(-30, 0), (-15, 0), (0, 0), (15, -15)]
    sizes = iter([2, 3, 4, 5, 6, 7, 8, 5, 6, 5, 5, 4])
    for yaw_edge, pitch_edge in poses:
        for light in (-0.3, 0.0, 0.3):
            for _ in range(next(sizes)):
                yaw.append(yaw_edge + rng.uniform(0.5, 14.5))
                pitch.append(pitch_edge + rng.uniform(0.5, 14.5))
                lr.append(light)
                sharpness.append(rng.uniform(50, 1500))
    return synthetic_table(yaw, pitch, sharpness=sharpness, lighting_lr=lr)


# -- the greedy, on synthetic tables ---------------------------------------------------------------


def test_budget_is_respected_and_pick_order_is_dense(spread):
    rows = select_faces(spread, {}, SelectionSettings(budget=7))
    picked = sorted(row.pick_order for row in rows if row.selected)
    assert picked == list(range(1, 8))
    assert all(row.pick_order is None for row in rows if not row.selected)
    assert [row.face_id for row in rows] == spread.face_ids


def test_budget_of_the_cell_count_gives_each_cell_its_sharpest_face(spread):
    rows = select_faces(spread, {}, SelectionSettings(budget=12))
    cells = Counter(cell_of(row) for row in rows)
    assert len(cells) == 12
    chosen = [row for row in rows if row.selected]
    assert Counter(cell_of(row) for row in chosen) == Counter(dict.fromkeys(cells, 1))
    sharpness = dict(zip(spread.face_ids, spread.sharpness))
    for row in chosen:
        peers = [sharpness[other.face_id] for other in rows if cell_of(other) == cell_of(row)]
        assert sharpness[row.face_id] == max(peers)


def test_without_budget_every_eligible_face_is_ordered_round_robin(spread):
    excluded = {spread.face_ids[0]: "duplicate of face0001 (near)", spread.face_ids[10]: "other person"}
    rows = select_faces(spread, excluded, SelectionSettings())
    chosen = sorted((row for row in rows if row.selected), key=lambda row: row.pick_order)
    assert len(chosen) == 58 and [row.pick_order for row in chosen] == list(range(1, 59))
    # Round r (picks after every cell with more than r faces got r) never precedes round r − 1.
    seen: Counter = Counter()
    rounds = []
    for row in chosen:
        rounds.append(seen[cell_of(row)])
        seen[cell_of(row)] += 1
    assert rounds == sorted(rounds)
    # Inside a cell, picks go sharpest first.
    sharpness = dict(zip(spread.face_ids, spread.sharpness))
    for key in seen:
        values = [sharpness[row.face_id] for row in chosen if cell_of(row) == key]
        assert values == sorted(values, reverse=True)
    rows_by_id = by_id(rows)
    assert rows_by_id[spread.face_ids[0]].reason == "duplicate of face0001 (near)"
    assert not rows_by_id[spread.face_ids[10]].selected and rows_by_id[spread.face_ids[10]].reason == "other person"


def test_excluded_faces_are_never_chosen_even_when_sharpest():
    table = synthetic_table([1, 2, 3, 40], [1, 1, 1, 1], sharpness=[9000, 100, 50, 9999])
    excluded = {"face0000": "blurry (sharpness bad)", "face0003": "outlier (distance 0.90 from the main identity)"}
    rows = by_id(select_faces(table, excluded, SelectionSettings(budget=2)))
    assert {face for face, row in rows.items() if row.selected} == {"face0001", "face0002"}
    assert rows["face0001"].pick_order == 1 and rows["face0002"].pick_order == 2
    assert rows["face0000"].reason == excluded["face0000"] and rows["face0003"].reason == excluded["face0003"]


def test_poses_are_spread_before_lighting_variants():
    # Pose A has three lighting cells with sharp faces; pose B one blurrier face.
    table = synthetic_table(
        yaw=[5, 5, 5, 40], pitch=[5, 5, 5, 5], sharpness=[900, 800, 700, 100], lighting_lr=[0.0, -0.3, 0.3, 0.0])
    rows = by_id(select_faces(table, {}, SelectionSettings(budget=2)))
    assert rows["face0000"].pick_order == 1 and rows["face0003"].pick_order == 2
    assert rows["face0001"].reason.startswith("over budget: the budget of 2 ran out before cell "
                                              "(yaw 0° to 15°, pitch 0° to 15°, light left)")
    # Without lighting the three pose-A faces share one cell.
    rows = by_id(select_faces(table, {}, SelectionSettings(budget=3, lighting=False)))
    assert [rows[f].pick_order for f in ("face0000", "face0003", "face0001")] == [1, 2, 3]
    assert rows["face0002"].reason == ("over budget: cell (yaw 0° to 15°, pitch 0° to 15°) already has "
                                       "2 faces sharper than this")
    assert rows["face0002"].light_bin == "right"  # stored even when not used for the cells


def test_ties_break_by_face_id_and_input_order_does_not_matter(spread):
    table = synthetic_table([1, 1, 1], [1, 1, 1], sharpness=[300, 300, 300], face_ids=["b", "c", "a"])
    rows = by_id(select_faces(table, {}, SelectionSettings(budget=2)))
    assert (rows["a"].pick_order, rows["b"].pick_order, rows["c"].selected) == (1, 2, False)
    assert rows["c"].reason == "over budget: cell (yaw 0° to 15°, pitch 0° to 15°, light even) already has " \
                               "2 faces sharper than this"

    first = by_id(select_faces(spread, {}, SelectionSettings(budget=20)))
    permutation = np.random.default_rng(3).permutation(len(spread))
    shuffled = synthetic_table(
        spread.yaw[permutation], spread.pitch[permutation], spread.sharpness[permutation],
        spread.lighting_lr[permutation], spread.lighting_tb[permutation],
        [spread.face_ids[i] for i in permutation])
    second = by_id(select_faces(shuffled, {}, SelectionSettings(budget=20)))
    assert first == second
    assert select_faces(spread, {}, SelectionSettings(budget=20)) == select_faces(spread, {}, SelectionSettings(budget=20))


def test_faces_without_pose_or_sharpness_are_still_placed():
    table = synthetic_table([np.nan, 5], [0, 0], sharpness=[np.nan, 100])
    rows = by_id(select_faces(table, {}, SelectionSettings()))
    assert rows["face0000"].selected and rows["face0000"].yaw_bin is None
    assert rows["face0001"].pick_order == 1  # a real sharpness beats an unknown one


def test_settings_are_validated():
    for bad in (dict(budget=0), dict(budget=-3), dict(yaw_bin=0), dict(pitch_bin=2.5), dict(light_threshold=1.5),
                dict(exclude_bad=("sharpness", "nonsense"))):
        with pytest.raises(SelectionError):
            SelectionSettings(**bad)
    assert SelectionSettings(exclude_bad=["face_size"]).exclude_bad == ("face_size",)


def test_reason_categories():
    assert reason_category("selected") == "selected"
    assert reason_category("duplicate of abc (near); other person (distance 0.70 from the main identity)") == "duplicate"
    assert reason_category("blurry (sharpness bad)") == "blurry"
    assert reason_category("over budget: cell (…) already has 2 faces sharper than this") == "over budget"


# -- export, on real faces -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scanned(mirrored_faceset) -> Path:
    """The folder of the shared mirrored faceset: database and 128 px crops."""
    return mirrored_faceset.parent


@pytest.fixture()
def faceset(scanned, tmp_path) -> Path:
    """A private copy of the scanned faceset (tests write analysis tables and selections into it)."""
    shutil.copytree(scanned, tmp_path / "set")
    return tmp_path / "set" / "faceset.duckdb"


def query(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def face_of(database: Path, path: str, index: int = 0) -> str:
    return query(database, f"SELECT face_id FROM faces JOIN images USING (image_id) "
                           f"WHERE path = '{path}' AND face_index = {index}")[0][0]


def test_export_copies_crops_writes_manifest_and_records_rows(faceset, tmp_path):
    out = tmp_path / "selected"
    summary = select_and_export(faceset, out, SelectionSettings(budget=8))
    faces = query(faceset, "SELECT count(*) FROM faces")[0][0]
    assert summary.faces == faces and summary.selected == 8 and summary.files_written == 8
    assert summary.eligible + sum(n for reason, n in summary.excluded.items() if reason != "over budget") == faces
    assert summary.excluded["over budget"] == summary.eligible - 8
    assert summary.cells_selected == 8 <= summary.cells_eligible  # 8 picks, 8 distinct cells
    assert any("no duplicates analysis" in warning for warning in summary.warnings)

    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["tool"] == "facesmith" and manifest["kind"] == "selection"
    assert manifest["settings"]["budget"] == 8 and manifest["counts"]["selected"] == 8
    entries = manifest["faces"]
    assert [entry["pick_order"] for entry in entries] == list(range(1, 9))
    stored = {row[0]: row for row in query(faceset, "SELECT * FROM selection")}
    assert len(stored) == faces
    aligned = dict(query(faceset, "SELECT face_id, aligned_path FROM faces"))
    for entry in entries:
        assert entry["file"] == f"{entry['pick_order']:05d}_{entry['face_id']}.jpg"
        assert (out / entry["file"]).read_bytes() == (faceset.parent / aligned[entry["face_id"]]).read_bytes()
        assert entry["source_path"].endswith(".png") and Path(entry["source_root"]).is_dir()
        assert entry["light_bin"] in ("even", "left", "right", "top", "bottom")
        assert entry["yaw_bin"] <= entry["yaw"] < entry["yaw_bin"] + 15
        assert entry["pitch_bin"] <= entry["pitch"] < entry["pitch_bin"] + 15
        assert entry["sharpness"] > 0
        row = stored[entry["face_id"]]
        assert row == (entry["face_id"], True, entry["pick_order"], entry["yaw_bin"], entry["pitch_bin"],
                       entry["light_bin"], "selected", entry["expression_bin"])
    assert sorted(path.name for path in out.iterdir()) == sorted([MANIFEST_NAME] + [e["file"] for e in entries])
    # The sharpest faces were not simply taken: 8 different cells.
    assert len({(e["yaw_bin"], e["pitch_bin"], e["light_bin"], e["expression_bin"]) for e in entries}) == 8
    analyses = query(faceset, "SELECT kind, parameters->>'budget' FROM analyses WHERE kind = 'selection'")
    assert analyses == [("selection", "8")]


def test_selection_is_deterministic(faceset, tmp_path):
    settings = SelectionSettings(budget=10)
    select_and_export(faceset, tmp_path / "one", settings)
    rows_one = query(faceset, "SELECT * FROM selection ORDER BY face_id")
    select_and_export(faceset, tmp_path / "one", settings)  # again, into its own earlier folder
    select_and_export(faceset, tmp_path / "two", settings)
    assert query(faceset, "SELECT * FROM selection ORDER BY face_id") == rows_one
    manifest = (tmp_path / "one" / MANIFEST_NAME).read_bytes()
    assert manifest == (tmp_path / "two" / MANIFEST_NAME).read_bytes()
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())


def test_analysis_exclusions_are_honoured(faceset, tmp_path):
    obama, obama_mirror = face_of(faceset, "obama.png"), face_of(faceset, "obama_mirror.png")
    biden = face_of(faceset, "biden.png")
    astronaut = face_of(faceset, "astronaut.png")
    with FacesetStore(faceset) as store:
        store.replace_analysis("duplicates", "duplicates", [
            (obama, obama, "near", True, 1.0, 0, "kept: sharpest of its group", 0.0, 0.0, 0.0),
            (obama_mirror, obama, "near", False, 0.97, 30, "near duplicate of the kept face", 1.0, 0.5, 0.01),
        ], {"test": True})
        store.replace_analysis("identities", "identities", [
            (biden, 1, "other-person", 0.82, "cluster 1, not the main identity", True),
            (astronaut, -1, "outlier", 0.95, "no cluster", False),
        ], {"test": True})
    summary = select_and_export(faceset, tmp_path / "selected", SelectionSettings())
    rows = {row[0]: row for row in query(faceset, "SELECT face_id, selected, reason FROM selection")}
    assert rows[obama][1] is True
    assert rows[obama_mirror][1:] == (False, f"duplicate of {obama} (near)")
    assert rows[biden][1] is False and rows[biden][2].startswith("other person (distance 0.82")
    assert rows[astronaut][1] is False and rows[astronaut][2].startswith("outlier (distance 0.95")
    # Faces with a 'bad' quality-gate verdict say so (einstein.jpg holds a tiny blurry second face).
    bad = dict(query(faceset, "SELECT face_id, list(measure ORDER BY measure) FROM face_checks "
                              "WHERE verdict = 'bad' AND measure IN ('sharpness', 'face_size', 'brightness', "
                              "'shadows_clipped', 'highlights_clipped', 'frame_edge', 'alignment') GROUP BY ALL"))
    assert bad, "the samples should hold at least one face with a bad sharpness or size verdict"
    for face_id, measures in bad.items():
        assert rows[face_id][1] is False
        if "sharpness" in measures:
            assert "blurry (sharpness bad)" in rows[face_id][2]
        if "face_size" in measures:
            assert "too small (face_size bad)" in rows[face_id][2]
    assert summary.excluded["duplicate"] == 1 and summary.excluded["other person"] == 1
    assert summary.excluded["outlier"] == 1
    assert "over budget" not in summary.excluded  # no budget: every eligible face is chosen
    assert summary.selected == summary.eligible
    assert not any("analysis yet" in warning for warning in summary.warnings)
    # The reader without quality gates leaves out exactly the analysed faces.
    with FacesetReader(faceset, quality_gates=()) as reader:
        left_out = exclusions(reader.statuses(use_selection=False))
    assert set(left_out) == {obama_mirror, biden, astronaut}


def test_rerun_with_a_smaller_budget_removes_dropped_files(faceset, tmp_path):
    out = tmp_path / "selected"
    select_and_export(faceset, out, SelectionSettings(budget=12))
    summary = select_and_export(faceset, out, SelectionSettings(budget=5))
    assert summary.files_removed == 7
    files = sorted(path.name for path in out.iterdir())
    assert len(files) == 6 and files[-1] == MANIFEST_NAME and files[0].startswith("00001_")


def test_refuses_a_folder_with_other_files_and_a_missing_database(faceset, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(SelectionError, match="holds files no earlier 'curate select' wrote"):
        select_and_export(faceset, out, SelectionSettings(budget=3))
    assert (out / "holiday.jpg").read_bytes() == b"not ours"
    with pytest.raises(StoreError, match="no faceset"):
        select_and_export(tmp_path / "missing.duckdb", tmp_path / "x", SelectionSettings())
    assert not (tmp_path / "missing.duckdb").exists()


def test_missing_crop_is_a_reason_not_a_crash(faceset, tmp_path):
    victim = face_of(faceset, "obama2.png")
    aligned = query(faceset, f"SELECT aligned_path FROM faces WHERE face_id = '{victim}'")[0][0]
    (faceset.parent / aligned).unlink()
    summary = select_and_export(faceset, tmp_path / "selected", SelectionSettings())
    reason = query(faceset, f"SELECT reason FROM selection WHERE face_id = '{victim}'")[0][0]
    assert reason.startswith("aligned crop missing: ") and summary.excluded["aligned crop missing"] == 1


def test_a_crafted_manifest_never_removes_files_outside_the_folder(faceset, tmp_path):
    out = tmp_path / "selected"
    out.mkdir()
    beside, elsewhere = tmp_path / "victim.txt", tmp_path / "elsewhere" / "victim.txt"
    elsewhere.parent.mkdir()
    for victim in (beside, elsewhere):
        victim.write_text("keep me")
    listed = ["../victim.txt", str(elsewhere), str(out / "00001_x.jpg"), "sub/00002_x.jpg", None, 7]
    (out / MANIFEST_NAME).write_text(json.dumps({
        "tool": "facesmith", "kind": "selection", "faces": [{"file": name} for name in listed]}))
    summary = select_and_export(faceset, out, SelectionSettings(budget=3))
    assert summary.files_removed == 0 and summary.selected == 3
    assert beside.read_text() == "keep me" and elsewhere.read_text() == "keep me"
    assert len(list(out.iterdir())) == 4


def test_an_interrupted_selection_runs_again_into_its_folder(faceset, tmp_path):
    settings = SelectionSettings(budget=6)
    select_and_export(faceset, tmp_path / "whole", settings)
    expected = {path.name: path.read_bytes() for path in (tmp_path / "whole").iterdir()}
    # Killed after copying some crops, before the manifest: the files carry this faceset's
    # face ids, one of them under a pick order this run will not give it.
    out = tmp_path / "interrupted"
    out.mkdir()
    copied = sorted(name for name in expected if name != MANIFEST_NAME)[:3]
    for name in copied:
        (out / name).write_bytes(expected[name])
    other_face = copied[0].split("_", 1)[1]
    (out / f"00099_{other_face}").write_bytes(b"from a run with a larger budget")
    summary = select_and_export(faceset, out, settings)
    assert summary.files_removed == 1
    assert {path.name: path.read_bytes() for path in out.iterdir()} == expected
    # A name of the right shape for a face of no faceset of ours is still a stranger.
    (out / "00001_0123456789abcdef_00.jpg").write_bytes(b"someone else's")
    with pytest.raises(SelectionError, match="holds files no earlier"):
        select_and_export(faceset, out, settings)


def test_a_leftover_temporary_file_does_not_block_the_export(faceset, tmp_path):
    out = tmp_path / "selected"
    select_and_export(faceset, out, SelectionSettings(budget=2))
    names = sorted(path.name for path in out.iterdir())
    # What a killed run (or a second writer) leaves at a fixed temporary name, even a folder.
    for name in names:
        (out / f".{name}.tmp").mkdir()
    summary = select_and_export(faceset, out, SelectionSettings(budget=2))
    assert summary.files_written == 2
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == names
