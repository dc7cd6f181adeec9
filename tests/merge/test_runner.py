"""`merge run` on real frames with a really trained (tiny) model: placement, labels, resume, video."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from merge.provenance import verify_file
from merge.runner import MergeRunError, merge_frames
from merge.settings import resolve_settings


@pytest.fixture(scope="module")
def merged(module_dirs, tiny_model, dst_frames, analyzer):
    out = module_dirs("merged") / "frames"
    video = out.parent / "merged.mp4"
    summary = merge_frames(tiny_model, dst_frames, out, resolve_settings({}), video=video, analyzer=analyzer)
    return out, video, summary


def test_every_frame_and_face_is_merged(merged, dst_frames):
    out, _, summary = merged
    inputs = sorted(p.stem for p in dst_frames.iterdir())
    assert summary.frames == len(inputs) == summary.merged and summary.skipped == 0
    assert summary.faces >= len(inputs) + 5  # t1.jpg alone holds six faces
    assert sorted(p.stem for p in out.glob("*.png")) == inputs


def test_faces_change_and_the_background_does_not(merged, dst_frames, analyzer):
    out, _, _ = merged
    original = cv2.imread(str(dst_frames / "einstein.png"))
    result = cv2.imread(str(out / "einstein.png"))
    assert result.shape == original.shape
    difference = np.abs(result.astype(np.int16) - original.astype(np.int16)).max(axis=2)
    face = analyzer.locate(original)[0]
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    inside = difference[y1:y2, x1:x2]
    assert (inside > 12).mean() > 0.2  # the face region was replaced
    outside = difference.copy()
    pad = int(0.8 * (x2 - x1))
    outside[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad] = 0
    assert (outside > 12).mean() < 0.01  # far from the face only the watermark's faint changes


def test_frames_and_video_carry_the_synthetic_label(merged, tiny_model):
    out, video, summary = merged
    frame = verify_file(out / "t1.png")
    assert frame.synthetic and frame.metadata["iteration"] == summary.model_iteration == 30
    assert frame.watermark.present
    clip = verify_file(video)
    assert clip.synthetic and clip.watermark.present and clip.metadata["iteration"] == 30
    # an ordinary re-encode at JPEG quality 75 strips the metadata; the watermark stays
    again = out.parent / "reencoded.jpg"
    cv2.imwrite(str(again), cv2.imread(str(out / "t1.png")), [cv2.IMWRITE_JPEG_QUALITY, 75])
    reading = verify_file(again)
    assert reading.synthetic and reading.metadata is None and reading.watermark.present


def test_rerun_skips_done_frames_and_new_settings_remerge(merged, tiny_model, dst_frames, analyzer, tmp_path):
    out, _, _ = merged
    copy = tmp_path / "frames"
    shutil.copytree(out, copy)
    again = merge_frames(tiny_model, dst_frames, copy, resolve_settings({}), analyzer=analyzer)
    assert again.skipped == again.frames and again.merged == 0
    changed = merge_frames(tiny_model, dst_frames, copy, resolve_settings({"mode": "seamless"}), analyzer=analyzer)
    assert changed.merged == changed.frames and any("re-merging" in w for w in changed.warnings)
    stored = json.loads((copy / "merge_session.json").read_text())
    assert stored["iteration"] == 30 and "mode = \"seamless\"" in (copy / "merge_settings.toml").read_text()


def test_video_input_and_raw_predict(tiny_model, dst_frames, analyzer, tmp_path):
    frame = cv2.imread(str(dst_frames / "einstein.png"))
    frame = cv2.resize(frame, (frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2))
    source = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    summary = merge_frames(tiny_model, source, tmp_path / "out", resolve_settings({"mode": "raw-predict"}),
                           analyzer=analyzer)
    per_frame = len(analyzer.locate(frame))
    assert summary.frames == 3 and summary.faces == 3 * per_frame >= 3
    predicted = cv2.imread(str(tmp_path / "out" / "clip_000000.png"))
    assert predicted.shape == (64, 64 * per_frame, 3)  # raw-predict: the predicted faces side by side


def test_not_a_model_folder(tmp_path, dst_frames):
    with pytest.raises(MergeRunError, match="not a model folder"):
        merge_frames(tmp_path, dst_frames, tmp_path / "out", resolve_settings({}))


def test_frames_are_read_with_the_backend_that_curated_the_dst_faceset(tiny_model, training_facesets):
    from curate.scan.pipeline import analyzer_for_faceset
    from merge.runner import _analyzer_for_model

    assert type(_analyzer_for_model(tiny_model)) is type(analyzer_for_faceset(training_facesets[1]))
    assert analyzer_for_faceset(training_facesets[1]).name == "embedded"


def test_a_gone_dst_faceset_falls_back_to_the_embedded_detector(tiny_model, tmp_path, caplog):
    import json

    from merge.runner import _analyzer_for_model

    stored = json.loads((tiny_model / "model.json").read_text())
    moved = tmp_path / "model"
    moved.mkdir()
    (moved / "model.json").write_text(json.dumps(dict(stored, dst=str(tmp_path / "gone" / "dst.duckdb"))))
    with caplog.at_level("WARNING"):
        analyzer = _analyzer_for_model(moved)
    assert analyzer.name == "embedded"
    assert "gone" in caplog.text and "embedded backend" in caplog.text


# -- nothing lost (issue 17, findings 10 and 11) --------------------------------------------------


def test_an_output_folder_that_is_the_frames_folder_is_refused(tiny_model, dst_frames, analyzer, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(dst_frames, frames)
    before = {path.name: path.read_bytes() for path in frames.iterdir()}
    for out in (frames, tmp_path / "." / "frames" / ".." / "frames"):
        with pytest.raises(MergeRunError, match="is the --frames folder"):
            merge_frames(tiny_model, frames, out, resolve_settings({}), analyzer=analyzer)
    assert {path.name: path.read_bytes() for path in frames.iterdir()} == before


def test_frames_that_share_a_name_keep_their_own_outputs(tiny_model, dst_frames, analyzer, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    photo = cv2.imread(str(dst_frames / "einstein.png"))
    cv2.imwrite(str(frames / "x.png"), photo)
    cv2.imwrite(str(frames / "x.jpg"), cv2.flip(photo, 1))
    cv2.imwrite(str(frames / "y.jpg"), photo)
    out = tmp_path / "out"
    summary = merge_frames(tiny_model, frames, out, resolve_settings({}), analyzer=analyzer)
    written = sorted(path.name for path in out.glob("*.png"))
    assert written == ["x.jpg.png", "x.png.png", "y.png"]
    assert summary.merged == len(written) == 3
    left, right = (cv2.imread(str(out / name)) for name in ("x.png.png", "x.jpg.png"))
    assert not np.array_equal(left, right)  # each is its own frame's merge


def test_a_killed_merges_temporary_frame_is_removed_by_the_next_run(tiny_model, dst_frames, analyzer, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    # What SIGKILL during write_atomically leaves: a hidden temporary named for a process now gone.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    leftover = out / f".t1.png.{int(gone.stdout)}.0badf00d.tmp"
    leftover.write_bytes(b"half a frame")
    merge_frames(tiny_model, dst_frames, out, resolve_settings({}), analyzer=analyzer)
    assert not leftover.exists()
    assert not list(out.glob(".*.tmp"))
