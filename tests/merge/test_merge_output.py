"""What a user expects of merge output: the source's frame rate and audio, frame ranges, and a preview frame."""

from __future__ import annotations

import json
import re
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from merge.provenance import verify_file
from merge.runner import FrameRange, MergeRunError, merge_frames, merge_preview, parse_frame_range
from merge.settings import resolve_settings
from tests.cli.helpers import assert_one_line_error, invoke

FPS = 12
SILENT_FRAMES = 2  # the clip's audio is silent for its first two frames, then a 440 Hz tone


@pytest.fixture(scope="module")
def clip(module_dirs, dst_frames):
    """An 8-frame, 12 fps H.264 clip of einstein.png with an AAC track: silence for 2 frames, then a tone."""
    folder = module_dirs("clip")
    frame = cv2.imread(str(dst_frames / "einstein.png"))
    frame = cv2.resize(frame, (frame.shape[1] // 2 * 2, frame.shape[0] // 2 * 2))
    still = folder / "still.png"
    cv2.imwrite(str(still), frame)
    path = folder / "clip.mp4"
    silence = SILENT_FRAMES / FPS
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-framerate", str(FPS),
                    "-i", str(still), "-f", "lavfi", "-i",
                    f"aevalsrc=0.5*sin(2*PI*440*t)*gte(t\\,{silence:.6f}):s=16000:d=1",
                    "-frames:v", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
                   check=True, capture_output=True, timeout=120)
    return path


def audio_samples(video) -> np.ndarray:
    """The video's audio as mono float samples at 16 kHz (empty when it has none)."""
    completed = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(video), "-vn", "-f",
                                "s16le", "-ac", "1", "-ar", "16000", "-"], capture_output=True, timeout=120)
    return np.frombuffer(completed.stdout, np.int16).astype(np.float64) / 32768


def video_facts(video) -> tuple[float, int]:
    capture = cv2.VideoCapture(str(video))
    try:
        frames = 0
        while capture.read()[0]:
            frames += 1
        return capture.get(cv2.CAP_PROP_FPS), frames
    finally:
        capture.release()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0


def test_a_range_of_a_video_keeps_its_rate_and_its_stretch_of_audio(tiny_model, clip, analyzer, tmp_path):
    video = tmp_path / "merged.mp4"
    summary = merge_frames(tiny_model, clip, tmp_path / "frames", resolve_settings({}), video=video,
                           analyzer=analyzer, frame_range=FrameRange(2, 6))
    assert summary.frames == summary.merged == 4 and summary.frame_range == "2:6"
    assert sorted(p.stem for p in (tmp_path / "frames").glob("*.png")) == [f"clip_{i:06d}" for i in range(2, 6)]
    fps, frames = video_facts(video)
    assert fps == pytest.approx(FPS) and summary.fps == pytest.approx(FPS) and frames == 4
    assert summary.audio
    samples = audio_samples(video)
    assert samples.size / 16000 == pytest.approx(4 / FPS, abs=0.05)  # the range's time, not the whole second
    # The range starts after the silence: its audio opens with the tone, where the clip's own opens silent.
    assert rms(samples[:800]) > 0.2 and rms(audio_samples(clip)[:800]) < 0.02
    assert verify_file(video).synthetic


def test_fps_overrides_the_source_rate(tiny_model, clip, analyzer, tmp_path):
    video = tmp_path / "slow.mp4"
    summary = merge_frames(tiny_model, clip, tmp_path / "frames", resolve_settings({}), video=video,
                           analyzer=analyzer, frame_range=FrameRange(0, 3), fps=5)
    fps, frames = video_facts(video)
    assert fps == pytest.approx(5) and frames == 3 and summary.fps == 5
    assert summary.audio and any("differs from the source" in warning for warning in summary.warnings)
    assert rms(audio_samples(video)[:800]) < 0.02  # frames 0..2 start in the clip's silence


def test_a_folder_has_no_audio_and_its_range_follows_name_order(tiny_model, dst_frames, analyzer, tmp_path):
    video = tmp_path / "folder.mp4"
    summary = merge_frames(tiny_model, dst_frames, tmp_path / "frames", resolve_settings({"mode": "raw-rgb"}),
                           video=video, analyzer=analyzer, frame_range=parse_frame_range("1:3"))
    names = sorted(p.stem for p in dst_frames.iterdir())[1:3]
    assert sorted(p.stem for p in (tmp_path / "frames").glob("*.png")) == names
    assert not summary.audio and summary.fps == 25 and audio_samples(video).size == 0


@pytest.mark.parametrize("text, expected", [("100:400", FrameRange(100, 400)), ("7:", FrameRange(7, None)),
                                            (":3", FrameRange(0, 3)), (" 2 : 5 ", FrameRange(2, 5))])
def test_frame_ranges(text, expected):
    assert parse_frame_range(text) == expected


@pytest.mark.parametrize("text", ["5:2", "3:3", "abc", "1-4", "-1:2", ""])
def test_bad_frame_ranges_are_refused(text):
    with pytest.raises(MergeRunError, match="frame range"):
        parse_frame_range(text)


def test_preview_is_the_frame_a_run_would_write(tiny_model, dst_frames, analyzer, tmp_path):
    settings = resolve_settings({"mode": "seamless", "erode": 10})
    preview = merge_preview(tiny_model, dst_frames, tmp_path / "preview.png", settings, frame=1, analyzer=analyzer)
    name = sorted(p.stem for p in dst_frames.iterdir())[1]
    assert preview.frame == name and preview.faces >= 1 and preview.model_iteration == 30
    merge_frames(tiny_model, dst_frames, tmp_path / "run", settings, analyzer=analyzer, frame_range=FrameRange(1, 2))
    previewed = cv2.imread(str(tmp_path / "preview.png")).astype(np.int16)
    ran = cv2.imread(str(tmp_path / "run" / f"{name}.png")).astype(np.int16)
    original = cv2.imread(str(dst_frames / f"{name}.png")).astype(np.int16)
    assert np.abs(previewed - ran).max() <= 1 and np.abs(previewed - original).max() > 50
    assert verify_file(tmp_path / "preview.png").synthetic
    with pytest.raises(MergeRunError, match="has no frame 99"):
        merge_preview(tiny_model, dst_frames, tmp_path / "p.png", settings, frame=99, analyzer=analyzer)


def test_cli_preview_and_range(tiny_model, dst_frames, tmp_path):
    out = tmp_path / "preview.jpg"
    result = invoke("merge", "preview", "--model-dir", tiny_model, "--frames", dst_frames, "--out", out,
                    "--frame", "0", "--color-transfer", "lct", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["out"] == str(out) and cv2.imread(str(out)) is not None
    bad = invoke("merge", "run", "--model-dir", tiny_model, "--frames", dst_frames, "--out", tmp_path / "o",
                 "--range", "9:3")
    assert re.search(r"frame range .* is empty", assert_one_line_error(bad))
    assert not (tmp_path / "o").exists()
