"""`merge run`: detect, align, predict, warp back and blend every face of every frame; resumable.

Frames come from a folder (sorted by name) or a video, optionally a range of them. Each merged frame
is written with the synthetic-content label (metadata and watermark); a video, when asked, is encoded
from the written frames by the ffmpeg binary that ships in the imageio-ffmpeg wheel, at the source
video's frame rate and with its audio (cut to the same range), the label in its metadata. A re-run
with the same model iteration and settings skips frames already written; a model that trained
further, or changed settings, re-merges everything (and says so). `merge_preview` writes one frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from curate.faces.align import face_transform, transform_points, warp_face
from curate.errors import FacesmithError
from curate.fileio import remove_stale_temporaries, write_atomically
from curate.scan.ingest import IMAGE_EXTENSIONS
from merge.settings import MergeSettings, settings_to_toml
from train.model_folder import is_model_folder
from train.sampler import landmark_masks

log = logging.getLogger(__name__)

SESSION_FILE = "merge_session.json"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")
FOLDER_FPS = 25.0  # a folder of frames has no rate of its own
_RANGE = re.compile(r"^\s*(\d*)\s*:\s*(\d*)\s*$")


class MergeRunError(FacesmithError):
    """Frames cannot be read or written, or the model folder cannot be used."""


@dataclass(frozen=True)
class FrameRange:
    """Frames `start` (0-based, in source order) up to but not including `stop` (None: to the end)."""

    start: int = 0
    stop: int | None = None

    def __str__(self) -> str:
        return f"{self.start}:{'' if self.stop is None else self.stop}"


def parse_frame_range(text: str) -> FrameRange:
    """'100:400' (frames 100..399), '100:' or ':400', as in a Python slice; raises MergeRunError otherwise."""
    match = _RANGE.match(text or "")
    if match is None:
        raise MergeRunError(f"frame range {text!r} is not START:END (e.g. 100:400, 100: or :400)")
    start = int(match.group(1)) if match.group(1) else 0
    stop = int(match.group(2)) if match.group(2) else None
    if stop is not None and stop <= start:
        raise MergeRunError(f"frame range {text!r} is empty: END must be greater than START")
    return FrameRange(start, stop)


@dataclass(frozen=True)
class MergeRunSummary:
    frames: int
    merged: int
    skipped: int  # already merged by an earlier run with the same model iteration and settings
    without_face: int
    faces: int
    seconds: float
    frames_per_second: float
    out_dir: str
    video: str | None
    model_iteration: int
    device: str
    frame_range: str = "0:"  # the frames merged, START:END as given (END exclusive)
    fps: float | None = None  # the video's frame rate (the source's unless overridden); None without a video
    audio: bool = False  # the video carries the source's audio
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_names(paths: list[Path]) -> list[str]:
    """The output name (without suffix) of each frame file, one-to-one with the inputs.

    A frame's stem, unless another frame shares it (`x.jpg` and `x.png`, or `X.jpg` on a folder
    that ignores case): then its whole file name, `x.jpg` -> `x.jpg.png`, so no merged frame
    overwrites another and the summary's count is the number of files written.
    """
    stems = [path.stem.lower() for path in paths]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    return [path.name if path.stem.lower() in shared else path.stem for path in paths]


@dataclass(frozen=True)
class _FrameSource:
    """The frames to merge: (name, frame or None when undecodable) pairs, and what a video needs."""

    frames: Iterator[tuple[str, np.ndarray | None]]
    count: int  # frames in the range (a video's count is what its header says)
    fps: float  # the source video's rate, FOLDER_FPS for a folder
    video: Path | None  # the source when it is a video (its audio goes into the output video)


def _frame_sources(source: Path, frame_range: FrameRange = FrameRange()) -> _FrameSource:
    """The frames of a folder (sorted by name) or a video, limited to `frame_range`."""
    start, stop = frame_range.start, frame_range.stop
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        paths = paths[start:stop]

        def from_folder() -> Iterator[tuple[str, np.ndarray | None]]:
            for path, name in zip(paths, output_names(paths)):
                data = np.fromfile(path, dtype=np.uint8)
                yield name, cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        return _FrameSource(from_folder(), len(paths), FOLDER_FPS, None)
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            raise MergeRunError(f"cannot open video {source}")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = capture.get(cv2.CAP_PROP_FPS) or FOLDER_FPS
        count = max(0, min(total, stop if stop is not None else total) - start)

        def from_video() -> Iterator[tuple[str, np.ndarray | None]]:
            try:
                # Skipped frames are grabbed, not sought: seeking by frame number lands on key frames
                # in many codecs, and a range must start exactly where it says.
                for _ in range(start):
                    if not capture.grab():
                        return
                index = start
                while stop is None or index < stop:
                    ok, frame = capture.read()
                    if not ok:
                        return
                    # Names keep the source's frame number, so merged ranges of one video fit together.
                    yield f"{source.stem}_{index:06d}", frame
                    index += 1
            finally:
                capture.release()
        return _FrameSource(from_video(), count, float(fps), source)
    raise MergeRunError(f"{source} is neither a folder of images nor a video ({', '.join(VIDEO_SUFFIXES)})")


def _fingerprint(model_dir: Path, iteration: int, settings: MergeSettings) -> dict[str, Any]:
    return {"model": str(model_dir.resolve()), "iteration": iteration,
            "settings_sha256": hashlib.sha256(settings_to_toml(settings).encode()).hexdigest()}


@dataclass(frozen=True, eq=False)
class MergedFace:
    """One face of a merged frame as the merge saw it; merge checks score these."""

    centre: np.ndarray  # (2,) centre of the detected box, frame pixels
    frame_to_face: np.ndarray  # (2, 3) affine, frame pixels -> aligned pixels
    dst_face: np.ndarray  # (R, R, 3) float32 0..1, the aligned crop of the frame
    predicted: np.ndarray  # (R, R, 3) float32 0..1, the model's swapped face
    mask: np.ndarray  # (R, R, 1) float32 0..1, the blend mask after erode and blur


def merge_frame(frame: np.ndarray, faces: list[Any], predictor: Any, settings: MergeSettings,
                previous_centre: np.ndarray | None = None) -> tuple[np.ndarray, list[MergedFace]]:
    """Merge every located face of one uint8 BGR frame; returns the uint8 frame and its faces.

    faces: anything with `landmarks68` (68×2, frame pixels) and `bbox` (x1, y1, x2, y2).
    In raw-predict mode the frame is the model's output, faces side by side, and no face is returned.
    """
    from merge.blend import blend_face, combine_masks, process_mask

    resolution, face_type = predictor.resolution, predictor.face_type
    merged = frame.astype(np.float32) / 255.0
    merged_faces: list[MergedFace] = []
    if not faces:
        return frame, merged_faces
    matrices = [face_transform(np.asarray(face.landmarks68, np.float64), face_type, resolution) for face in faces]
    crops = np.stack([warp_face(frame, matrix, resolution) for matrix in matrices]).astype(np.float32) / 255.0
    swap = predictor.swap(crops)
    if settings.mode == "raw-predict":  # the model's own output, faces side by side, no frame
        return np.clip(np.concatenate(list(swap.faces), axis=1) * 255 + 0.5, 0, 255).astype(np.uint8), merged_faces
    for index, (face, matrix) in enumerate(zip(faces, matrices, strict=True)):
        hull, _ = landmark_masks(transform_points(matrix, np.asarray(face.landmarks68, np.float64)), resolution)
        mask = combine_masks(settings.mask_mode, hull, swap.face_masks[index], swap.dst_masks[index])
        mask = process_mask(mask, resolution, settings.erode, settings.blur,
                            (settings.erode_top, settings.erode_bottom, settings.erode_left, settings.erode_right))
        centre = np.asarray(face.bbox, np.float64).reshape(2, 2).mean(axis=0)
        # Motion blur needs one face to follow; with several per frame it is off (as in SAEHD).
        motion = (centre - previous_centre) if (previous_centre is not None and len(faces) == 1) else None
        merged, _ = blend_face(merged, swap.faces[index], matrix, mask, settings, crops[index],
                               np.random.default_rng(index), motion_vector=motion)
        merged_faces.append(MergedFace(centre, matrix, crops[index], swap.faces[index], mask))
    return np.clip(merged * 255 + 0.5, 0, 255).astype(np.uint8), merged_faces


def merge_frames(model_dir: Path, source: Path, out_dir: Path, settings: MergeSettings,
                 video: Path | None = None, analyzer: Any = None, step: int | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 frame_range: FrameRange = FrameRange(), fps: float | None = None) -> MergeRunSummary:
    """Merge every frame of `source` (those in `frame_range`) with the model at `model_dir` into
    `out_dir`, and into `video` when given: at `fps`, else the source video's rate (25 for a folder),
    with the source video's audio for the same stretch of time."""
    from merge.provenance import (
        SyntheticLabel,
        video_metadata_arguments,
        write_labelled_image,
    )
    from train.predictor import Predictor

    model_dir, source, out_dir = Path(model_dir), Path(source), Path(out_dir)
    if source.is_dir() and out_dir.exists() and out_dir.resolve() == source.resolve():
        raise MergeRunError(f"--out {out_dir} is the --frames folder: merged frames would replace the "
                            "originals; write them to another folder")
    if not is_model_folder(model_dir):
        raise MergeRunError(f"{model_dir} is not a model folder: train one with 'facesmith train run'")
    if fps is not None and not fps > 0:
        raise MergeRunError(f"frame rate {fps} must be above 0")
    frames_in = _frame_sources(source, frame_range)
    predictor = Predictor(model_dir, step)
    if analyzer is None:
        analyzer = _analyzer_for_model(model_dir)
    frames, total = frames_in.frames, frames_in.count
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # frames a killed run (even SIGKILL) was writing
    fingerprint = _fingerprint(model_dir, predictor.iteration, settings)
    session_path = out_dir / SESSION_FILE
    warnings: list[str] = []
    previous = json.loads(session_path.read_text(encoding="utf-8")) if session_path.is_file() else None
    reuse = previous == fingerprint
    if previous is not None and not reuse:
        warnings.append(f"model iteration or settings changed since the last merge into {out_dir} "
                        f"(iteration {previous.get('iteration')} -> {predictor.iteration}): re-merging every frame")
    write_atomically(out_dir / "merge_settings.toml", settings_to_toml(settings))
    write_atomically(session_path, json.dumps(fingerprint, indent=1))
    label = SyntheticLabel(model=model_dir.resolve().name, iteration=predictor.iteration,
                           created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           tool_version=_version())
    suffix = ".jpg" if settings.output_format == "jpg" else ".png"
    started = time.perf_counter()
    merged = skipped = without_face = face_count = done = 0
    written: list[Path] = []
    previous_centre = None
    for name, frame in frames:
        done += 1
        target = out_dir / f"{name}{suffix}"
        if frame is None:
            warnings.append(f"{name}: cannot decode the frame; skipped")
            continue
        if reuse and target.is_file() and target.stat().st_size > 0:
            skipped += 1
            written.append(target)
            previous_centre = None
        else:
            faces = analyzer.locate(frame)
            without_face += not faces
            face_count += len(faces)
            result, merged_faces = merge_frame(frame, faces, predictor, settings, previous_centre)
            previous_centre = merged_faces[0].centre if len(merged_faces) == 1 else None
            write_labelled_image(target, result, label, jpeg_quality=settings.jpeg_quality)
            written.append(target)
            merged += 1
        if on_progress is not None:
            on_progress(done, total)
    video_fps, audio = None, False
    if video is not None and written:
        video_fps = fps or frames_in.fps
        # The audio of the merged stretch: from the first frame's time, as long as the frames last in
        # the source, cut where the video ends when --fps makes it shorter.
        audio_source = None if frames_in.video is None else (
            frames_in.video, frame_range.start / frames_in.fps, len(written) / max(frames_in.fps, video_fps))
        audio = _encode_video(written, Path(video), video_fps, video_metadata_arguments(label), audio_source)
        if fps is not None and frames_in.video is not None and abs(fps - frames_in.fps) > 1e-3 and audio:
            warnings.append(f"--fps {fps:g} differs from the source's {frames_in.fps:g}: the video plays at another "
                            "speed than its audio, which is kept as recorded and cut where the video ends")
    seconds = time.perf_counter() - started
    return MergeRunSummary(frames=done, merged=merged, skipped=skipped, without_face=without_face,
                           faces=face_count, seconds=seconds, frames_per_second=merged / seconds if seconds else 0.0,
                           out_dir=str(out_dir), video=str(video) if video else None,
                           model_iteration=predictor.iteration, device=str(analyzer.providers),
                           frame_range=str(frame_range), fps=video_fps, audio=audio, warnings=warnings)


@dataclass(frozen=True)
class MergePreview:
    """One frame merged with the current settings (`facesmith merge preview`)."""

    frame: str  # the source frame's name
    frame_index: int  # its 0-based position in the source
    faces: int
    out: str
    model_iteration: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge_preview(model_dir: Path, source: Path, out: Path, settings: MergeSettings, frame: int = 0,
                  analyzer: Any = None, step: int | None = None) -> MergePreview:
    """Merge frame number `frame` of `source` with `settings` and write it, labelled, to `out`
    (PNG or JPEG by its suffix): a look at the settings before a whole run."""
    from merge.provenance import SyntheticLabel, write_labelled_image
    from train.predictor import Predictor

    model_dir, source, out = Path(model_dir), Path(source), Path(out)
    if not is_model_folder(model_dir):
        raise MergeRunError(f"{model_dir} is not a model folder: train one with 'facesmith train run'")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise MergeRunError(f"{out}: a preview is written as .png or .jpg")
    if frame < 0:
        raise MergeRunError(f"frame {frame} must be 0 or more")
    name, image = next(iter(_frame_sources(source, FrameRange(frame, frame + 1)).frames), (None, None))
    if name is None:
        raise MergeRunError(f"{source} has no frame {frame}")
    if image is None:
        raise MergeRunError(f"{source}: frame {frame} ({name}) cannot be decoded")
    predictor = Predictor(model_dir, step)
    if analyzer is None:
        analyzer = _analyzer_for_model(model_dir)
    faces = analyzer.locate(image)
    result, _ = merge_frame(image, faces, predictor, settings)
    label = SyntheticLabel(model=model_dir.resolve().name, iteration=predictor.iteration,
                           created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           tool_version=_version())
    out.parent.mkdir(parents=True, exist_ok=True)
    write_labelled_image(out, result, label, jpeg_quality=settings.jpeg_quality)
    warnings = [] if faces else [f"no face found in frame {frame} ({name}): the preview is the frame unchanged"]
    return MergePreview(frame=name, frame_index=frame, faces=len(faces), out=str(out),
                        model_iteration=predictor.iteration, warnings=warnings)


def _analyzer_for_model(model_dir: Path) -> Any:
    """Detect and align frames with the backend that curated the model's dst faceset (embedded if gone)."""
    from curate.scan.pipeline import analyzer_for_faceset

    from train.model_folder import ModelFolderError, read_model_folder

    folder = read_model_folder(model_dir)  # through the model folder's one door (its checks, old relative paths)
    try:
        return analyzer_for_faceset(folder.faceset("dst"))
    except ModelFolderError as gone:
        from curate.faces.backends.embedded import EmbeddedFaceAnalyzer

        log.warning("%s: detecting with the embedded backend", gone)
        return EmbeddedFaceAnalyzer(device="auto")


def _version() -> str:
    from curate import __version__

    return __version__


def _encode_video(frames: list[Path], video: Path, fps: float, metadata: list[str],
                  audio: tuple[Path, float, float] | None = None) -> bool:
    """H.264 video from the written (already watermarked) frames, labelled in its metadata, with the
    audio of `audio` = (source video, start seconds, duration seconds) when it has any.

    Written to a temporary file beside `video` and renamed, so a kill leaves no half video. Returns
    whether the video carries audio.
    """
    import imageio_ffmpeg

    first = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR)
    height, width = first.shape[:2]
    video.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{video.stem}.", suffix=video.suffix, dir=video.parent)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        writer = imageio_ffmpeg.write_frames(str(temporary), (width, height), fps=fps, codec="libx264", quality=8,
                                             macro_block_size=1, output_params=metadata, ffmpeg_log_level="error")
        writer.send(None)
        for path in frames:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None or frame.shape[:2] != (height, width):
                frame = cv2.resize(frame if frame is not None else first, (width, height))
            writer.send(np.ascontiguousarray(frame[:, :, ::-1]))
        writer.close()
        with_audio = audio is not None and _has_audio(audio[0])
        if with_audio:
            temporary = _add_audio(temporary, audio, metadata)
        _keep_permissions(temporary)
        os.replace(temporary, video)
        return with_audio
    finally:
        temporary.unlink(missing_ok=True)


def _has_audio(source: Path) -> bool:
    """Whether ffmpeg finds an audio stream in `source`."""
    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(source)],
                           capture_output=True, text=True, timeout=120)
    return re.search(r"Stream #\S+.*: Audio:", probe.stderr) is not None


def _add_audio(video: Path, audio: tuple[Path, float, float], metadata: list[str]) -> Path:
    """A copy of `video` with the audio of (source, start s, duration s) muxed in, AAC; the video
    stream is copied, not re-encoded. Returns the new temporary file (the old one is deleted)."""
    import imageio_ffmpeg

    source, start, duration = audio
    handle, name = tempfile.mkstemp(prefix=f".{video.stem}.audio.", suffix=video.suffix, dir=video.parent)
    os.close(handle)
    muxed = Path(name)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-i", str(video),
               "-ss", f"{start:.6f}", "-t", f"{duration:.6f}", "-i", str(source),
               "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac",
               "-map_metadata", "0", *metadata, str(muxed)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if completed.returncode != 0:
        muxed.unlink(missing_ok=True)
        raise MergeRunError(f"could not add the audio of {source} to the video: "
                            f"{completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else 'ffmpeg failed'}")
    video.unlink(missing_ok=True)
    return muxed


def _keep_permissions(path: Path) -> None:
    """mkstemp makes files 0600; a video is an ordinary output and gets the user's umask like any other."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
