"""Curate decisions on footage: a generated interview clip (speech, a slow head turn, a two-shot, cuts, a zoom) is scanned, analysed and selected, and the outcome is judged as a careful person would.

Photo variants let whole shots be lost to chained near duplicates while every test passed; here the
assertions are on what the user ends up with: how many faces of the main person survive, across
which poses and mouth shapes, and that other people and dst frames are treated as they should be.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pytest

from curate.analysis.duplicates import DuplicateRow, DuplicateSettings, SamePicture, analyze_duplicates, phash_distances
from curate.analysis.identities import analyze_identities
from curate.analysis.selection import SelectionSettings, select_and_export
from curate.faces.expression import expression_features
from curate.faceset import FacesetReader
from curate.scan.pipeline import ScanSettings, scan_folder
from curate.store import set_role
from tests.curate.conftest import load_bgr
from tools.footage import Clip, actor_from_photo, interview

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Footage:
    clip: Clip
    database: Path
    shot_of: dict[str, str]  # face_id -> shot
    rows: list[DuplicateRow]


@pytest.fixture(scope="module")
def footage(module_dirs, analyzer, samples_dir) -> Footage:
    """The interview clip at 25 fps (about 130 frames, ~170 faces), scanned at 128 px and analysed
    with the main identity pinned by a photo from outside the clip's folder."""
    photos = samples_dir / "face_recognition"
    actors = {"main": actor_from_photo("obama", load_bgr(photos / "obama.jpg"), analyzer.locate),
              "main2": actor_from_photo("obama", load_bgr(photos / "obama2.jpg"), analyzer.locate),
              "other": actor_from_photo("biden", load_bgr(photos / "biden.jpg"), analyzer.locate)}
    root = module_dirs("footage")
    clip = interview(actors, root / "frames", fps=25.0, scale=0.6, seed=3)
    database = root / "faceset.duckdb"
    scan_folder(root / "frames", database, ScanSettings(resolution=128, batch_size=16), analyzer=analyzer, role="src")
    analyze_duplicates(database)
    analyze_identities(database, pin_image=photos / "obama3.jpg")  # never part of the clip
    with duckdb.connect(str(database), read_only=True) as connection:
        shot_of = dict(connection.execute(
            "SELECT f.face_id, split_part(i.path, '_', 1) FROM faces f JOIN images i USING (image_id)").fetchall())
        rows = [DuplicateRow.from_row(row) for row in connection.execute("SELECT * FROM duplicates").fetchall()]
    return Footage(clip, database, shot_of, rows)


def _main_faces(reader: FacesetReader) -> list[int]:
    labels = reader.identity_labels()
    return [i for i, face_id in enumerate(reader.faces().face_ids) if labels[face_id][0] == "main"]


def test_every_dropped_frame_matches_the_face_kept_in_its_place(footage):
    settings = DuplicateSettings()
    with FacesetReader(footage.database) as reader:
        table = reader.faces()
    index = table.index()
    same = SamePicture.of(table, settings)
    dropped = [row for row in footage.rows if not row.keep]
    assert len(dropped) >= len(table) // 3  # a static shot at 25 fps is mostly repeats
    yaw_span_of_group: dict[str, list[float]] = {}
    for row in dropped:
        face, kept = index[row.face_id], index[row.group_id]
        assert float(table.embeddings[face] @ table.embeddings[kept]) >= settings.min_cosine, row
        assert int(phash_distances(table.phash[face], table.phash[kept])) <= settings.max_phash_distance, row
        assert same.passes(np.array([face]), np.array([kept]))[0], row
        yaw_span_of_group.setdefault(row.group_id, [table.yaw[kept]]).append(table.yaw[face])
    # no chain: a group never spans more than the pose gate on either side of its keeper
    assert max(np.ptp(yaws) for yaws in yaw_span_of_group.values()) <= 2 * settings.max_pose_delta


def test_a_slow_head_turn_keeps_faces_across_the_whole_turn(footage):
    gate = DuplicateSettings().max_pose_delta
    with FacesetReader(footage.database) as reader:
        table = reader.faces()
        trains = {status.face_id: status.trains for status in reader.statuses(use_selection=False)}
    turn = [i for i, face_id in enumerate(table.face_ids) if footage.shot_of[face_id] == "turn"]
    yaws = table.yaw[turn]
    kept = np.array([trains[table.face_ids[i]] for i in turn])
    assert np.ptp(yaws) >= 25, "the generated turn should read as a turn of 25° or more"
    # both ends of the turn keep a face of their own ...
    assert yaws[kept].min() <= yaws.min() + gate and yaws[kept].max() >= yaws.max() - gate, sorted(yaws[kept])
    assert kept.sum() >= np.ptp(yaws) / (2 * gate)
    assert kept.sum() < len(turn) / 2  # and it is still thinned
    # ... and every pose between has a face that trains within the pose gate (a frontal frame may
    # be kept from another shot of the same person)
    training = np.array([i for i, face_id in enumerate(table.face_ids) if trains[face_id]])
    for i in turn:
        nearest = np.max(np.abs(np.stack([table.yaw[training] - table.yaw[i], table.pitch[training] - table.pitch[i]])), axis=0)
        assert nearest.min() <= gate, (table.yaw[i], table.pitch[i])


def test_speech_keeps_the_mouth_shapes(footage):
    with FacesetReader(footage.database) as reader:
        table = reader.faces()
        trains = {status.face_id: status.trains for status in reader.statuses(use_selection=False)}
    talk = [i for i, face_id in enumerate(table.face_ids) if footage.shot_of[face_id] == "talk"]
    mouth = expression_features(table.landmarks68[talk])[:, 2]
    kept = np.array([trains[table.face_ids[i]] for i in talk])
    assert np.ptp(mouth) >= 0.2  # the speaker's mouth really moves
    assert np.ptp(mouth[kept]) >= 0.7 * np.ptp(mouth) and 3 <= kept.sum() < len(talk) / 2


def test_other_people_are_other_people_and_the_identity_photo_is_not_training_data(footage):
    with FacesetReader(footage.database) as reader:
        labels = reader.identity_labels()
        paths = reader.faces().paths
        main = _main_faces(reader)
        statuses = {status.face_id: status for status in reader.statuses()}
    biden = [face_id for face_id, shot in footage.shot_of.items() if shot == "other"]
    assert biden and all(labels[face_id][0] == "other-person" for face_id in biden)
    assert all(not statuses[face_id].trains for face_id in biden)
    # the two-shot holds one face of each person in every frame
    twoshot = [face_id for face_id, shot in footage.shot_of.items() if shot == "twoshot"]
    assert {labels[face_id][0] for face_id in twoshot} == {"main", "other-person"}
    assert len(main) >= 0.6 * len(paths)
    assert not any("obama3" in path for path in paths)


def test_the_budget_fills_and_spreads_over_pose_and_expression(footage, tmp_path):
    with FacesetReader(footage.database) as reader:
        eligible = reader.trainable_ids(use_selection=False)
        table = reader.faces()
    budget = min(24, len(eligible))
    assert len(eligible) >= 15, "too few faces of the main person survive the analysis"
    summary = select_and_export(footage.database, tmp_path / "selected", SelectionSettings(budget=budget))
    assert summary.selected == budget and not any(w.startswith("asked for") for w in summary.warnings)
    index = table.index()
    with duckdb.connect(str(footage.database), read_only=True) as connection:
        picked = connection.execute("SELECT face_id, expression_bin FROM selection WHERE selected").fetchall()
    picked_yaw = np.array([table.yaw[index[face_id]] for face_id, _ in picked])
    eligible_yaw = np.array([table.yaw[index[face_id]] for face_id in eligible])
    assert np.ptp(picked_yaw) >= 0.8 * np.ptp(eligible_yaw)
    assert len({expression for _, expression in picked}) >= 2
    # asking for more than there is says so, with the numbers and what to loosen
    summary = select_and_export(footage.database, tmp_path / "more", SelectionSettings(budget=len(eligible) + 40))
    assert summary.selected == len(eligible)
    warning = next(w for w in summary.warnings if w.startswith("asked for"))
    assert f"asked for {len(eligible) + 40}, {len(eligible)} eligible" in warning and "dropped as" in warning


def test_a_dst_faceset_keeps_every_frame(footage, tmp_path):
    """The same frames as the dst: duplicates and other people are reported, never dropped."""
    database = tmp_path / "dst.duckdb"
    shutil.copyfile(footage.database, database)
    shutil.copytree(footage.database.parent / "faceset_aligned", tmp_path / "dst_aligned")
    with duckdb.connect(str(database)) as connection:
        connection.execute("UPDATE faces SET aligned_path = replace(aligned_path, 'faceset_aligned/', 'dst_aligned/')")
    set_role(database, "dst")
    summary = analyze_duplicates(database)
    assert summary.faces_to_drop > 0  # reported ...
    with FacesetReader(database) as reader:
        statuses = reader.statuses()
        assert reader.role == "dst"
        faces = len(reader.faces())
    assert len(statuses) == faces and all(status.trains for status in statuses)  # ... never dropped
    with pytest.raises(Exception, match="dst faceset"):
        select_and_export(database, tmp_path / "selected", SelectionSettings(budget=10))
