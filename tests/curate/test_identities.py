"""Identity clustering on real photos: Obama is the main identity, Biden and the t1.jpg people are not."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pytest

from curate.errors import FacesmithError, StoreError
from curate.faceset import load_faces, open_faceset
from curate.analysis.identities import (
    DISTANCE_THRESHOLDS,
    IdentityRow,
    IdentitySettings,
    analyze_identities,
    cluster_embeddings,
    find_identities,
)
from curate.scan.pipeline import ScanSettings, scan_folder


@dataclass(frozen=True)
class People:
    root: Path
    database: Path


@pytest.fixture(scope="module")
def people(module_dirs, analyzer, obama_paths, biden_path, t1_path) -> People:
    """Three Obama photos, biden.jpg (cut from the same photo as obama3.jpg) and t1.jpg (six
    people), scanned at 128 px: ten faces."""
    root = module_dirs("identities") / "photos"
    (root / "others").mkdir(parents=True)
    for path in obama_paths:
        shutil.copyfile(path, root / path.name)
    shutil.copyfile(biden_path, root / "others" / biden_path.name)
    shutil.copyfile(t1_path, root / "others" / t1_path.name)
    database = root.parent / "faceset.duckdb"
    scan_folder(root, database, ScanSettings(resolution=128, batch_size=8), analyzer=analyzer)
    return People(root, database)


def _rows(database: Path) -> dict[str, tuple[IdentityRow, str]]:
    """image path (with the face index for t1.jpg) -> its identity row."""
    with duckdb.connect(str(database), read_only=True) as connection:
        found = connection.execute("""
            SELECT d.*, i.path, f.face_index FROM identities d JOIN faces f USING (face_id)
            JOIN images i USING (image_id)""").fetchall()
    return {f"{path}#{index}": IdentityRow.from_row(row[:5]) for *row, path, index in found}


def test_thresholds_sit_in_the_gap_measured_on_the_samples(people):
    """SFace: the same person's photos must be closer than the embedded threshold, other people
    farther, with room to spare on both sides."""
    with open_faceset(people.database) as connection:
        table = load_faces(connection)
    is_obama = np.array([not p.startswith("others/") for p in table.paths])
    cosine = table.embeddings @ table.embeddings.T
    same = cosine[np.ix_(is_obama, is_obama)][np.triu_indices(int(is_obama.sum()), k=1)]
    different = cosine[np.ix_(is_obama, ~is_obama)].ravel()
    threshold = DISTANCE_THRESHOLDS["embedded"]
    assert 1.0 - same.min() < threshold - 0.15, same
    assert 1.0 - different.max() > threshold + 0.05, different


def test_obama_is_main_and_everyone_else_is_flagged(people):
    summary = analyze_identities(people.database)
    rows = _rows(people.database)
    assert len(rows) == summary.faces == 10  # one row per face
    for key, row in rows.items():
        if key.startswith("others/"):
            # Biden and the t1.jpg people are reliable faces of other people, each seen once
            assert row.label == "other-person" and row.reliable, (key, row)
            assert row.distance > 0.5 and row.reason.startswith("another person")
        else:
            assert (row.label, row.cluster) == ("main", 0), (key, row)
            assert row.distance < 0.3 and row.reason.startswith("main identity")
    assert summary.main_faces == 3 and summary.pinned is None and not summary.sampled
    assert summary.distance_threshold == DISTANCE_THRESHOLDS["embedded"]
    with duckdb.connect(str(people.database), read_only=True) as connection:
        used = connection.execute("SELECT parameters->>'distance_threshold_used' FROM analyses "
                                  "WHERE kind = 'identities'").fetchone()[0]
    assert float(used) == DISTANCE_THRESHOLDS["embedded"]


def test_pinning_biden_makes_him_the_main_identity(people, monkeypatch):
    summary = analyze_identities(people.database, pin_image="others/biden.jpg")
    rows = _rows(people.database)
    assert summary.pinned == "others/biden.jpg" and summary.main_faces == 1
    assert rows["others/biden.jpg#0"].label == "main"
    assert "pinned identity (others/biden.jpg)" in rows["others/biden.jpg#0"].reason
    for key, row in rows.items():
        if key != "others/biden.jpg#0":
            assert row.label != "main" and row.distance > 0.5, (key, row)
    # the three Obama photos now form another person's cluster
    obama = [row for key, row in rows.items() if not key.startswith("others/")]
    assert {(row.label, row.cluster) for row in obama} == {("other-person", 1)}

    # an absolute path inside the scanned folder, or one relative to the working directory,
    # pins the same face
    analyze_identities(people.database, pin_image=people.root / "others" / "biden.jpg")
    assert _rows(people.database) == rows
    monkeypatch.chdir(people.root.parent)
    analyze_identities(people.database, pin_image=Path(people.root.name) / "others" / "biden.jpg")
    assert _rows(people.database) == rows


def test_pinning_by_embedding(people):
    with open_faceset(people.database) as connection:
        table = load_faces(connection)
    biden = table.paths.index("others/biden.jpg")
    rows, _ = find_identities(table, pin_embedding=table.embeddings[biden] * 3.0)
    assert [row.face_id for row in rows if row.label == "main"] == [table.face_ids[biden]]
    with pytest.raises(FacesmithError, match="no identity"):
        find_identities(table, pin_embedding=-table.embeddings[biden])
    with pytest.raises(FacesmithError, match="values"):
        find_identities(table, pin_embedding=np.ones(7))


def test_bad_pins_and_settings_are_clear_errors(people, tmp_path):
    with pytest.raises(FacesmithError, match="no image at nobody.jpg"):
        analyze_identities(people.database, pin_image="nobody.jpg")
    with pytest.raises(FacesmithError, match="no image at"):
        analyze_identities(people.database, pin_image=Path("/elsewhere/biden.jpg"))
    blank = tmp_path / "blank.png"
    import cv2
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(FacesmithError, match="no face found in"):
        analyze_identities(people.database, pin_image=blank)
    with pytest.raises(StoreError, match="no faceset"):
        analyze_identities(people.database.parent / "missing.duckdb")
    for bad in ({"distance_threshold": 0.0}, {"max_cluster_faces": 1}):
        with pytest.raises(FacesmithError):
            IdentitySettings(**bad)


def test_an_identity_photo_from_outside_the_folder_pins_without_joining(people, tmp_path):
    """--identity may name any photo: it picks the main identity and never becomes training data."""
    outside = tmp_path / "elsewhere" / "portrait.jpg"
    outside.parent.mkdir()
    shutil.copyfile(people.root / sorted(p.name for p in people.root.glob("*.jpg"))[0], outside)
    with duckdb.connect(str(people.database), read_only=True) as connection:
        before = connection.execute("SELECT count(*) FROM images").fetchone()[0]
    analyze_identities(people.database, pin_image="others/biden.jpg")  # main: Biden
    summary = analyze_identities(people.database, pin_image=outside)
    rows = _rows(people.database)
    assert summary.pinned == str(outside) and summary.main_faces == 3
    assert all(row.label == "main" for key, row in rows.items() if not key.startswith("others/"))
    assert all(row.label != "main" for key, row in rows.items() if key.startswith("others/"))
    with duckdb.connect(str(people.database), read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM images").fetchone()[0] == before
        assert not connection.execute("SELECT count(*) FROM images WHERE path LIKE '%portrait%'").fetchone()[0]


def test_sampled_clustering_assigns_the_rest_to_centres():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(3), [400, 200, 100])
    embeddings = centres[truth] + 0.077 * rng.standard_normal((len(truth), 64))  # cosine ≈ 0.85
    # two unrelated faces at positions the evenly spread sample skips (it takes 0, 6, 12, ...)
    truth = np.insert(truth, 1, [-1, -1])
    embeddings = np.insert(embeddings, 1, rng.standard_normal((2, 64)), axis=0)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    full, sampled_full = cluster_embeddings(embeddings, 0.55)
    part, sampled_part = cluster_embeddings(embeddings, 0.55, max_cluster_faces=120, block=50)
    assert not sampled_full and sampled_part
    for labels in (full, part):
        for identity in range(3):  # each identity is one cluster, distinct from the others
            assert len(set(labels[truth == identity])) == 1
        assert len({labels[truth == identity][0] for identity in range(3)}) == 3
    for labels in (full, part):  # near no one: each unrelated face is a person of its own
        assert (labels >= 0).all()
        assert len(set(labels[truth == -1])) == 2 and not set(labels[truth == -1]) & set(labels[truth >= 0])


def test_pins_resolve_against_the_folder_of_each_images_own_scan(people, tmp_path):
    """others/ was read by a later scan of another folder: absolute pins under either folder work."""
    database = tmp_path / "faceset.duckdb"
    shutil.copyfile(people.database, database)
    second = tmp_path / "second"
    shutil.copytree(people.root / "others", second / "others")
    with duckdb.connect(str(database)) as connection:
        connection.execute("""INSERT INTO runs SELECT * REPLACE ('second' AS run_id,
                              started_at + INTERVAL 1 HOUR AS started_at, ? AS source_root)
                              FROM runs LIMIT 1""", [str(second)])
        connection.execute("UPDATE images SET run_id = 'second' WHERE path LIKE 'others/%'")
        obama = connection.execute("SELECT min(path) FROM images WHERE path NOT LIKE 'others/%'").fetchone()[0]
    assert analyze_identities(database, pin_image=people.root / obama).pinned == obama
    assert analyze_identities(database, pin_image=second / "others" / "biden.jpg").pinned == "others/biden.jpg"
    # the first folder's others/biden.jpg is not the file the faceset holds: it is a photo from
    # elsewhere, embedded to find its person (the same photo: Biden)
    outside = people.root / "others" / "biden.jpg"
    summary = analyze_identities(database, pin_image=outside)
    assert summary.pinned == str(outside) and summary.main_faces == 1
