"""curate extract: frames chosen by timestamp from videos the tests write, resumable, clear errors, scannable."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pytest

from curate.scan.pipeline import ScanSettings, scan_folder
from curate.scan.video import VideoError, extract_frames, frame_name
from tests.curate.conftest import load_bgr

WIDTH, HEIGHT = 320, 240
CODE_COLUMNS, CODE_STEP, ROW_STEP, BLOCK = 15, 10, 40, 8


def code_position(index: int) -> tuple[int, int]:
    """Top-left corner of the bright block that spells a frame's index in the left half."""
    return 4 + (index % CODE_COLUMNS) * CODE_STEP, 8 + (index // CODE_COLUMNS) * ROW_STEP


def decode_index(frame: np.ndarray) -> int:
    """The index spelt by the block: its centroid, snapped to the code grid."""
    grey = cv2.cvtColor(frame[:, : WIDTH // 2], cv2.COLOR_BGR2GRAY)
    ys, xs = np.nonzero(grey > 128)
    assert xs.size > BLOCK * BLOCK // 2, "no code block in the frame"
    column = round((xs.mean() - 4 - (BLOCK - 1) / 2) / CODE_STEP)
    row = round((ys.mean() - 8 - (BLOCK - 1) / 2) / ROW_STEP)
    return row * CODE_COLUMNS + column


def write_video(path: Path, fourcc: str, fps: float, frames: int, face: np.ndarray | None = None,
                face_from: int = 0) -> Path:
    """A test video: every frame shows its index as a block position; frames from `face_from`
    on carry a real face photo in the right half."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (WIDTH, HEIGHT))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for index in range(frames):
        frame = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
        x, y = code_position(index)
        frame[y : y + BLOCK, x : x + BLOCK] = 255
        if face is not None and index >= face_from:
            frame[:, WIDTH // 2 :] = face
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def face_half(obama_paths) -> np.ndarray:
    """obama.jpg's head and shoulders, fitted into the right half of a frame (160×240)."""
    image = load_bgr(obama_paths[0])  # 910×1137, face roughly in the upper middle
    height, width = image.shape[:2]
    crop = image[int(height * 0.05) : int(height * 0.75), int(width * 0.1) : int(width * 0.9)]
    return cv2.resize(crop, (WIDTH // 2, HEIGHT), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def clip(module_dirs, face_half) -> Path:
    """3 s at 25 fps, MJPG in AVI (OpenCV's FFmpeg writes it headless); a face from 1 s on."""
    folder = module_dirs("video")
    return write_video(folder / "clip.avi", "MJPG", 25.0, 75, face=face_half, face_from=25)


def frame_numbers(folder: Path) -> list[int]:
    return sorted(int(path.stem.rsplit("_", 1)[1]) for path in folder.iterdir() if not path.name.startswith("."))


def test_extracts_the_frames_at_the_requested_times(clip, tmp_path):
    out = tmp_path / "frames"
    summary = extract_frames(clip, out, fps=5)
    assert summary.source_fps == pytest.approx(25.0) and summary.source_frames == 75
    assert summary.frames_decoded == 75
    assert abs(summary.frames_sampled - 15) <= 1 and summary.frames_written == summary.frames_sampled
    assert summary.frames_existing == 0 and summary.image_format == "png" and summary.warnings == []
    names = sorted(path.name for path in out.iterdir())
    assert names[0] == "clip_000000.png" and len(names) == summary.frames_sampled
    # Each file holds the frame its name says, and that frame sits at k / 5 s.
    for k, path in enumerate(sorted(out.iterdir())):
        number = int(path.stem.rsplit("_", 1)[1])
        assert decode_index(cv2.imread(str(path))) == number
        assert number / 25.0 == pytest.approx(k / 5.0)
    assert summary.first_time == 0.0 and summary.last_time == pytest.approx(2.8)


def test_non_multiple_rate_takes_the_nearest_frame_by_time(tmp_path):
    source_fps = 30000 / 1001  # NTSC 29.97: 7 fps is no whole step of it
    video = write_video(tmp_path / "ntsc.mp4", "mp4v", source_fps, 60)
    out = tmp_path / "frames"
    summary = extract_frames(video, out, fps=7)
    duration = 60 / source_fps
    assert abs(summary.frames_sampled - math.ceil(duration * 7)) <= 1
    decoded = [decode_index(cv2.imread(str(path))) for path in sorted(out.iterdir())]
    assert decoded == frame_numbers(out)
    for k, index in enumerate(decoded):
        # nearest frame to the target time k / 7: within half a source frame
        assert abs(index / source_fps - k / 7) <= 0.5 / source_fps + 1e-6, (k, index)
    assert len(set(decoded)) == len(decoded)


def test_rate_above_the_source_writes_every_frame_once(clip, tmp_path):
    summary = extract_frames(clip, tmp_path / "all", fps=60)
    assert summary.frames_sampled == 75
    assert frame_numbers(tmp_path / "all") == list(range(75))


def test_start_end_and_max_frames(clip, tmp_path):
    window = extract_frames(clip, tmp_path / "window", fps=5, start=1.0, end=2.0)
    assert frame_numbers(tmp_path / "window") == [25, 30, 35, 40, 45]
    assert window.first_time == pytest.approx(1.0) and window.last_time == pytest.approx(1.8)
    late = extract_frames(clip, tmp_path / "late", fps=5, start=2.6)  # seeks past the first second
    assert frame_numbers(tmp_path / "late") == [65, 70] and late.frames_decoded < 75
    for path in (tmp_path / "late").iterdir():
        assert decode_index(cv2.imread(str(path))) == int(path.stem.rsplit("_", 1)[1])
    capped = extract_frames(clip, tmp_path / "capped", fps=5, max_frames=4)
    assert capped.frames_sampled == 4 and frame_numbers(tmp_path / "capped") == [0, 5, 10, 15]


def test_resumes_without_rewriting(clip, tmp_path):
    out = tmp_path / "frames"
    first = extract_frames(clip, out, fps=5)
    times = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    (out / frame_name(clip, 35)).unlink()
    (out / frame_name(clip, 70)).unlink()
    (out / f".{frame_name(clip, 40)}.tmp").write_bytes(b"half a frame from a killed run")
    (out / f".{frame_name(clip, 35)}.tmp").mkdir()  # even a folder at a fixed temporary name
    again = extract_frames(clip, out, fps=5)
    assert again.frames_written == 2 and again.frames_existing == first.frames_sampled - 2
    assert again.frames_sampled == first.frames_sampled
    for path in out.iterdir():
        if not path.name.startswith(".") and path.name not in (frame_name(clip, 35), frame_name(clip, 70)):
            assert path.stat().st_mtime_ns == times[path.name]
    assert decode_index(cv2.imread(str(out / frame_name(clip, 35)))) == 35


def test_jpeg_output(clip, tmp_path):
    summary = extract_frames(clip, tmp_path / "jpeg", fps=5, jpeg_quality=90)
    assert summary.image_format == "jpeg"
    paths = sorted((tmp_path / "jpeg").iterdir())
    assert paths[0].name == "clip_000000.jpg" and paths[0].read_bytes()[:2] == b"\xff\xd8"


def test_truncated_video_gives_the_frames_before_the_cut_and_says_so(clip, tmp_path):
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    summary = extract_frames(cut, tmp_path / "frames", fps=5)
    assert 0 < summary.frames_sampled < 15
    assert summary.warnings and "decoding stopped" in summary.warnings[0]


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, bytes(range(256)) * 64])
def test_unreadable_video_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoError, match=r"cannot read .*bad\.mp4"):
        extract_frames(bad, tmp_path / "frames", fps=5)


def test_header_only_video_is_a_clear_error(clip, tmp_path):
    bad = tmp_path / "header.avi"
    bad.write_bytes(clip.read_bytes()[:3000])
    with pytest.raises(VideoError, match="cannot read"):
        extract_frames(bad, tmp_path / "frames", fps=5)


def test_argument_errors(clip, tmp_path):
    with pytest.raises(VideoError, match="no video at"):
        extract_frames(tmp_path / "missing.mp4", tmp_path / "frames", fps=5)
    with pytest.raises(VideoError, match="not a file"):
        extract_frames(tmp_path, tmp_path / "frames", fps=5)
    for fps in (0, -2, float("nan"), float("inf")):
        with pytest.raises(VideoError, match="frames per second"):
            extract_frames(clip, tmp_path / "frames", fps=fps)
    with pytest.raises(VideoError, match="end"):
        extract_frames(clip, tmp_path / "frames", fps=5, start=2, end=1)
    with pytest.raises(VideoError, match="start"):
        extract_frames(clip, tmp_path / "frames", fps=5, start=-1)
    with pytest.raises(VideoError, match="max frames"):
        extract_frames(clip, tmp_path / "frames", fps=5, max_frames=0)
    with pytest.raises(VideoError, match="JPEG quality"):
        extract_frames(clip, tmp_path / "frames", fps=5, jpeg_quality=101)
    assert not (tmp_path / "frames").exists()


def test_progress_reports(clip, tmp_path):
    calls = []
    extract_frames(clip, tmp_path / "frames", fps=5, on_progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 15) and calls[-1] == (15, 15)


def test_scan_takes_the_extracted_frames(clip, tmp_path, analyzer):
    frames = tmp_path / "frames"
    extract_frames(clip, frames, fps=5)
    database = tmp_path / "faceset.duckdb"
    summary = scan_folder(frames, database, ScanSettings(resolution=128, batch_size=8), analyzer=analyzer)
    assert summary.images_found == 15 and summary.images_ok == 15 and summary.images_rejected == 0
    with duckdb.connect(str(database), read_only=True) as connection:
        counts = dict(connection.execute("SELECT path, face_count FROM images").fetchall())
    # Frames before 1 s have no face (ok rows with no faces); the rest show obama.jpg once.
    for name, faces in counts.items():
        number = int(Path(name).stem.rsplit("_", 1)[1])
        assert faces == (0 if number < 25 else 1), (name, faces)
