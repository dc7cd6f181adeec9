"""Thumbnails of the aligned crops, made once and kept in a cache folder beside the faceset.

A thumbnail is `<cache>/<face_id>.jpg`; it is made again when its crop is newer (a re-scan
rewrote the crop). Names come from face ids the faceset holds, never from a client.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from curate.errors import FacesmithError
from curate.fileio import write_atomically
from curate.progress import ProgressCallback

THUMBNAIL_SIZE = 128
# A face id is a file-name-safe token (the scan's are 16 hex digits, '_' and the face index).
SAFE_FACE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def default_cache_dir(database: Path) -> Path:
    """The review app's cache folder: thumbnails and the face index, next to the database."""
    return Path(database).parent / f"{Path(database).stem}_review"


def thumbnail_dir(cache_dir: Path, size: int = THUMBNAIL_SIZE) -> Path:
    return Path(cache_dir) / f"thumbnails_{size}"


@dataclass(frozen=True)
class BuildSummary:
    made: int  # thumbnails written
    kept: int  # already there and newer than their crop
    missing: int  # faces whose crop cannot be read
    seconds: float

    def to_dict(self) -> dict:
        return {"made": self.made, "kept": self.kept, "missing": self.missing, "seconds": round(self.seconds, 3)}


class ThumbnailCache:
    """Square JPEG thumbnails of aligned crops, keyed by face id."""

    def __init__(self, folder: Path, size: int = THUMBNAIL_SIZE, quality: int = 85) -> None:
        self.folder = Path(folder)
        self.size = size
        self.quality = quality

    def path_for(self, face_id: str) -> Path:
        if not SAFE_FACE_ID.match(face_id):
            raise FacesmithError(f"not a face id: {face_id!r:.40}")
        return self.folder / f"{face_id}.jpg"

    def _fresh(self, thumbnail: Path, crop: Path) -> bool:
        try:
            return thumbnail.stat().st_mtime_ns >= crop.stat().st_mtime_ns
        except OSError:
            return False

    def make(self, face_id: str, crop: Path) -> bytes | None:
        """Encode and store the thumbnail of `crop` (None when the crop cannot be read)."""
        import cv2  # here, not at import: the server starts faster without it

        image = cv2.imread(str(crop), cv2.IMREAD_COLOR)
        if image is None:
            return None
        if image.shape[0] != self.size or image.shape[1] != self.size:
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return None
        data = encoded.tobytes()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            write_atomically(self.path_for(face_id), data)
        except OSError:  # a read-only folder: serve it anyway, uncached
            pass
        return data

    def get(self, face_id: str, crop: Path) -> bytes | None:
        """The thumbnail's JPEG bytes, made now if missing or older than its crop."""
        thumbnail = self.path_for(face_id)
        if self._fresh(thumbnail, crop):
            try:
                return thumbnail.read_bytes()
            except OSError:
                pass
        return self.make(face_id, crop)

    def build(self, items: Iterable[tuple[str, Path]], workers: int = 2,
              on_progress: ProgressCallback | None = None) -> BuildSummary:
        """Make every missing or stale thumbnail of (face_id, crop path) `items`; OpenCV releases
        the interpreter lock while it decodes, resizes and encodes, so threads use every core."""
        started = time.perf_counter()
        todo, kept = [], 0
        for face_id, crop in items:
            if self._fresh(self.path_for(face_id), crop):
                kept += 1
            else:
                todo.append((face_id, crop))
        made = missing = 0
        if todo:
            self.folder.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
                for done, data in enumerate(pool.map(lambda item: self.make(*item), todo), 1):
                    if data is None:
                        missing += 1
                    else:
                        made += 1
                    if on_progress is not None:
                        on_progress(done, len(todo))
        return BuildSummary(made, kept, missing, time.perf_counter() - started)
