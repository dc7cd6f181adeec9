"""The bounds on what one input may cost before it is read, decoded or built, in one place.

Every reader of user files checks these before it allocates: a file's size before its bytes are
read, an image's declared pixels before they are decoded (and against the bytes that must hold
them), a config file's size before it is parsed, a pickled value's expanded size before anything
walks it (curate.interop.dfl.safe_pickle). Over a bound, the input is rejected with a reason; the
run goes on.
"""

from __future__ import annotations

# Bytes of one image file read into memory. A 100-megapixel 16-bit TIFF is ~600 MiB, a camera
# JPEG well under 50; a larger "photo" (a sparse file, a disk image with a .jpg name) is refused
# unread, so the scan's peak memory stays bounded by workers × this.
DEFAULT_MAX_FILE_BYTES = 1024 * 2**20

# Pixels (width × height) above which a file is rejected before its pixels are decoded. Pillow's
# own guard (Image.MAX_IMAGE_PIXELS, process-global) still refuses anything over twice its limit
# (~179 M pixels by default), so a larger max_pixels only helps if the application raises that.
DEFAULT_MAX_PIXELS = 100_000_000

# Bytes read first from an image to learn its declared size before the rest is read.
HEADER_BYTES = 256 * 1024

# A JPEG's header segments (APPn, tables) before its image data, where DFL keeps its metadata:
# each segment is at most 64 KiB, and a camera writes a handful.
MAX_JPEG_HEADER_BYTES = 16 * 2**20

# A TOML options file: a real one is a few KiB; the parser recurses on nested arrays.
MAX_CONFIG_BYTES = 1024 * 1024


def file_too_large(size: int, limit: int) -> str | None:
    """Why a file of `size` bytes is refused unread, or None."""
    if size <= limit:
        return None
    return f"{size:,} bytes > limit {limit:,} (not read)"


def pixels_too_many(width: int, height: int, limit: int) -> str | None:
    """Why an image declaring width × height is refused undecoded, or None."""
    if width * height <= limit:
        return None
    return f"declared {width}×{height} = {width * height:.3g} pixels > limit {limit:.3g}"
