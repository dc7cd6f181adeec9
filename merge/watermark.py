"""Invisible watermark: a 64-bit keyed mark in the luma DCT of a frame that survives JPEG quality 75."""

from __future__ import annotations

import binascii
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The 64 embedded bits ("the frame"), most significant first:
#   16-bit magic 0xFACE | 32-bit payload | 16-bit CRC-16/CCITT-FALSE of magic + payload.
# `payload_for` packs the payload as 8 bits of SHA-256(model id) then a 24-bit iteration.
PAYLOAD_BYTES = 4
FRAME_BITS = 64
MAGIC = 0xFACE
# The public key: anyone can verify a mark made with it. A private key gives a mark only its
# holder can find (and that no other key reads).
DEFAULT_KEY = 0
MIN_SIDE = 128
MAX_ITERATION_STORED = (1 << 24) - 1

_BLOCK = 8
# Mid-frequency (row, column) DCT positions that carry bits. JPEG q75 quantises them with steps
# of 6-8 luma levels, well inside the QIM decision margin of _STEP / 4; lower positions would
# show as soft blotches in flat areas, higher ones are quantised away.
_POSITIONS: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (2, 2), (0, 3), (3, 0))
# QIM lattice step on the 0..255 luma scale: two interleaved lattices sit _STEP / 2 apart, so a
# coefficient may move by up to _STEP / 4 (7 levels) before its bit flips.
_STEP = 28.0
# Re-quantising after rounding to uint8 and clipping recovers most bits those steps disturb.
_EMBED_PASSES = 3
# Mixed into every layout seed so facesmith marks do not collide with other QIM schemes.
_FACESMITH_KEY = 0x6661636573_6D697468
_LAYOUT_VERSION = 1
# BT.601 luma weights in BGR order, the same the JPEG encoder uses for its Y channel.
_LUMA_WEIGHTS = np.array([0.114, 0.587, 0.299], dtype=np.float32)
# An unmarked image scores about sqrt(1 / (pi * votes per bit)) with a tiny spread; "present"
# needs a score this many spreads above that, and never below the floor.
_NULL_SPREADS = 10.0
_CONFIDENCE_FLOOR = 0.2


@dataclass(frozen=True)
class WatermarkReading:
    """What `detect_watermark` found in an image (or a set of video frames)."""

    present: bool  # magic and CRC match and the vote margin is far above chance
    payload: bytes | None  # the PAYLOAD_BYTES payload when present, else None
    confidence: float  # mean |vote| over the 64 bits, 0..1; unmarked images score near 0
    bit_errors_estimate: float  # expected number of wrongly decided bits, from the vote spread
    votes_per_bit: int  # fewest coefficients voting on one bit; 0 when the image is too small


def payload_for(model_id: str, iteration: int) -> bytes:
    """The 4-byte payload naming a model and an iteration.

    Byte 0 is the first byte of SHA-256(model_id, UTF-8); bytes 1-3 the iteration, big-endian.
    Iterations above 16,777,215 are stored as 16,777,215 ("that many or more"); the file's
    metadata carries the exact number.
    """
    if iteration < 0:
        raise ValueError(f"iteration must be non-negative, got {iteration}")
    model_byte = hashlib.sha256(model_id.encode("utf-8")).digest()[:1]
    return model_byte + min(iteration, MAX_ITERATION_STORED).to_bytes(3, "big")


def model_hash_prefix(model_id: str) -> str:
    """The two hex digits of SHA-256(model_id) that `payload_for` stores, to compare with a reading."""
    return payload_for(model_id, 0)[:1].hex()


def decode_payload(payload: bytes) -> tuple[str, int]:
    """(model hash prefix as two hex digits, iteration) from a payload made by `payload_for`."""
    _check_payload(payload)
    return payload[:1].hex(), int.from_bytes(payload[1:], "big")


def embed_watermark(image_bgr: np.ndarray, payload: bytes, key: int = DEFAULT_KEY) -> np.ndarray:
    """A copy of `image_bgr` (uint8 (H, W, 3) BGR) carrying `payload` invisibly, same shape and dtype.

    The mark lives in the luma of the 8x8 blocks aligned to the top-left corner (the JPEG grid),
    so it survives re-encoding but not cropping, rotation or a change of size. Raises ValueError
    for images under MIN_SIDE pixels on a side; callers skip the mark for those.
    """
    image = _check_image(image_bgr)
    _check_payload(payload)
    _check_size(image.shape[:2])
    layout = _Layout.for_image(image.shape[:2], key)
    wanted = _frame_bits(payload)[layout.bit_of_slot]
    offsets = layout.dither + wanted * (_STEP / 2.0)
    marked = image
    for _ in range(_EMBED_PASSES):
        luma = _luma(marked)
        coefficients = _block_coefficients(luma, layout)
        quantised = np.round((coefficients - offsets) / _STEP) * _STEP + offsets
        change = _blocks_from_coefficients(quantised - coefficients, layout, image.shape[:2])
        marked = np.clip(np.rint(marked.astype(np.float32) + change[..., None]), 0, 255).astype(np.uint8)
    return marked


def detect_watermark(image_bgr: np.ndarray, key: int = DEFAULT_KEY) -> WatermarkReading:
    """Read the mark from one uint8 (H, W, 3) BGR image; images under MIN_SIDE read as absent."""
    return detect_watermark_frames([image_bgr], key)


def detect_watermark_frames(frames: Sequence[np.ndarray], key: int = DEFAULT_KEY) -> WatermarkReading:
    """Read one mark from several same-size uint8 (H, W, 3) BGR frames by pooling their votes.

    Meant for video, where every frame carries the same payload: pooling turns many weak
    per-frame votes into one confident reading.
    """
    if not frames:
        raise ValueError("detect_watermark_frames needs at least one frame")
    images = [_check_image(frame) for frame in frames]
    shape = images[0].shape
    if any(image.shape != shape for image in images):
        raise ValueError("all frames must have the same shape to pool their watermark votes")
    if min(shape[:2]) < MIN_SIDE:
        return WatermarkReading(False, None, 0.0, float(FRAME_BITS) / 2.0, 0)
    layout = _Layout.for_image(shape[:2], key)
    vote_sum = np.zeros(FRAME_BITS)
    vote_square_sum = np.zeros(FRAME_BITS)
    for image in images:
        residual = np.mod((_block_coefficients(_luma(image), layout) - layout.dither) / _STEP, 1.0)
        # +1 on the bit-0 lattice, -1 on the bit-1 lattice, 0 half-way between.
        votes = np.cos(2.0 * np.pi * residual)
        vote_sum += np.bincount(layout.bit_of_slot, weights=votes, minlength=FRAME_BITS)
        vote_square_sum += np.bincount(layout.bit_of_slot, weights=votes * votes, minlength=FRAME_BITS)
    counts = layout.slots_per_bit * len(images)
    mean_votes = vote_sum / counts
    bits = (mean_votes < 0).astype(np.uint8)
    margins = np.abs(mean_votes)
    confidence = float(margins.mean())
    spread = np.sqrt(np.maximum(vote_square_sum / counts - mean_votes**2, 1e-12) / counts)
    bit_errors = sum(0.5 * math.erfc(m / (s * math.sqrt(2.0))) for m, s in zip(margins, spread, strict=True))
    payload = _payload_if_valid(bits)
    # Magic and CRC alone let a random image through once in 2**32; the margin test makes it
    # practically never, while marked frames after JPEG q50 still score about 0.6.
    present = payload is not None and confidence >= _presence_threshold(counts)
    return WatermarkReading(
        present=present,
        payload=payload if present else None,
        confidence=confidence,
        bit_errors_estimate=float(bit_errors),
        votes_per_bit=int(counts.min()),
    )


@dataclass(frozen=True)
class _Layout:
    """Where each bit goes in an image of one size under one key."""

    rows: int  # whole 8x8 blocks down
    columns: int  # whole 8x8 blocks across
    bit_of_slot: np.ndarray  # (rows * columns * len(_POSITIONS),) int64 frame bit index per coefficient
    dither: np.ndarray  # (same,) float64 in [0, _STEP): the keyed lattice shift per coefficient
    slots_per_bit: np.ndarray  # (FRAME_BITS,) float64 coefficients voting on each bit

    @staticmethod
    def for_image(shape: tuple[int, int], key: int) -> _Layout:
        if key < 0:
            raise ValueError(f"watermark key must be a non-negative integer, got {key}")
        rows, columns = shape[0] // _BLOCK, shape[1] // _BLOCK
        slots = rows * columns * len(_POSITIONS)
        rng = np.random.default_rng(np.random.SeedSequence([_FACESMITH_KEY, key, rows, columns, _LAYOUT_VERSION]))
        bit_of_slot = np.empty(slots, dtype=np.int64)
        # A keyed shuffle of an even round-robin: every bit gets the same number of coefficients
        # (+-1), scattered over the whole frame so a damaged region costs every bit a little.
        bit_of_slot[rng.permutation(slots)] = np.arange(slots) % FRAME_BITS
        dither = rng.uniform(0.0, _STEP, size=slots)
        slots_per_bit = np.bincount(bit_of_slot, minlength=FRAME_BITS).astype(np.float64)
        return _Layout(rows, columns, bit_of_slot, dither, slots_per_bit)


def _dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II matrix (row k = basis k), the transform JPEG and cv2.dct use."""
    k = np.arange(_BLOCK)[:, None]
    n = np.arange(_BLOCK)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * _BLOCK)) * math.sqrt(2.0 / _BLOCK)
    matrix[0] /= math.sqrt(2.0)
    return matrix


_DCT = _dct_matrix()
# (K, 64): row k is the flattened 8x8 basis image of position k, so a block's coefficient k is
# block.flatten() @ _BASES[k] and adding c * _BASES[k] to a block moves only that coefficient.
_BASES = np.stack([np.outer(_DCT[u], _DCT[v]).reshape(-1) for u, v in _POSITIONS])


def _luma(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 BT.601 luma on the 0..255 scale of a uint8 BGR image."""
    return image.astype(np.float32) @ _LUMA_WEIGHTS


def _block_coefficients(luma: np.ndarray, layout: _Layout) -> np.ndarray:
    """(slots,) the chosen DCT coefficients of every whole 8x8 block, block-major."""
    height, width = layout.rows * _BLOCK, layout.columns * _BLOCK
    blocks = luma[:height, :width].reshape(layout.rows, _BLOCK, layout.columns, _BLOCK).swapaxes(1, 2)
    return (blocks.reshape(-1, _BLOCK * _BLOCK) @ _BASES.T).reshape(-1)


def _blocks_from_coefficients(changes: np.ndarray, layout: _Layout, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 pixel change whose block DCT moves the chosen coefficients by `changes`.

    Partial blocks on the right and bottom edges carry no bits and stay unchanged.
    """
    pixels = changes.reshape(-1, len(_POSITIONS)).astype(np.float32) @ _BASES.astype(np.float32)
    pixels = pixels.reshape(layout.rows, layout.columns, _BLOCK, _BLOCK).swapaxes(1, 2)
    full = np.zeros(shape, dtype=np.float32)
    full[: layout.rows * _BLOCK, : layout.columns * _BLOCK] = pixels.reshape(
        layout.rows * _BLOCK, layout.columns * _BLOCK
    )
    return full


def _frame_bits(payload: bytes) -> np.ndarray:
    """(FRAME_BITS,) uint8 bits of magic + payload + CRC, most significant first."""
    body = MAGIC.to_bytes(2, "big") + payload
    frame = body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")
    return np.unpackbits(np.frombuffer(frame, dtype=np.uint8))


def _payload_if_valid(bits: np.ndarray) -> bytes | None:
    frame = np.packbits(bits).tobytes()
    body, crc = frame[:-2], int.from_bytes(frame[-2:], "big")
    if int.from_bytes(body[:2], "big") != MAGIC or binascii.crc_hqx(body, 0xFFFF) != crc:
        return None
    return body[2:]


def _presence_threshold(counts: np.ndarray) -> float:
    """The confidence an image must reach, far above what chance gives for these vote counts."""
    # Under "no mark" each vote is cos of a uniform angle (mean 0, variance 1/2), so each bit's
    # mean vote is about N(0, 1 / (2 n)) and its magnitude has mean sqrt(1 / (pi n)).
    null_mean = float(np.mean(np.sqrt(1.0 / (np.pi * counts))))
    null_spread = float(np.sqrt(np.mean((1.0 - 2.0 / np.pi) / (2.0 * counts))) / math.sqrt(FRAME_BITS))
    return max(_CONFIDENCE_FLOOR, null_mean + _NULL_SPREADS * null_spread)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) BGR image, got {image.dtype} {image.shape}")
    return image


def _check_payload(payload: bytes) -> None:
    if not isinstance(payload, bytes | bytearray) or len(payload) != PAYLOAD_BYTES:
        raise ValueError(f"watermark payload must be exactly {PAYLOAD_BYTES} bytes, got {payload!r}")


def _check_size(shape: tuple[int, int]) -> None:
    if min(shape) < MIN_SIDE:
        raise ValueError(
            f"image is {shape[1]}x{shape[0]} pixels; a watermark needs at least {MIN_SIDE} on each side"
        )
