"""Build a folder of hostile and unusual image files, made by code, with what ingest should do."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Names the tests look at pixel by pixel.
EXIF_ROTATED = "exif_rotated.jpg"
GRAY16_PNG = "gray16.png"
GRAY16_PGM = "gray16.pgm"
CMYK_JPEG = "cmyk.jpg"
GRAY_JPEG = "gray.jpg"
RGBA_PNG = "rgba.png"
PALETTE_PNG = "palette.png"
PALETTE_TRANSPARENT_PNG = "palette_transparent.png"
PREMULTIPLIED_TIFF = "premultiplied_la.tiff"
ANIMATED_GIF = "animated.gif"
ANIMATED_WEBP = "animated.webp"
BOMB_PNG = "bomb.png"
UNREADABLE = "unreadable.jpg"
NON_UTF8_NAME = b"\xff\xfe_face.jpg"
NON_UTF8_STORED = "\\xff\\xfe_face.jpg"  # what ingest stores for NON_UTF8_NAME
UNICODE_NAME = "ünïcødé_顔.jpg"

# 16-bit sample values written into the 16-bit files, left half then right half.
GRAY16_LEFT, GRAY16_RIGHT = 65535, 32768

# The EXIF case is stored 64 wide × 48 tall with orientation 6 ("rotate 90° clockwise to view"),
# a red block in the stored top-left corner and a green block in the stored top-right corner.
# Viewed (decoded) it is 48 wide × 64 tall, red top-right and green bottom-right.
EXIF_STORED_SIZE = (64, 48)  # width, height

RED_BGR = (0, 0, 255)
GREEN_BGR = (0, 255, 0)
BLUE_BGR = (255, 0, 0)


@dataclass(frozen=True)
class Expectation:
    """What ingest should make of one corpus path."""

    status: Literal["ok", "rejected"]
    reason: str | None  # a curate.scan.ingest.REJECT_REASONS code when rejected, else None


OK = Expectation("ok", None)


def _rejected(reason: str) -> Expectation:
    return Expectation("rejected", reason)


def gradient_image(width: int = 128, height: int = 96) -> np.ndarray:
    """(height, width, 3) uint8 BGR with a different gradient in each channel."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    blue = np.broadcast_to(x, (height, width))
    green = np.broadcast_to(y, (height, width))
    red = (blue + green) / 2
    return np.stack([blue, green, red], axis=2).astype(np.uint8)


def encode(image: Image.Image, format_name: str, **params: object) -> bytes:
    """The bytes Pillow writes for image in format_name."""
    buffer = io.BytesIO()
    image.save(buffer, format_name, **params)
    return buffer.getvalue()


def _pil_from_bgr(image_bgr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png_bytes(width: int, height: int) -> bytes:
    """A valid PNG header declaring width × height RGB pixels, then one scanline of image data.

    Nothing near width × height is ever allocated: a decoder that trusted the header would run out
    of data (truncated), so a 'too-large' verdict proves the size was checked before decoding.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    scanline = b"\x00" + b"\x00" * 3 * min(width, 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanline))
        + _png_chunk(b"IEND", b"")
    )


def corrupt_idat_png_bytes() -> bytes:
    """A PNG whose header is sound but whose IDAT is not zlib data (the decoder itself fails)."""
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"this is not zlib data at all")
        + _png_chunk(b"IEND", b"")
    )


def exif_rotated_jpeg_bytes() -> bytes:
    """The EXIF case described at EXIF_STORED_SIZE."""
    width, height = EXIF_STORED_SIZE
    stored = np.full((height, width, 3), 128, dtype=np.uint8)
    stored[:16, :16] = RED_BGR
    stored[:16, -16:] = GREEN_BGR
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(_pil_from_bgr(stored), "JPEG", quality=95, exif=exif.tobytes())


def _gray16_array() -> np.ndarray:
    values = np.empty((16, 16), dtype=np.uint16)
    values[:, :8] = GRAY16_LEFT
    values[:, 8:] = GRAY16_RIGHT
    return values


def _premultiplied_la_tiff_bytes() -> bytes:
    """A grayscale TIFF with associated (premultiplied) alpha, which Pillow opens as mode 'La'.

    Pillow cannot write 'La', so write 'LA' and flip its ExtraSamples tag (338) from 2
    (unassociated) to 1 (associated). Pillow cannot convert 'La' to RGB directly.
    """
    data = encode(Image.new("LA", (8, 8), (200, 128)), "TIFF")
    tag = b"\x52\x01\x03\x00\x01\x00\x00\x00"  # little-endian: tag 338, type SHORT, count 1
    marked = data.replace(tag + b"\x02\x00", tag + b"\x01\x00")
    if marked == data:
        raise RuntimeError("Pillow's LA TIFF no longer has the expected ExtraSamples entry")
    return marked


def _palette_image() -> Image.Image:
    image = Image.new("P", (16, 16), 0)
    palette = [255, 255, 255, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    image.putpalette(palette)
    image.paste(1, (0, 0, 8, 16))  # left half red
    image.paste(2, (8, 0, 16, 8))  # top right blue; bottom right stays index 0 (white)
    return image


def _rgba_image() -> Image.Image:
    """Left third opaque red, middle third half-transparent red, right third transparent white."""
    pixels = np.zeros((12, 12, 4), dtype=np.uint8)
    pixels[:, :4] = (255, 0, 0, 255)
    pixels[:, 4:8] = (255, 0, 0, 128)
    pixels[:, 8:] = (255, 255, 255, 0)
    return Image.fromarray(pixels, "RGBA")


def _two_frames() -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]


def _try_symlink(target: str, link: Path) -> bool:
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError) as exc:
        logger.warning("cannot create symlink %s: %s", link, exc)
        return False
    return True


def _can_still_read(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            stream.read(1)
    except OSError:
        return False
    return True


def build_hostile_corpus(
    directory: Path, good_image: np.ndarray | None = None
) -> dict[str, Expectation]:
    """Write the hostile corpus into directory; return {rel_path: Expectation} for every path ingest
    should report (hidden files and a symlink back to an ancestor are written but not listed).

    good_image: (H, W, 3) uint8 BGR, ideally a real face photo; a gradient is used when None.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    good = gradient_image() if good_image is None else good_image
    good_pil = _pil_from_bgr(good)
    good_jpeg = encode(good_pil, "JPEG", quality=90)
    expected: dict[str, Expectation] = {}

    def write(rel_path: str, data: bytes, expectation: Expectation) -> Path:
        path = directory / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[rel_path] = expectation
        return path

    # Good images, under several names and formats.
    write("good_1.jpg", good_jpeg, OK)
    write("good_2.png", encode(good_pil, "PNG"), OK)
    write("sub/good_3.jpg", good_jpeg, OK)
    write("tiny_8x8.png", encode(good_pil.resize((8, 8)), "PNG"), OK)
    write("png_named.jpg", encode(good_pil, "PNG"), OK)
    write("image.webp", encode(good_pil, "WEBP", quality=90), OK)
    write("image.tiff", encode(good_pil, "TIFF"), OK)
    write("image.bmp", encode(good_pil, "BMP"), OK)
    write("image.ppm", encode(good_pil, "PPM"), OK)
    write(UNICODE_NAME, good_jpeg, OK)

    # Modes that must be converted, not rejected.
    write(GRAY16_PNG, encode(Image.fromarray(_gray16_array()), "PNG"), OK)
    write(GRAY16_PGM, encode(Image.fromarray(_gray16_array()), "PPM"), OK)
    write(CMYK_JPEG, encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95), OK)
    write(GRAY_JPEG, encode(good_pil.convert("L"), "JPEG", quality=90), OK)
    write("gray.pgm", encode(good_pil.convert("L"), "PPM"), OK)
    write(RGBA_PNG, encode(_rgba_image(), "PNG"), OK)
    write(PALETTE_PNG, encode(_palette_image(), "PNG"), OK)
    # Index 0 (white) transparent: must come out black, composited like any other alpha.
    write(PALETTE_TRANSPARENT_PNG, encode(_palette_image(), "PNG", transparency=0), OK)
    write(PREMULTIPLIED_TIFF, _premultiplied_la_tiff_bytes(), OK)
    float_values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    write("float.tiff", encode(Image.fromarray(float_values, "F"), "TIFF"), OK)
    write(EXIF_ROTATED, exif_rotated_jpeg_bytes(), OK)
    frames = _two_frames()
    gif_frames = [frame.convert("P") for frame in frames]
    write(ANIMATED_GIF, encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:],
                               duration=100, loop=0), OK)
    write(ANIMATED_WEBP, encode(frames[0], "WEBP", save_all=True, append_images=frames[1:],
                                lossless=True, duration=100, loop=0), OK)

    # Broken files.
    rng = np.random.default_rng(20240611)
    write("empty.jpg", b"", _rejected("empty-file"))
    write("truncated.jpg", good_jpeg[: len(good_jpeg) // 2], _rejected("truncated"))
    good_png = encode(good_pil, "PNG")
    write("truncated.png", good_png[: len(good_png) // 2], _rejected("truncated"))
    good_webp = encode(good_pil, "WEBP", quality=90)
    write("truncated.webp", good_webp[: len(good_webp) // 2], _rejected("truncated"))
    write("random_bytes.jpg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
          _rejected("not-an-image"))
    write("notes.txt", b"shoot list: left profiles, more backlight\n", _rejected("not-an-image"))
    write(BOMB_PNG, bomb_png_bytes(60000, 60000), _rejected("too-large"))
    write("corrupt_idat.png", corrupt_idat_png_bytes(), _rejected("decode-error"))
    broken_header = bytearray(good_png)
    broken_header[16:24] = b"\xff" * 8  # IHDR width/height, so its CRC no longer matches
    write("broken_header.png", bytes(broken_header), _rejected("decode-error"))

    # Paths that are not regular files.
    (directory / "x.jpg").mkdir()
    expected["x.jpg"] = _rejected("not-a-file")
    write("x.jpg/inner.jpg", good_jpeg, OK)
    if _try_symlink("loop.jpg", directory / "loop.jpg"):
        expected["loop.jpg"] = _rejected("symlink-loop")
    if _try_symlink("does_not_exist.jpg", directory / "broken.jpg"):
        expected["broken.jpg"] = _rejected("broken-symlink")
    if _try_symlink("good_1.jpg", directory / "link_to_good.jpg"):
        expected["link_to_good.jpg"] = OK
    # A link back to an ancestor: walking must end, and it names no file of its own.
    _try_symlink("..", directory / "sub" / "back")
    if os.path.exists(os.devnull) and _try_symlink(os.devnull, directory / "device.jpg"):
        expected["device.jpg"] = _rejected("not-a-file")

    # Hidden paths: written, never listed.
    (directory / ".hidden.jpg").write_bytes(good_jpeg)
    (directory / ".cache").mkdir()
    (directory / ".cache" / "hidden_inside.jpg").write_bytes(good_jpeg)

    # Names: not UTF-8, and non-ASCII Unicode (written above).
    try:
        (directory / os.fsdecode(NON_UTF8_NAME)).write_bytes(good_jpeg)
        expected[NON_UTF8_STORED] = OK
    except (OSError, UnicodeError) as exc:
        logger.warning("file system refuses non-UTF-8 names: %s", exc)

    # A file without read permission. Root (or CAP_DAC_OVERRIDE) reads it anyway; rather than guess
    # from the user id, try it: if it can still be read, ingest must decode it like any good image.
    unreadable = write(UNREADABLE, good_jpeg, OK)
    unreadable.chmod(0)
    expected[UNREADABLE] = OK if _can_still_read(unreadable) else _rejected("unreadable")

    return expected
