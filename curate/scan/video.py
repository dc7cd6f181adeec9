"""Extract frames from a video at a given rate, by timestamp, as files that `curate scan` reads."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from curate.errors import FacesmithError
from curate.fileio import write_atomically
from curate.progress import ProgressCallback

logger = logging.getLogger(__name__)


PNG_COMPRESSION = 3  # zlib level: lossless either way; 3 writes ~3x faster than 9 for ~5 % more bytes


class VideoError(FacesmithError):
    """A video cannot be opened or decoded, or the extraction was asked for something impossible."""


@dataclass(frozen=True)
class ExtractSummary:
    """What one extraction did; frame numbers are 0-based indices of decoded source frames."""

    video: str
    out_dir: str
    source_fps: float  # the container's nominal rate (0 when it does not say)
    source_frames: int  # the container's frame count (0 when it does not say; may be an estimate)
    fps: float  # the requested sampling rate
    start: float | None  # seconds
    end: float | None  # seconds
    frames_decoded: int  # source frames read from the file
    frames_sampled: int  # frames chosen at the requested rate (written + already present)
    frames_written: int
    frames_existing: int  # chosen frames whose file was already there (a resumed extraction)
    first_time: float | None  # seconds of the first and last chosen frames
    last_time: float | None
    image_format: str  # png or jpeg
    seconds: float
    warnings: list[str] = field(default_factory=list)  # e.g. decoding stopped before the end

    def to_dict(self) -> dict:
        return asdict(self)


def frame_name(video: Path, frame_index: int, jpeg_quality: int | None = None) -> str:
    """File name of one extracted frame: `<stem>_<frame:06d>.png` (or `.jpg`)."""
    return f"{Path(video).stem}_{frame_index:06d}{'.jpg' if jpeg_quality else '.png'}"


def _encode(frame: np.ndarray, jpeg_quality: int | None) -> bytes:
    if jpeg_quality:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, data = cv2.imencode(".png", frame, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise VideoError(f"cannot encode a frame of shape {frame.shape}")
    return data.tobytes()


def _validate(video: Path, fps: float, start: float | None, end: float | None,
              max_frames: int | None, jpeg_quality: int | None) -> None:
    if not video.exists():
        raise VideoError(f"no video at {video}")
    if not video.is_file():
        raise VideoError(f"not a file: {video}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise VideoError(f"frames per second must be a positive number, got {fps}")
    if start is not None and not (math.isfinite(start) and start >= 0):
        raise VideoError(f"start must be a time in seconds >= 0, got {start}")
    if end is not None and not (math.isfinite(end) and end > (start or 0.0)):
        raise VideoError(f"end must be a time in seconds after the start, got {end}")
    if max_frames is not None and max_frames < 1:
        raise VideoError(f"max frames must be at least 1, got {max_frames}")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise VideoError(f"JPEG quality must be 1..100, got {jpeg_quality}")


def _expected_samples(source_fps: float, source_frames: int, fps: float, start: float,
                      end: float | None, max_frames: int | None) -> int:
    """How many frames the extraction should choose, from the container's header (0: unknown)."""
    if source_fps <= 0 or source_frames <= 0:
        return 0
    duration = source_frames / source_fps
    if end is not None:
        duration = min(duration, end)
    expected = max(0, math.ceil((duration - start) * min(fps, source_fps) - 1e-9))
    return min(expected, max_frames) if max_frames else expected


def extract_frames(
    video: Path,
    out_dir: Path,
    fps: float,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    on_progress: ProgressCallback | None = None,
    jpeg_quality: int | None = None,
) -> ExtractSummary:
    """Write the frames of `video` nearest to the times start, start + 1/fps, start + 2/fps, …
    (up to `end`, seconds, exclusive) into `out_dir` as `<stem>_<frame:06d>.png`, lossless
    (JPEG at `jpeg_quality` when given).

    Frames are chosen by their presentation timestamp, not by keeping every n-th frame, so a
    29.97 fps source sampled at 5 fps gives the frames nearest to 0.0, 0.2, 0.4 s (the earlier
    one on a tie) and a variable-rate source keeps its timing. When the requested rate exceeds
    the source's, every source frame is written once. File names carry the source frame number,
    so they do not depend on the rate asked for. A frame whose file already exists is not
    written again, and files are written under a temporary name and renamed, so an interrupted
    extraction resumes where it stopped and re-running it is harmless. Raises VideoError for a
    missing or undecodable video; a file that stops decoding early gives the frames before the
    damage and a warning in the summary.
    """
    started = time.perf_counter()
    video, out_dir = Path(video), Path(out_dir)
    _validate(video, fps, start, end, max_frames, jpeg_quality)
    capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"cannot read {video}: not a video, or a codec OpenCV's FFmpeg cannot decode")
    try:
        source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        source_fps = source_fps if math.isfinite(source_fps) and source_fps > 0 else 0.0
        reported = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        source_frames = int(reported) if math.isfinite(reported) and reported > 0 else 0
        begin = float(start or 0.0)
        # Half a source frame: a frame counts for a target time when it is the nearest one to it.
        tolerance = 0.5 / source_fps if source_fps else 0.0
        index = 0
        if begin > 0 and source_fps:
            # Seeking by frame number decodes forward from the previous key frame (exact for a
            # constant rate); land a second early and let the timestamps decide.
            first = max(0, math.floor(begin * source_fps) - math.ceil(source_fps))
            if first and capture.set(cv2.CAP_PROP_POS_FRAMES, first):
                index = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
        expected = _expected_samples(source_fps, source_frames, fps, begin, end, max_frames)
        out_dir.mkdir(parents=True, exist_ok=True)
        decoded = written = existing = target = 0
        first_time = last_time = None
        if on_progress:
            on_progress(0, expected)
        while True:
            if not capture.grab():
                break
            decoded += 1
            position = capture.get(cv2.CAP_PROP_POS_MSEC)
            # Fall back to index / rate where the backend gives no timestamp.
            if (position > 0 or index == 0) or not source_fps:
                timestamp = position / 1000.0
            else:
                timestamp = index / source_fps
            frame_index, index = index, index + 1
            if end is not None and timestamp >= end - 1e-9:
                break
            if timestamp + tolerance < begin + target / fps - 1e-9:
                continue  # before the next target time (or before start)
            # Skip targets this frame overshoots (the source is slower than the requested rate).
            while begin + (target + 1) / fps - tolerance <= timestamp + 1e-9:
                target += 1
            target += 1
            path = out_dir / frame_name(video, frame_index, jpeg_quality)
            if path.exists():
                existing += 1
            else:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    logger.warning("%s: frame %d could not be decoded; skipped", video, frame_index)
                    continue
                # Hidden unique temporary name: a scan of the folder meanwhile never reads a half file.
                write_atomically(path, _encode(frame, jpeg_quality))
                written += 1
            first_time = timestamp if first_time is None else first_time
            last_time = timestamp
            sampled = written + existing
            if on_progress:
                on_progress(sampled, max(expected, sampled))
            if max_frames and sampled >= max_frames:
                break
    finally:
        capture.release()
    if decoded == 0:
        raise VideoError(f"cannot read {video}: no frame could be decoded")
    warnings = []
    if source_frames and end is None and not max_frames and index < source_frames * 0.9:
        warnings.append(f"decoding stopped at frame {index} of the {source_frames} the file announces "
                        "(truncated or damaged file?)")
        logger.info("%s: %s", video, warnings[-1])
    return ExtractSummary(
        video=str(video), out_dir=str(out_dir), source_fps=round(source_fps, 6),
        source_frames=source_frames, fps=float(fps), start=start, end=end, frames_decoded=decoded,
        frames_sampled=written + existing, frames_written=written, frames_existing=existing,
        first_time=None if first_time is None else round(first_time, 6),
        last_time=None if last_time is None else round(last_time, 6),
        image_format="jpeg" if jpeg_quality else "png",
        seconds=round(time.perf_counter() - started, 3), warnings=warnings,
    )
