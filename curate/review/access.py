"""The review server's way into the faceset: opened per request, never held between requests.

DuckDB lets a file be opened by one read-write process or by many read-only ones. The server
opens the faceset read-only for each read and read-write only for the moment it appends
decisions, then closes it, so `facesmith curate select` (or analyze, or a scan) can run while
the app is open. While such a command holds the file, a request gets `FacesetBusy` (the page
retries). One lock serialises the server's own opens: DuckDB refuses two connections of one
process to one file with different settings (read-only, read-write, the guarded SQL door).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from curate.decisions import Decision, DecisionRow, record_decisions
from curate.environment import is_lock_conflict
from curate.errors import FacesmithError, StoreError
from curate.faceset import FacesetReader, FaceTable, open_faceset
from curate.review.index import StaticColumns, build_index, patch_statuses, statuses_for
from curate.review.index_cache import IndexCache, StoredIndex, fingerprint
from curate.store import QueryResult, query_read_only


class FacesetBusy(FacesmithError):
    """Another process holds the faceset for writing; try again in a moment."""


# The faces view the free WHERE filter reads: one row per face with the analyses' verdicts.
# Documented in the page's help and the README; client text only ever goes after WHERE, inside
# the read-only door (curate.store.query_read_only).
FACES_VIEW = """WITH faces_view AS (
    SELECT f.face_id, i.path, f.face_index, f.det_score, f.yaw, f.pitch, f.roll, f.face_size,
           f.sharpness, f.motion_blur, f.brightness, f.shadows_clipped, f.highlights_clipped,
           f.contrast, f.lighting_lr, f.lighting_tb, f.color_cast, i.width, i.height,
           i.content_hash, d.group_id AS duplicate_group, d.kind AS duplicate_kind,
           d.keep AS duplicate_keep, d.similarity, d.phash_distance,
           n.label, n.distance, n.cluster, s.selected, s.pick_order, s.light_bin
    FROM faces f JOIN images i USING (image_id)
    LEFT JOIN duplicates d USING (face_id) LEFT JOIN identities n USING (face_id)
    LEFT JOIN selection s USING (face_id))
SELECT face_id FROM faces_view WHERE (
"""


class FacesetAccess:
    """Per-request access to one faceset, with the face index and the faces table kept in memory
    (and the index on disk in `cache_dir`) for as long as the faceset's fingerprint holds."""

    def __init__(self, database: Path, cache_dir: Path | None = None) -> None:
        self.database = Path(database).resolve()
        self._lock = threading.Lock()
        self._faces: tuple[str, FaceTable] | None = None  # (scan key, the faces)
        self._static: tuple[FaceTable, StaticColumns] | None = None
        self._index: StoredIndex | None = None
        self._crops: tuple[str, dict[str, Path]] | None = None  # (scan key, face_id -> crop)
        self._store = IndexCache(cache_dir) if cache_dir is not None else None
        self.index_served = threading.Event()  # set once a page has its index: background work may start

    def _open(self) -> duckdb.DuckDBPyConnection:
        try:
            return open_faceset(self.database, read_only=True)
        except StoreError as error:
            if is_lock_conflict(error):
                raise FacesetBusy("the faceset is being written by another facesmith command; "
                                  "try again when it finishes") from error
            raise

    @contextmanager
    def _reader(self, connection: duckdb.DuckDBPyConnection, scan_key: str) -> Iterator[FacesetReader]:
        """A reader on `connection` holding the faces table cached since the last scan (loading it
        is most of a request's cost at 10 000 faces)."""
        cached = self._faces[1] if self._faces is not None and self._faces[0] == scan_key else None
        reader = FacesetReader.on(connection, self.database, faces=cached)
        if cached is None:
            self._faces = (scan_key, reader.faces())
            self._static = None
        yield reader

    @contextmanager
    def reader(self) -> Iterator[FacesetReader]:
        """A read-only reader, open for the block only."""
        with self._lock:
            connection = self._open()
            try:
                with self._reader(connection, fingerprint(connection)[0]) as reader:
                    yield reader
            finally:
                connection.close()

    def role(self) -> str:
        """The faceset's role (src or dst), read without loading any face."""
        with self._lock:
            connection = self._open()
            try:
                return FacesetReader.on(connection, self.database, faces=None).role
            finally:
                connection.close()

    def static_columns(self, reader: FacesetReader) -> StaticColumns:
        """The columns only a scan changes, for the faces `reader` holds (built once per scan)."""
        table = reader.faces()
        if self._static is None or self._static[0] is not table:
            self._static = (table, StaticColumns.build(table))
        return self._static[1]

    def index_gzip(self) -> bytes:
        """The whole face index as gzipped JSON: from memory, from the cache folder (a warm start
        reads no face at all), or built through the reader."""
        with self._lock:
            connection = self._open()
            try:
                scan_key, key = fingerprint(connection)
                if self._index is None or self._index.key != key:
                    stored = self._store.load_index(key) if self._store else None
                    if stored is None:
                        with self._reader(connection, scan_key) as reader:
                            stored = StoredIndex(key, build_index(reader, self.static_columns(reader)))
                            self._remember_crops(scan_key, reader)
                        if self._store:
                            self._store.save_index(stored)
                    self._index = stored
                if self._crops is None or self._crops[0] != scan_key:
                    self._load_crops(connection, scan_key)  # the page asks for thumbnails next
                fresh = self._index.compressed is None
                data = self._index.gzipped()
                if fresh and self._store:  # patched by decisions since it was stored
                    self._store.save_index(self._index)
                self.index_served.set()
                return data
            finally:
                connection.close()

    def index(self) -> dict[str, Any]:
        self.index_gzip()
        return self._index.document

    def _remember_crops(self, scan_key: str, reader: FacesetReader) -> None:
        table = reader.faces()
        relative = dict(zip(table.face_ids, table.aligned_paths, strict=True))
        self._crops = (scan_key, {f: reader.crop_path(a) for f, a in relative.items()})
        if self._store:
            self._store.save_crops(scan_key, relative)

    def _load_crops(self, connection: duckdb.DuckDBPyConnection, scan_key: str) -> None:
        relative = self._store.load_crops(scan_key) if self._store else None
        if relative is not None:
            self._crops = (scan_key, {f: self.database.parent / a for f, a in relative.items()})
        else:
            with self._reader(connection, scan_key) as reader:
                self._remember_crops(scan_key, reader)

    def crop_paths(self) -> dict[str, Path]:
        """face_id -> its aligned crop (absolute); from the cache folder on a warm start."""
        with self._lock:
            connection = self._open()
            try:
                scan_key = fingerprint(connection)[0]
                if self._crops is None or self._crops[0] != scan_key:
                    self._load_crops(connection, scan_key)
                return self._crops[1]
            finally:
                connection.close()

    def crop_path(self, face_id: str) -> Path | None:
        """One face's crop: from memory while the face is known (a thumbnail request opens no
        database), else after checking the faceset again (a scan may have added it)."""
        known = self._crops
        if known is not None and face_id in known[1]:
            return known[1][face_id]
        return self.crop_paths().get(face_id)

    def record(self, decisions: Sequence[Decision], who: str) -> tuple[list[DecisionRow], dict[str, Any]]:
        """Append decisions (read-write only for that moment) and return the rows with the
        decided faces' new statuses, as the reader now rules. A decision changes only its own
        face's status, so the index in memory is patched rather than built again."""
        with self._lock:
            connection = self._open()
            try:
                before = fingerprint(connection)[1]
            finally:
                connection.close()
            try:
                rows = record_decisions(self.database, decisions, who)
            except StoreError as error:
                if is_lock_conflict(error):
                    raise FacesetBusy("the faceset is being written by another facesmith command; "
                                      "the decision was not recorded, try again") from error
                raise
            connection = self._open()
            try:
                scan_key, after = fingerprint(connection)
                with self._reader(connection, scan_key) as reader:
                    statuses = statuses_for(reader, sorted({d.face_id for d in decisions}))
                    if self._index is not None and self._index.key == before:
                        patch_statuses(self._index.document, statuses, len(reader.decision_log()))
                        self._index.changed(after)
            finally:
                connection.close()
        return rows, statuses

    def query_where(self, where: str) -> QueryResult:
        """face_ids of the faces view rows that `where` keeps, through the read-only SQL door."""
        # The closing parenthesis goes on its own line so a trailing '--' comment cannot hide it.
        with self._lock:
            try:
                return query_read_only(self.database, FACES_VIEW + where + "\n)")
            except StoreError as error:
                if is_lock_conflict(error):
                    raise FacesetBusy("the faceset is being written by another facesmith command; "
                                      "try again when it finishes") from error
                raise
