"""The synthetic-content label: metadata and watermark on written frames, video metadata, and verify."""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

import curate
from curate.errors import FacesmithError
from curate.fileio import write_atomically
from merge.watermark import (
    DEFAULT_KEY,
    MAX_ITERATION_STORED,
    MIN_SIDE,
    WatermarkReading,
    decode_payload,
    detect_watermark_frames,
    embed_watermark,
    model_hash_prefix,
    payload_for,
)

logger = logging.getLogger(__name__)

# IPTC NewsCodes term for media made by a model trained on sampled content (what a face swap is).
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATOR = "facesmith"
# PNG: an iTXt chunk under this keyword (UTF-8, so any model name fits). JPEG: the same JSON is
# the COM (comment) segment, which Pillow writes with `comment=` and reads back as info["comment"];
# chosen over EXIF because it needs no EXIF encoder and holds UTF-8 JSON as-is.
METADATA_KEY = "facesmith"
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mkv", ".avi", ".mov")

# Video frames pooled for the watermark: every few frames from the start, so a check stays quick
# on long files yet spans more than one shot's worth of motion.
_VIDEO_FRAMES_CHECKED = 12
_VIDEO_FRAME_STRIDE = 5


class ProvenanceError(FacesmithError):
    """A file cannot be labelled or verified as asked (unreadable, unsupported type, bad setting)."""


@dataclass(frozen=True)
class SyntheticLabel:
    """Who made a synthetic frame: the model, its training iteration, when, and with which facesmith."""

    model: str  # the model's id or name, as the trainer knows it
    iteration: int  # training iteration of the weights that made the frame
    created_at: str  # ISO 8601 with a UTC offset
    tool_version: str = field(default=curate.__version__)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("a synthetic label needs a model name")
        if self.iteration < 0:
            raise ValueError(f"iteration must be non-negative, got {self.iteration}")

    @staticmethod
    def now(model: str, iteration: int) -> SyntheticLabel:
        """A label stamped with the current UTC time (to the second)."""
        return SyntheticLabel(model, iteration, datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def watermark_payload(self) -> bytes:
        """The 4-byte watermark payload for this label (see `merge.watermark.payload_for`)."""
        return payload_for(self.model, self.iteration)

    def to_metadata(self, watermarked: bool) -> dict[str, Any]:
        """The JSON-ready record written into files; `watermarked` says whether the pixels carry the mark."""
        return {
            "synthetic": True,
            "generator": GENERATOR,
            "tool_version": self.tool_version,
            "model": self.model,
            "iteration": self.iteration,
            "created_at": self.created_at,
            "digital_source_type": DIGITAL_SOURCE_TYPE,
            "watermark": watermarked,
        }


@dataclass(frozen=True)
class Verification:
    """What `verify_file` found: metadata, watermark, and the verdict in one sentence."""

    path: Path
    metadata: dict[str, Any] | None  # the facesmith JSON record, None when absent or unreadable
    watermark: WatermarkReading  # for video, the votes of the checked frames pooled
    synthetic: bool  # the metadata says synthetic, or the watermark is present
    summary: str
    frames_checked: int  # 1 for an image


def write_labelled_image(
    path: Path,
    image_bgr: np.ndarray,
    label: SyntheticLabel,
    jpeg_quality: int = 95,
    watermark: bool = True,
    key: int = DEFAULT_KEY,
) -> Path:
    """Write a uint8 (H, W, 3) BGR frame as PNG or JPEG (by `path`'s suffix), labelled as synthetic.

    The pixels get the invisible watermark unless `watermark` is False or the image is under
    MIN_SIDE pixels on a side (then only the metadata labels it, and the metadata says so).
    The file appears atomically. Returns `path`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ProvenanceError(f"cannot write a labelled image as {path.name!r}: use .png, .jpg or .jpeg")
    if not 1 <= jpeg_quality <= 100:
        raise ProvenanceError(f"JPEG quality must be 1..100, got {jpeg_quality}")
    image = np.asarray(image_bgr)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) BGR image, got {image.dtype} {image.shape}")
    watermarked = watermark and min(image.shape[:2]) >= MIN_SIDE
    if watermark and not watermarked:
        logger.warning(
            "%s: %dx%d is under %d px a side, too small for a watermark; labelled by metadata only",
            path.name, image.shape[1], image.shape[0], MIN_SIDE,
        )
    if watermarked:
        image = embed_watermark(image, label.watermark_payload(), key)
    text = json.dumps(label.to_metadata(watermarked), ensure_ascii=False, separators=(",", ":"))
    xmp = _xmp_packet(label)
    picture = Image.fromarray(np.ascontiguousarray(image[..., ::-1]))
    buffer = io.BytesIO()
    if suffix == ".png":
        chunks = PngImagePlugin.PngInfo()
        chunks.add_itxt(METADATA_KEY, text)
        chunks.add_itxt("XML:com.adobe.xmp", xmp)
        chunks.add_text("Software", f"{GENERATOR} {label.tool_version}")
        # Level 1: frames are written by the thousand; zlib at the default level 6 took half of a
        # 720p merge (220 ms a frame, 64 ms at level 1) for files only 14 % smaller.
        picture.save(buffer, format="PNG", pnginfo=chunks, compress_level=1)
    else:
        picture.save(
            buffer, format="JPEG", quality=jpeg_quality, comment=text.encode("utf-8"), xmp=xmp.encode("utf-8")
        )
    try:
        return write_atomically(path, buffer.getvalue())
    except OSError as error:
        raise ProvenanceError(f"cannot write {path}: {error.strerror or error}") from error


def video_metadata_arguments(label: SyntheticLabel, watermarked: bool = True) -> list[str]:
    """ffmpeg output arguments tagging a video as synthetic: the JSON record as `comment`, a sentence as `description`.

    `watermarked` says whether the caller marked the frames before encoding. The list goes to
    subprocess as separate arguments, so nothing in it needs shell quoting.
    """
    text = json.dumps(label.to_metadata(watermarked), ensure_ascii=False, separators=(",", ":"))
    return [
        "-metadata",
        f"comment={text}",
        "-metadata",
        f"description={_label_sentence(label)}",
    ]


def verify_file(path: Path, key: int = DEFAULT_KEY) -> Verification:
    """Look for facesmith's synthetic label in an image (PNG, JPEG, anything OpenCV reads) or a video.

    Images: the facesmith metadata (PNG text chunk or JPEG comment) and the watermark in the
    pixels as stored (EXIF orientation ignored, because the mark follows the stored grid).
    Videos (.mp4/.mkv/.avi/.mov): the watermark pooled over a few decoded frames; container
    metadata is not read, so `metadata` is None.
    """
    path = Path(path)
    if not path.is_file():
        raise ProvenanceError(f"no such file: {path}")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _verify_video(path, key)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProvenanceError(f"cannot read {path}: {error.strerror or error}") from error
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise ProvenanceError(f"cannot read {path} as an image: the file is corrupt or not an image")
    metadata = _read_metadata(data)
    reading = detect_watermark_frames([pixels], key)
    return _verdict(path, metadata, reading, frames_checked=1)


def _verify_video(path: Path, key: int) -> Verification:
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        if not capture.isOpened():
            raise ProvenanceError(f"cannot open {path} as a video: the file is corrupt or its codec unsupported")
        index = 0
        while len(frames) < _VIDEO_FRAMES_CHECKED and capture.grab():
            if index % _VIDEO_FRAME_STRIDE == 0:
                ok, frame = capture.retrieve()
                if ok and frame is not None and frame.ndim == 3 and frame.shape[2] == 3:
                    frames.append(frame)
            index += 1
    finally:
        capture.release()
    if not frames:
        raise ProvenanceError(f"cannot decode any frame of {path}")
    if any(frame.shape != frames[0].shape for frame in frames):
        # A stream that changes size mid-way: keep the frames matching the first.
        frames = [frame for frame in frames if frame.shape == frames[0].shape]
    reading = detect_watermark_frames(frames, key)
    return _verdict(path, _video_metadata(path), reading, frames_checked=len(frames))


def _video_metadata(path: Path) -> dict[str, Any] | None:
    """The facesmith JSON in a video container's `comment` tag, read with the bundled ffmpeg."""
    import subprocess

    try:
        import imageio_ffmpeg

        completed = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
            capture_output=True, timeout=60, check=False)
    except (ImportError, OSError, RuntimeError, subprocess.TimeoutExpired):
        return None
    for line in completed.stdout.decode("utf-8", errors="replace").splitlines():
        if line.startswith("comment="):
            # ffmetadata escapes '=', ';', '#', '\\' and newlines with a backslash
            raw = re.sub(r"\\(.)", r"\1", line[len("comment="):])
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                return None
            return record if isinstance(record, dict) and record.get("generator") == GENERATOR else None
    return None


def _read_metadata(data: bytes) -> dict[str, Any] | None:
    """The facesmith JSON record in a PNG text chunk or JPEG comment, or None."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            info = dict(picture.info)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        # Pillow could not parse the headers; the pixels may still be readable by OpenCV.
        return None
    for raw in (info.get(METADATA_KEY), info.get("comment")):
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        if not isinstance(raw, str):
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("generator") == GENERATOR:
            return record
    return None


def _verdict(
    path: Path, metadata: dict[str, Any] | None, reading: WatermarkReading, frames_checked: int
) -> Verification:
    labelled_by_metadata = metadata is not None and metadata.get("synthetic") is True
    synthetic = labelled_by_metadata or reading.present
    parts: list[str] = []
    if metadata is not None:
        parts.append(
            f"facesmith metadata (synthetic={metadata.get('synthetic')}, model {metadata.get('model')!r}, "
            f"iteration {metadata.get('iteration')}, made {metadata.get('created_at')})"
        )
    if reading.present and reading.payload is not None:
        model_hash, iteration = decode_payload(reading.payload)
        parts.append(f"watermark (model hash {model_hash}, iteration {iteration}, confidence {reading.confidence:.2f})")
        disagreement = _disagreement(metadata, model_hash, iteration)
        if disagreement:
            parts.append(disagreement)
    elif reading.votes_per_bit == 0:
        parts.append(f"no watermark checked (under {MIN_SIDE} px a side)")
    else:
        parts.append(f"no watermark (confidence {reading.confidence:.2f})")
    if metadata is None:
        parts.append("no facesmith metadata" if frames_checked == 1 else "container metadata not read")
    verdict = "synthetic" if synthetic else "no synthetic label found"
    return Verification(path, metadata, reading, synthetic, f"{verdict}: " + "; ".join(parts), frames_checked)


def _disagreement(metadata: dict[str, Any] | None, model_hash: str, iteration: int) -> str:
    """A note when the watermark names another model or iteration than the metadata (a relabelled file)."""
    if metadata is None:
        return ""
    model, iteration_claimed = metadata.get("model"), metadata.get("iteration")
    if not isinstance(model, str) or not isinstance(iteration_claimed, int):
        return ""
    expected_hash = model_hash_prefix(model)
    expected_iteration = min(iteration_claimed, MAX_ITERATION_STORED)
    if (expected_hash, expected_iteration) == (model_hash, iteration):
        return ""
    return "WARNING: the watermark and the metadata name different models or iterations"


def _label_sentence(label: SyntheticLabel) -> str:
    return (
        f"Synthetic media made with {GENERATOR} {label.tool_version} "
        f"(model {label.model}, iteration {label.iteration}); IPTC digital source type: trainedAlgorithmicMedia"
    )


def _xmp_packet(label: SyntheticLabel) -> str:
    """A minimal XMP packet with the IPTC DigitalSourceType, for tools that read XMP rather than our JSON."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        f"    Iptc4xmpExt:DigitalSourceType={quoteattr(DIGITAL_SOURCE_TYPE)}\n"
        f"    xmp:CreatorTool={quoteattr(f'{GENERATOR} {label.tool_version}')}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )
