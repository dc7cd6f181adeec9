"""Coverage: exact grid and lighting arithmetic on synthetic face tables, advice, SQL, real faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.analysis.coverage import (
    LIGHT_BINS, CoverageError, CoverageSettings, advice, coverage, coverage_grid_sql, degrees, light_bins,
    lighting_sql,
)
from curate.faceset import FaceTable, load_faces, open_faceset


def synthetic_table(yaw, pitch, sharpness=None, lighting_lr=None, lighting_tb=None, face_ids=None) -> FaceTable:
    """A FaceTable with the given per-face values; everything else plain and consistent."""
    yaw = np.asarray(yaw, np.float64)
    n = len(yaw)
    face_ids = list(face_ids) if face_ids is not None else [f"face{i:04d}" for i in range(n)]

    def column(values, default):
        return np.full(n, default, np.float64) if values is None else np.asarray(values, np.float64)

    return FaceTable(
        face_ids=face_ids,
        image_ids=[f"image{i:04d}" for i in range(n)],
        paths=[f"photos/{face_id}.jpg" for face_id in face_ids],
        content_hashes=[f"{i:064x}" for i in range(n)],
        face_index=np.zeros(n, np.int32),
        embeddings=np.tile(np.eye(1, 8, dtype=np.float32), (n, 1)),
        phash=np.arange(n, dtype=np.uint64),
        yaw=yaw,
        pitch=column(pitch, 0.0),
        roll=np.zeros(n),
        sharpness=column(sharpness, 500.0),
        brightness=np.full(n, 0.5),
        contrast=np.full(n, 0.2),
        lighting_lr=column(lighting_lr, 0.0),
        lighting_tb=column(lighting_tb, 0.0),
        face_size=np.full(n, 200.0),
        det_score=np.full(n, 0.9),
        aligned_paths=[f"faceset_aligned/{face_id}.jpg" for face_id in face_ids],
        image_sizes=np.tile(np.array([[640, 480]], np.int64), (n, 1)),
    )


def cell(cov, yaw_bin: int, pitch_bin: int):
    return next(c for c in cov.cells if (c.yaw_bin, c.pitch_bin) == (yaw_bin, pitch_bin))


# -- synthetic arithmetic ------------------------------------------------------------------------


def test_grid_counts_bins_and_edges():
    table = synthetic_table(
        yaw=[0.0, 14.9, 15.0, -0.1, -90.0, 90.0, 95.0, np.nan, 10.0],
        pitch=[0.0, 14.9, 0.0, -0.1, 0.0, 59.0, 0.0, 0.0, -61.0],
        sharpness=[100, 300, 200, 50, 10, 20, 30, 40, 60],
    )
    cov = coverage(table)
    assert list(cov.yaw_edges) == list(range(-90, 91, 15)) and list(cov.pitch_edges) == list(range(-60, 61, 15))
    assert cov.counts.shape == (12, 8)  # [yaw bin, pitch bin]
    assert cov.counts[6, 4] == 2 and cov.best_sharpness[6, 4] == 300 and cov.best_face_ids[6][4] == "face0001"
    assert cov.faces == 9 and cov.faces_without_pose == 1 and cov.faces_outside_range == 2
    assert cov.counts.sum() == 6
    assert cell(cov, 0, 0).faces == 2  # 0.0 and 14.9 both fall in [0, 15)
    assert cell(cov, 0, 0).best_sharpness == 300 and cell(cov, 0, 0).best_face_id == "face0001"
    assert cell(cov, 15, 0).faces == 1
    assert cell(cov, -15, -15).faces == 1  # −0.1 floors to the bin below zero
    assert cell(cov, -90, 0).faces == 1
    assert cell(cov, 75, 45).faces == 1  # yaw exactly 90 belongs to the last bin
    assert cell(cov, 30, 30).best_sharpness is None and cell(cov, 30, 30).state == "empty"
    assert cov.yaw_extent == (-90.0, 95.0) and cov.pitch_extent == (-61.0, 59.0)


def test_best_face_ties_go_to_the_smaller_face_id():
    table = synthetic_table([1, 2, 3], [1, 1, 1], sharpness=[200, 300, 300], face_ids=["c", "d", "b"])
    assert cell(coverage(table), 0, 0).best_face_id == "b"


def test_lighting_bins_and_threshold():
    lr = [0.0, 0.099, 0.10, -0.10, 0.05, 0.05, 0.3, -0.3, np.nan]
    tb = [0.0, -0.099, 0.0, 0.0, 0.2, -0.2, 0.3, 0.1, 0.0]
    assert light_bins(lr, tb, 0.10) == ["even", "even", "right", "left", "top", "bottom", "right", "left", "unknown"]
    cov = coverage(synthetic_table(np.zeros(9), np.zeros(9), lighting_lr=lr, lighting_tb=tb))
    assert cov.lighting == {"even": 2, "left": 2, "right": 2, "top": 1, "bottom": 1, "unknown": 1}
    assert list(coverage(synthetic_table([0], [0])).lighting) == list(LIGHT_BINS)


def test_expected_region_empty_and_thin_cells():
    # 23 of the 24 frontal cells (yaw ±45°, pitch ±30°) hold 10 faces, one holds a single face.
    yaw, pitch = [], []
    thin_cell = (30, 15)
    for yaw_edge in range(-45, 45, 15):
        for pitch_edge in range(-30, 30, 15):
            n = 1 if (yaw_edge, pitch_edge) == thin_cell else 10
            yaw += [yaw_edge + 7.5] * n
            pitch += [pitch_edge + 7.5] * n
    cov = coverage(synthetic_table(yaw, pitch))
    assert int(cov.expected.sum()) == 24
    assert cov.thin_below == pytest.approx(0.25 * 231 / 24)
    assert cov.thin_cells == (thin_cell,) and cov.empty_cells == ()
    assert cell(cov, *thin_cell).state == "thin" and cell(cov, -45, -30).state == "ok"
    assert cell(cov, 60, 0).state == "empty" and not cell(cov, 60, 0).expected

    # Remove one frontal cell's faces: it becomes an empty expected cell.
    keep = ~((np.array(yaw) == -37.5) & (np.array(pitch) == -22.5))
    cov = coverage(synthetic_table(np.array(yaw)[keep], np.array(pitch)[keep]))
    assert cov.empty_cells == ((-45, -30),)


def test_include_mask_counts_only_those_faces():
    table = synthetic_table([0, 20, 40], [0, 0, 0])
    cov = coverage(table, include=np.array([True, False, True]))
    assert cov.faces == 2 and cell(cov, 15, 0).faces == 0 and cell(cov, 30, 0).faces == 1
    with pytest.raises(CoverageError):
        coverage(table, include=np.array([True]))


def test_settings_are_validated():
    with pytest.raises(CoverageError, match="yaw bin"):
        CoverageSettings(yaw_bin=0)
    with pytest.raises(CoverageError, match="yaw bin"):
        CoverageSettings(yaw_bin=7.5)
    with pytest.raises(CoverageError, match="pitch range"):
        CoverageSettings(pitch_range=(10, -10))
    cov = coverage(synthetic_table([-50, 50], [0, 0]), CoverageSettings(yaw_bin=30, pitch_bin=20))
    assert list(cov.yaw_edges) == [-90, -60, -30, 0, 30, 60, 90]
    assert list(cov.pitch_edges) == [-60, -40, -20, 0, 20, 40, 60]
    assert cell(cov, -60, 0).faces == 1 and cell(cov, 30, 0).faces == 1


# -- advice --------------------------------------------------------------------------------------


def test_advice_names_missing_profiles_rows_columns_and_lighting():
    rng = np.random.default_rng(0)
    n = 100
    yaw = rng.uniform(-29.9, 29.9, n)  # nothing beyond ±30°
    pitch = rng.uniform(-14.9, 14.9, n)  # nothing above 15° or below −15°
    lr = np.where(np.arange(n) < 62, -0.3, 0.0)  # 62 faces lit from image left
    lines = advice(coverage(synthetic_table(yaw, pitch, lighting_lr=lr)))
    assert "no faces with yaw below −45°: add left profiles (faces turned towards image left)" in lines
    assert "no faces with yaw above 45°: add right profiles (faces turned towards image right)" in lines
    assert "no faces with yaw from −45° to −30°: add faces turned towards image left" in lines
    assert "no faces with yaw from 30° to 45°: add faces turned towards image right" in lines
    assert "no faces with pitch from −30° to −15°: add faces looking down" in lines
    assert "no faces with pitch from 15° to 30°: add faces looking up" in lines
    assert any(line.startswith("16 of 24 pose cells in the usual range (yaw −45° to 45°, pitch −30° to 30°) "
                               "are empty") for line in lines)
    assert ("62 % of faces lit from the left (the image-left half of the face is brighter): "
            "add faces lit from other sides or evenly") in lines
    assert any(line.startswith("no faces lit from the right") for line in lines)
    assert not any("lit from the left (image left brighter)" in line for line in lines)


def test_advice_on_a_well_covered_set_is_short():
    yaw, pitch, lr = [], [], []
    for yaw_edge in range(-90, 90, 15):
        for pitch_edge in range(-30, 30, 15):
            for light in (-0.3, 0.0, 0.3):
                yaw.append(yaw_edge + 7.5)
                pitch.append(pitch_edge + 7.5)
                lr.append(light)
    assert advice(coverage(synthetic_table(yaw, pitch, lighting_lr=lr))) == []


def test_advice_lists_scattered_gaps_thin_and_blurry_cells():
    yaw, pitch, sharpness = [], [], []
    for yaw_edge in range(-60, 60, 15):
        for pitch_edge in range(-30, 30, 15):
            if (yaw_edge, pitch_edge) == (0, 15):
                continue  # one scattered gap
            n = 1 if (yaw_edge, pitch_edge) == (-15, -30) else 10
            yaw += [yaw_edge + 7.5] * n
            pitch += [pitch_edge + 7.5] * n
            sharpness += [12.0 if (yaw_edge, pitch_edge) == (15, 0) else 400.0] * n
    lines = advice(coverage(synthetic_table(yaw, pitch, sharpness=sharpness)))
    assert "1 of 24 pose cells in the usual range (yaw −45° to 45°, pitch −30° to 30°) are empty: " \
           "(yaw 0° to 15°, pitch 15° to 30°)" in lines
    assert any(line.startswith("1 pose cell with fewer than") and "(yaw −15° to 0°, pitch −30° to −15°)" in line
               for line in lines)
    assert any(line.startswith("only blurry faces (sharpness below 30) in 1 pose cell: "
                               "(yaw 15° to 30°, pitch 0° to 15°)") for line in lines)


def test_advice_without_faces_and_without_pose():
    assert advice(coverage(synthetic_table([], []))) == ["no faces: scan photos or extracted video frames first"]
    lines = advice(coverage(synthetic_table([np.nan, 0.0], [0.0, 0.0])))
    assert lines[0] == "1 face without a pose estimate, left out of the grid"


def test_degrees_uses_a_true_minus_sign():
    assert degrees(-45) == "−45°" and degrees(30) == "30°" and degrees(7.5) == "7.5°"


# -- real faces ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_faceset(mirrored_faceset) -> Path:
    return mirrored_faceset


def test_real_faces_grid_and_sql_agree(real_faceset):
    with open_faceset(real_faceset) as connection:
        table = load_faces(connection)
        cov = coverage(table)
        grid = connection.execute(coverage_grid_sql()).fetchall()
        lighting = dict(connection.execute(lighting_sql()).fetchall())
    assert len(table) >= 20 and cov.faces == len(table) == int(cov.counts.sum())
    assert (table.yaw < 0).any() and (table.yaw > 0).any()
    occupied = [c for c in cov.cells if c.faces]
    assert {(y, p): n for y, p, n, _ in grid} == {(c.yaw_bin, c.pitch_bin): c.faces for c in occupied}
    assert {(y, p): s for y, p, _, s in grid} == pytest.approx(
        {(c.yaw_bin, c.pitch_bin): c.best_sharpness for c in occupied})
    assert lighting == {name: count for name, count in cov.lighting.items() if count}
    as_json = json.loads(json.dumps(cov.to_dict(), allow_nan=False))
    assert as_json["faces"] == len(table) and len(as_json["cells"]) == 12 * 8
    assert len(as_json["yaw_edges"]) == 13 and len(as_json["pitch_edges"]) == 9
    assert len(as_json["counts"]) == 12 and len(as_json["counts"][0]) == 8
    assert sum(map(sum, as_json["counts"])) == len(table)
    # Mirroring swaps image left and right: both sides have side-lit faces.
    assert cov.lighting["left"] > 0 and cov.lighting["right"] > 0


def test_real_faces_advice(real_faceset):
    with open_faceset(real_faceset) as connection:
        lines = advice(coverage(load_faces(connection)))
    print("\n".join(lines))
    # The samples are near-frontal portraits: no profiles either way.
    assert lines[:2] == [
        "no faces with yaw below −45°: add left profiles (faces turned towards image left)",
        "no faces with yaw above 45°: add right profiles (faces turned towards image right)",
    ]
    assert all(isinstance(line, str) and line and "nan" not in line for line in lines)
