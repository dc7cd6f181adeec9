"""The face index kept between server starts: gzipped JSON beside the thumbnails, keyed by what it depends on.

The index is a function of the faceset's scans, analyses, decisions and role, so a fingerprint
of those (a few cheap queries) says whether a stored index is still the faceset's: a warm start
serves it without loading a single face, and the crop paths the thumbnails need come with it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from curate import __version__
from curate.fileio import write_atomically

# Bump when the index's columns change, so an older server's stored index is not served.
INDEX_FORMAT = 1


def fingerprint(connection: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """(scan key, full key): the scan key changes with any scan (faces, crops); the full key also
    with any analysis, decision or role change."""
    tables = set(connection.execute("SELECT list(table_name) FROM duckdb_tables()").fetchone()[0] or [])
    scans = connection.execute(
        "SELECT count(*), max(started_at)::VARCHAR, max(finished_at)::VARCHAR, "
        "(SELECT count(*) FROM faces) FROM runs").fetchone()
    analyses = connection.execute(
        "SELECT list(kind || '@' || analysed_at::VARCHAR ORDER BY kind) FROM analyses").fetchone()[0] \
        if "analyses" in tables else None
    decisions = connection.execute("SELECT count(*), max(decision_id) FROM decisions").fetchone() \
        if "decisions" in tables else None
    role = connection.execute("SELECT list(key || '=' || value ORDER BY key) FROM meta WHERE key = 'role'").fetchone()[0]
    scan_key = _digest((INDEX_FORMAT, __version__, scans))
    return scan_key, _digest((scan_key, analyses, decisions, role))


def _digest(value: Any) -> str:
    return hashlib.sha1(repr(value).encode()).hexdigest()[:20]


@dataclass
class StoredIndex:
    """One index in memory: the document and its gzipped JSON, each made from the other when
    first needed (a warm start serves the stored bytes without parsing them)."""

    key: str
    _document: dict[str, Any] | None = None
    compressed: bytes | None = None

    @property
    def document(self) -> dict[str, Any]:
        if self._document is None:
            self._document = json.loads(gzip.decompress(self.compressed))
        return self._document

    def changed(self, key: str) -> None:
        """The document was patched in place: it now answers for `key`, its bytes are stale."""
        self.document  # noqa: B018 (parse before the bytes go)
        self.key, self.compressed = key, None

    def gzipped(self) -> bytes:
        if self.compressed is None:
            body = json.dumps(self.document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            self.compressed = gzip.compress(body.encode("utf-8"), compresslevel=5, mtime=0)
        return self.compressed


class IndexCache:
    """The newest index and crop table on disk (`index-<key>.json.gz`, `crops-<scan key>.json`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def load_index(self, key: str) -> StoredIndex | None:
        try:
            compressed = (self.folder / f"index-{key}.json.gz").read_bytes()
            # test the whole stream now (a torn file must not be served): ~10 ms at 10 000 faces
            gzip.decompress(compressed)
            return StoredIndex(key, compressed=compressed)
        except (OSError, ValueError, EOFError, gzip.BadGzipFile):  # missing, torn or foreign: build it again
            return None

    def save_index(self, stored: StoredIndex) -> None:
        self._replace("index-", f"index-{stored.key}.json.gz", stored.gzipped())

    def load_crops(self, scan_key: str) -> dict[str, str] | None:
        try:
            crops = json.loads((self.folder / f"crops-{scan_key}.json").read_text(encoding="utf-8"))
            return crops if isinstance(crops, dict) else None
        except (OSError, ValueError):
            return None

    def save_crops(self, scan_key: str, crops: dict[str, str]) -> None:
        self._replace("crops-", f"crops-{scan_key}.json", json.dumps(crops))

    def _replace(self, prefix: str, name: str, data: bytes | str) -> None:
        """Write `name` and remove older files of its kind; a read-only folder only loses the cache."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self.folder / name, data)
            for old in self.folder.glob(f"{prefix}*"):
                if old.name != name and not old.name.startswith("."):
                    old.unlink(missing_ok=True)
        except OSError:
            pass
