"""Find image files under a root, hash them and decode them safely, or reject each with a reason."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import logging
import os
import re
import stat
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from curate.limits import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    HEADER_BYTES,
    file_too_large,
    pixels_too_many,
)
from curate.scan import jpeg_scan

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",
        ".png",
        ".webp",
        ".bmp", ".dib",
        ".tif", ".tiff",
        ".gif",
        ".ppm", ".pgm", ".pbm", ".pnm",
        ".avif",
    }
)


REJECT_REASONS: dict[str, str] = {
    "empty-file": "the file has zero bytes",
    "unreadable": "the file could not be opened or read (permissions, I/O error, vanished)",
    "not-a-file": "the path is a directory, device, FIFO or socket, not a regular file",
    "symlink-loop": "the path is a symbolic link that leads back to itself",
    "broken-symlink": "the path is a symbolic link whose target does not exist",
    "not-an-image": "the bytes are not in any image format this tool decodes",
    "truncated": "the image data ends before the image does",
    "too-large": "the file is larger than the byte limit, or its header declares more pixels than the "
                 "limit (possible decompression bomb); neither is read",
    "unsupported-mode": "the image decoded but its colour mode cannot be converted to 8-bit colour",
    "decode-error": "the file looks like an image but the decoder failed on it",
    "unlistable": "a folder that cannot be listed (permissions, I/O error): its files were not seen",
    # Set by the scan, not by ingest: the image decoded but face analysis failed on it.
    "analysis-error": "the image decoded but finding or measuring its faces failed",
}

# Formats handed to Image.open. Restricting them keeps hostile files away from plugins that shell
# out (EPS runs Ghostscript) or accept almost any bytes (TGA, SPIDER), and random bytes stay
# not-an-image.
_WANTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF")

# Leading bytes of the formats above, used only to word a rejection: a file that starts like a PNG
# but cannot be opened is a broken image (decode-error), not a stranger (not-an-image).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)

_EXIF_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_PREMULTIPLIED_MODES = frozenset({"RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


@dataclass(frozen=True)
class FileEntry:
    """One path found under the scan root, before anything is read from it."""

    rel_path: str  # relative to the scan root, '/'-separated, valid UTF-8 (see storable_name)
    abs_path: Path  # the real path, undecoded bytes intact, for reading
    size: int  # bytes; 0 if unknown or not a regular file
    mtime_ns: int  # modification time in ns; 0 if unknown
    problem: str | None  # a REJECT_REASONS code when the path can never be decoded, else None


# eq=False: an ndarray field makes generated __eq__/__hash__ raise, so compare by identity.
@dataclass(frozen=True, eq=False)
class Decoded:
    """A decoded image in the form every later stage expects."""

    image_bgr: np.ndarray  # (H, W, 3) uint8, BGR, EXIF orientation applied
    width: int  # W, after orientation
    height: int  # H, after orientation
    format: str  # Pillow's format name, e.g. 'JPEG'
    mode: str  # Pillow's mode before conversion, e.g. 'CMYK', 'I;16', 'P', 'RGBA', 'L'


@dataclass(frozen=True)
class Rejection:
    """Why a file was not decoded: a stable code from REJECT_REASONS and one human sentence."""

    reason: str
    detail: str


@dataclass(frozen=True, eq=False)
class IngestResult:
    """What reading one FileEntry produced: exactly one of decoded and rejection is set."""

    content_hash: str | None  # sha256 hex of the file bytes; None when the bytes could not be read
    size: int  # bytes read (or the listed size when nothing could be read)
    decoded: Decoded | None
    rejection: Rejection | None


def storable_name(name: str) -> str:
    """`name` as text DuckDB and JSON can store, one-to-one with the real name.

    os.fsdecode turns bytes that are not UTF-8 into lone surrogates, which cannot be stored.
    Those bytes are spelled '\\xNN'; to keep two different files from ever sharing a stored
    name, a backslash already in such a name (or in any name) is doubled first. Names that are
    valid Unicode without a backslash, nearly all of them, are unchanged.
    """
    try:
        name.encode("utf-8")
        if "\\" not in name:
            return name
    except UnicodeEncodeError:
        pass
    return os.fsencode(name).replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")


def has_image_extension(name: str) -> bool:
    """True when name ends in one of IMAGE_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_files(root: Path, exclude: Collection[Path] = ()) -> Iterator[FileEntry]:
    """Every regular file under root, depth first in sorted order, plus problem paths.

    Names starting with '.' are skipped, and so is everything at or under a path in `exclude`
    (compared both as spelled and by device/inode, so symlinked spellings match too); an excluded
    file that exists also excludes its companions '<file>.<suffix>', such as DuckDB's '.wal' file
    and '.tmp' spill folder.

    Symlinked files are followed. Symlinked directories are walked after the real tree, and each
    directory at most once, so loops end and a file reachable without links keeps its real path.
    Paths that are not regular files are yielded with `problem` set only when their name has an
    image extension (a directory named 'x.jpg' is yielded as 'not-a-file' and still walked into; a
    link loop or dangling link named '*.jpg' as 'symlink-loop' / 'broken-symlink'); others are
    skipped.

    Raises OSError when root itself cannot be listed.
    """
    root_path = Path(os.path.abspath(root))
    excluded_paths = _exclusion_spellings(root_path, exclude)
    # Only an existing file has companions; a folder still to be made must not claim 'name.jpg'.
    excluded_files = {path for path in excluded_paths if os.path.isfile(path)}
    excluded_ids = {_file_id(path) for path in exclude} - {None}
    if any(_is_within(str(root_path), path) for path in excluded_paths):
        return

    root_stat = os.stat(root_path)
    visited_dirs = {(root_stat.st_dev, root_stat.st_ino)}
    # A stack of sorted listings gives pre-order output without recursion (deep trees are fine).
    stack: list[Iterator[_Listed]] = [_sorted_listing(root_path, "")]
    linked_dirs: deque[tuple[Path, str]] = deque()

    while stack or linked_dirs:
        if not stack:
            link_path, link_rel = linked_dirs.popleft()
            key = _file_id(link_path)
            if key is None or key in visited_dirs:
                logger.debug("not following %s: its directory was already walked", link_rel)
                continue
            visited_dirs.add(key)
            stack.append(_sorted_listing(link_path, link_rel + "/"))
            continue
        listed = next(stack[-1], None)
        if listed is None:
            stack.pop()
            continue
        if listed.problem is not None:  # a folder that could not be listed: it gets the row
            yield FileEntry(listed.rel_path, listed.path, 0, 0, listed.problem)
            continue
        rel_path, path = listed.rel_path, listed.path
        if _is_excluded(str(path), excluded_paths, excluded_files):
            continue
        try:
            target = stat_path(path)
        except OSError as exc:
            entry = _unstattable_entry(path, rel_path, listed.name, listed.is_link, exc)
            if entry is not None:
                yield entry
            continue
        if (target.st_dev, target.st_ino) in excluded_ids:
            continue
        if stat.S_ISREG(target.st_mode):
            yield FileEntry(rel_path, path, target.st_size, target.st_mtime_ns, None)
            continue
        if has_image_extension(listed.name):
            yield FileEntry(rel_path, path, 0, target.st_mtime_ns, "not-a-file")
        if not stat.S_ISDIR(target.st_mode):
            logger.debug("skipping %s: not a regular file or directory", rel_path)
        elif listed.is_link:
            linked_dirs.append((path, rel_path))
        elif (target.st_dev, target.st_ino) not in visited_dirs:
            visited_dirs.add((target.st_dev, target.st_ino))
            # A folder named like an image already has its 'not-a-file' row; one that cannot be
            # listed gets an 'unlistable' row of its own otherwise.
            stack.append(_sorted_listing(path, rel_path + "/", row_if_unlistable=not has_image_extension(listed.name)))


@dataclass(frozen=True)
class _Listed:
    """One name of a listing (read eagerly: entries of a listing made through a descriptor cannot
    be asked anything after it is closed), or the listing's own failure."""

    rel_path: str
    path: Path
    name: str
    is_link: bool
    problem: str | None = None


def _open_by_parts(path: Path, flags: int) -> int:
    """os.open for a path longer than PATH_MAX: one component at a time, each opened relative to
    the folder before it, so no single call sees the whole path."""
    parts = Path(path).parts
    descriptor = os.open(parts[0], os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in parts[1:-1]:
            inner = os.open(part, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0), dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        return os.open(parts[-1], flags, dir_fd=descriptor)
    finally:
        os.close(descriptor)


def open_path(path: Path, flags: int) -> int:
    """os.open, also for paths longer than PATH_MAX (deep trees): every file the walk lists can be read."""
    try:
        return os.open(path, flags)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
    return _open_by_parts(path, flags)


def stat_path(path: Path) -> os.stat_result:
    """os.stat (following links), also for paths longer than PATH_MAX."""
    try:
        return os.stat(path)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
    parent = _open_by_parts(Path(path).parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        return os.stat(Path(path).name, dir_fd=parent)
    finally:
        os.close(parent)


def _sorted_listing(directory: Path, rel_prefix: str, row_if_unlistable: bool = True) -> Iterator[_Listed]:
    """Each non-hidden entry of directory, sorted by the stored name; when the folder cannot be
    listed, one _Listed carrying the problem ('unlistable'), so the folder still gets a row."""
    try:
        entries = _list(directory)
    except OSError as exc:
        if not rel_prefix:
            raise
        logger.warning("cannot list %s: %s", rel_prefix.rstrip("/"), exc.strerror or exc)
        if not row_if_unlistable:
            return iter(())
        return iter([_Listed(rel_prefix.rstrip("/"), Path(directory), Path(directory).name, False, "unlistable")])
    # Sorting on the stored spelling makes the output order the order of the stored rel_paths;
    # the raw bytes break the (rare) tie between a raw name and its escaped look-alike.
    entries.sort(key=lambda item: (storable_name(item[0]), os.fsencode(item[0])))
    return iter([_Listed(rel_prefix + storable_name(name), Path(directory) / name, name, is_link)
                 for name, is_link in entries])


def _list(directory: Path) -> list[tuple[str, bool]]:
    """(name, is a symbolic link) of each non-hidden entry, for folders at any depth."""
    try:
        with os.scandir(directory) as listing:
            return [(entry.name, entry.is_symlink()) for entry in listing if not entry.name.startswith(".")]
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
    descriptor = _open_by_parts(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        with os.scandir(descriptor) as listing:
            return [(entry.name, entry.is_symlink()) for entry in listing if not entry.name.startswith(".")]
    finally:
        os.close(descriptor)


def _unstattable_entry(
    path: Path, rel_path: str, name: str, is_link: bool, exc: OSError
) -> FileEntry | None:
    """The entry to yield for a path whose target cannot be stat'ed, or None to skip it."""
    if not is_link:
        if exc.errno == errno.ENOENT:
            logger.debug("skipping %s: it vanished while listing", rel_path)
            return None
        # Let the read report the real error as 'unreadable'.
        return FileEntry(rel_path, path, 0, 0, None)
    if exc.errno == errno.ELOOP:
        problem = "symlink-loop"
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
        problem = "broken-symlink"
    else:
        return FileEntry(rel_path, path, 0, 0, None)
    if not has_image_extension(name):
        logger.debug("skipping %s: %s", rel_path, problem)
        return None
    try:
        mtime_ns = os.lstat(path).st_mtime_ns
    except OSError:
        mtime_ns = 0
    return FileEntry(rel_path, path, 0, mtime_ns, problem)


def _exclusion_spellings(root: Path, exclude: Collection[Path]) -> set[str]:
    """Each excluded path as given and as it reads under root's spelling, so that a root reached
    through a symlink still matches excluded paths given resolved (they may not exist yet)."""
    real_root = os.path.realpath(root)
    spellings = set()
    for path in exclude:
        spellings.add(os.path.normpath(os.path.abspath(path)))
        real_path = os.path.realpath(path)
        if _is_within(real_path, real_root):
            under_root = os.path.join(root, os.path.relpath(real_path, real_root))
            spellings.add(os.path.normpath(under_root))
    return spellings


def _file_id(path: Path | str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _is_excluded(path: str, excluded_paths: set[str], excluded_files: set[str]) -> bool:
    if path in excluded_paths:
        return True
    # Companions of an excluded file, e.g. 'faceset.duckdb.wal' next to 'faceset.duckdb'.
    stem, dot, suffix = path.rpartition(".")
    return bool(dot) and os.sep not in suffix and stem in excluded_files


def read_image(
    entry: FileEntry, max_pixels: int = DEFAULT_MAX_PIXELS, known_hash: str | None = None,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> IngestResult:
    """Read, hash and decode one listed file; every failure is a Rejection, never an exception.

    The file's size is checked before anything is read, and the size its header declares before
    the rest is read: over `max_bytes` or `max_pixels` it is 'too-large', unread and unhashed.
    When the bytes hash to `known_hash` (a file touched but not changed) nothing is decoded: the
    result has the hash and neither pixels nor a rejection.
    """
    if entry.problem is not None:
        detail = f"{entry.rel_path}: {REJECT_REASONS.get(entry.problem, entry.problem)}"
        return IngestResult(None, entry.size, None, Rejection(entry.problem, detail))
    try:
        data = _read_regular_file(entry.abs_path, max_bytes, max_pixels)
    except OSError as exc:
        reason = "symlink-loop" if exc.errno == errno.ELOOP else "unreadable"
        detail = f"cannot read {entry.rel_path}: {exc.strerror or exc}"
        return IngestResult(None, entry.size, None, Rejection(reason, detail))
    except MemoryError:
        detail = f"{entry.rel_path}: not enough memory to read it"
        return IngestResult(None, entry.size, None, Rejection("too-large", detail))
    if data is None:
        detail = f"{entry.rel_path} is no longer a regular file"
        return IngestResult(None, entry.size, None, Rejection("not-a-file", detail))
    if isinstance(data, Rejection):
        logger.debug("rejected %s unread: %s", entry.rel_path, data.detail)
        return IngestResult(None, entry.size, None, data)

    content_hash = hashlib.sha256(data).hexdigest()
    if known_hash is not None and content_hash == known_hash:
        return IngestResult(content_hash, len(data), None, None)
    try:
        outcome = decode_bytes(data, max_pixels)
    except MemoryError:
        # Bounded above, so this means the machine is short of memory now: this file alone is
        # refused (a re-scan reads it again only if it changes; 'too-large' says why).
        outcome = Rejection("too-large", "not enough memory to decode it")
    if isinstance(outcome, Rejection):
        logger.debug("rejected %s: %s (%s)", entry.rel_path, outcome.reason, outcome.detail)
        return IngestResult(content_hash, len(data), None, outcome)
    return IngestResult(content_hash, len(data), outcome, None)


def _read_regular_file(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | Rejection | None:
    """All bytes of path; None if it is not a regular file; a 'too-large' Rejection, read no
    further, when its size or the pixels its header declares exceed the limits.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; fstat on the
    open descriptor then tells what was really opened, so a path swapped after listing cannot
    fool us. The size comes from that fstat (a sparse 40 GiB file costs nothing to refuse), and
    the read stops one byte past the limit should the file grow meanwhile.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    descriptor = open_path(path, flags)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return None
        too_large = file_too_large(info.st_size, max_bytes)
        if too_large is not None:
            return Rejection("too-large", too_large)
        os.set_blocking(descriptor, True)
        with os.fdopen(descriptor, "rb", closefd=False) as stream:
            head = stream.read(HEADER_BYTES)
            if len(head) == HEADER_BYTES:
                verdict = _header_verdict(head, max_pixels)
                if verdict is not None:
                    return verdict
            data = head + stream.read(max(0, max_bytes + 1 - len(head)))
        too_large = file_too_large(len(data), max_bytes)
        return Rejection("too-large", too_large) if too_large is not None else data
    finally:
        os.close(descriptor)


def _header_verdict(head: bytes, max_pixels: int) -> Rejection | None:
    """'too-large' when the first bytes of a large file declare more pixels than the limit."""
    try:
        with Image.open(io.BytesIO(head), formats=_decodable_formats()) as image:
            too_many = pixels_too_many(*image.size, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Rejection("too-large", f"{_bomb_detail(exc, max_pixels)} (body not read)")
    except MemoryError:
        raise
    except Exception:  # header longer than `head`, or not an image: the full read decides
        return None
    return None if too_many is None else Rejection("too-large", f"{too_many} (body not read)")


def decode_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded | Rejection:
    """Decode image bytes to (H, W, 3) uint8 BGR with EXIF orientation applied, or say why not.

    Pure: no file system, no global Pillow settings changed. Grayscale, 16-bit, float, CMYK, palette
    and alpha images are converted (alpha is composited over black); multi-frame files give their
    first frame. Only MemoryError and BaseExceptions such as KeyboardInterrupt propagate.
    """
    if not data:
        return Rejection("empty-file", "the file has zero bytes")
    try:
        return _decode(data, max_pixels)
    except MemoryError:
        raise
    except Exception as exc:  # a decoder can raise nearly anything on hostile input
        return Rejection("decode-error", f"decoder failed: {type(exc).__name__}: {exc}")


def _decode(data: bytes, max_pixels: int) -> Decoded | Rejection:
    try:
        image = Image.open(io.BytesIO(data), formats=_decodable_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # DecompressionBombWarning only arrives as an exception when warnings are errors; warning
        # filters are process-global and decoding runs in threads, so they are left alone here.
        return Rejection("too-large", _bomb_detail(exc, max_pixels))
    except UnidentifiedImageError:
        signature_format = _format_from_signature(data)
        if signature_format is not None:
            detail = f"starts like a {signature_format} file but its header cannot be parsed"
            return Rejection("decode-error", detail)
        formats = ", ".join(_decodable_formats())
        return Rejection("not-an-image", f"not a recognised image (tried {formats})")
    except (OSError, EOFError) as exc:
        signature_format = _format_from_signature(data) or "image"
        if _looks_truncated(exc, signature_format, data):
            return Rejection("truncated", f"{signature_format} file ends early: {exc}")
        return Rejection("decode-error", f"{signature_format} header cannot be read: {exc}")

    with image:
        image_format = image.format or "unknown"
        original_mode = image.mode
        width, height = image.size
        if width <= 0 or height <= 0:
            return Rejection("decode-error", f"declared size {width}×{height} is empty")
        too_many = pixels_too_many(width, height, max_pixels)
        if too_many is not None:
            return Rejection("too-large", too_many)
        if image_format == "JPEG":
            missing = jpeg_scan.too_few_bytes(data)
            if missing is not None:
                return Rejection("truncated", f"JPEG {missing}")
        if _plain_jpeg(image, data):
            pixels = _decode_plain_jpeg(data, width, height)
            if pixels is not None:
                if jpeg_scan.ends_in_fill_grey(pixels) and jpeg_scan.scan_data_ends_early(data):
                    return Rejection("truncated", _SCAN_ENDS_EARLY)
                return Decoded(pixels, width, height, image_format, original_mode)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return Rejection("too-large", _bomb_detail(exc, max_pixels))
        except (OSError, EOFError) as exc:
            if _looks_truncated(exc, image_format, data):
                return Rejection("truncated", f"{image_format} data ends early: {exc}")
            return Rejection("decode-error", f"{image_format} decoder failed: {exc}")

        if image_format == "JPEG" and image.mode in ("RGB", "L") and _ends_in_fill_grey(image):
            if jpeg_scan.scan_data_ends_early(data):
                return Rejection("truncated", _SCAN_ENDS_EARLY)
        oriented = _apply_orientation(image)
        try:
            image_bgr = _to_bgr(oriented)
        except ValueError as exc:
            return Rejection("unsupported-mode", f"cannot convert mode {original_mode}: {exc}")

    height_out, width_out = image_bgr.shape[:2]
    return Decoded(image_bgr, width_out, height_out, image_format, original_mode)


_SCAN_ENDS_EARLY = ("JPEG scan data ends before the last block (the decoder filled the rest with grey): "
                    "the file was cut short")


def _ends_in_fill_grey(image: Image.Image) -> bool:
    width, height = image.size
    tail = np.asarray(image.crop((max(0, width - 8), height - 1, width, height)))
    return jpeg_scan.ends_in_fill_grey(tail.reshape(1, -1, *tail.shape[2:]))


def _bomb_detail(exc: Exception, max_pixels: int) -> str:
    """One sentence for a file Pillow's own guard stopped, before the size reached our check."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    if match is None:
        return f"stopped by Pillow's decompression-bomb guard: {exc}"
    pixels = int(match.group(1))
    return (
        f"declares {pixels:.3g} pixels > limit {max_pixels:.3g} "
        f"(stopped by Pillow's decompression-bomb guard: {exc})"
    )


@functools.cache
def _decodable_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a format it has no plugin for (e.g. AVIF in older Pillow
    # builds), so ask only for the registered ones; init() loads every plugin once.
    Image.init()
    return tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)


def _format_from_signature(data: bytes) -> str | None:
    for signature, format_name in _SIGNATURES:
        if data.startswith(signature):
            return format_name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if len(data) >= 2 and data[0:1] == b"P" and data[1:2] in b"123456":
        return "PPM"
    return None


def _looks_truncated(exc: BaseException, image_format: str, data: bytes) -> bool:
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return True
    # libwebp only says "could not create decoder object"; the RIFF header gives the true length.
    if image_format == "WEBP" and len(data) >= 8 and data[:4] == b"RIFF":
        declared_length = int.from_bytes(data[4:8], "little") + 8
        return len(data) < declared_length
    return False


def _plain_jpeg(image: Image.Image, data: bytes) -> bool:
    """A complete colour or grey JPEG with no rotation to apply: OpenCV can decode it.

    Pillow decodes into its own buffer, then copies it out holding the GIL and swaps it to BGR;
    OpenCV's libjpeg-turbo writes BGR straight into the array without the GIL, in half the time
    (3.5 against 6.3 ms a photo here), with the same pixels. Anything less plain — CMYK, a
    rotation, data that does not end in the end-of-image marker (truncated files, which OpenCV
    would pad with grey rather than reject) — stays with Pillow, which judges it.
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L") or data[-2:] != b"\xff\xd9":
        return False
    try:
        return image.getexif().get(_EXIF_ORIENTATION_TAG, 1) == 1
    except MemoryError:
        raise
    except Exception:  # malformed EXIF: let the Pillow path decide what to do with it
        return False


def _decode_plain_jpeg(data: bytes, width: int, height: int) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR, or None when OpenCV cannot give exactly the declared size."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels is None or pixels.shape != (height, width, 3):
        return None
    return pixels


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        # Checking first spares the full copy exif_transpose makes even when there is nothing to do.
        if image.getexif().get(_EXIF_ORIENTATION_TAG, 1) == 1:
            return image
        oriented = ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Exception as exc:  # malformed EXIF must not cost a good image its pixels
        logger.warning("ignoring unreadable EXIF orientation: %s", exc)
        return image
    return oriented if oriented is not None else image


def _to_bgr(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 BGR from any Pillow mode; ValueError if the mode cannot be converted."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray = _high_depth_to_uint8(np.asarray(image), mode)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode in _PREMULTIPLIED_MODES:
        # Premultiplied colour already is the colour composited over black.
        channels = np.asarray(image)
        colour = channels[:, :, :1] if mode == "La" else channels[:, :, :3]
        rgb = np.repeat(colour, 3, axis=2) if mode == "La" else colour
    elif mode in _ALPHA_MODES or "transparency" in image.info:
        rgb = _composite_over_black(np.asarray(image.convert("RGBA")))
    else:
        rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    # OpenCV's SIMD swap is ~10× faster than numpy's strided reversal on a 1080p image.
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)


def _composite_over_black(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from (H, W, 4) uint8 straight alpha.

    Over black rather than dropping alpha: the colour stored under transparent pixels is arbitrary
    (often editor leftovers) and would otherwise reach detection and quality scores; black is one
    known constant and matches what a premultiplied source gives.
    """
    colour = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """(H, W) uint8 from a 16-bit, 32-bit integer or float single-channel array, scaled not clipped.

    16-bit data maps 0..65535 onto 0..255 (divide by 257, rounded). Mode 'I' holding values in that
    range is treated as 16-bit (Pillow opens 16-bit PGM/TIFF that way); floats in 0..1 scale by 255;
    anything else is stretched from its own minimum and maximum.
    """
    if mode in _SIXTEEN_BIT_MODES:
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    if mode == "I" and low >= 0 and high <= 65535:
        return ((finite.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if mode == "F" and low >= 0 and high <= 1:
        return np.rint(finite * 255).astype(np.uint8)
    if high <= low:
        return np.zeros(finite.shape, dtype=np.uint8)
    return np.rint((finite - low) * (255 / (high - low))).astype(np.uint8)
