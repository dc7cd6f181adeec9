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
from curate.errors import FacesmithError, StoreError
from curate.faceset import FacesetReader, FaceTable, open_faceset
from curate.review.index import StaticColumns, build_index, statuses_for
from curate.store import QueryResult, query_read_only


class FacesetBusy(FacesmithError):
    """Another process holds the faceset for writing; try again in a moment."""


def _is_lock_error(error: Exception) -> bool:
    text = str(error).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text or "held" in text)


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
    """Per-request access to one faceset, with what only a scan changes cached in memory."""

    def __init__(self, database: Path) -> None:
        self.database = Path(database).resolve()
        self._lock = threading.Lock()
        self._faces: tuple[tuple, FaceTable] | None = None  # (scan key, the faces)
        self._static: tuple[FaceTable, StaticColumns] | None = None

    @contextmanager
    def reader(self) -> Iterator[FacesetReader]:
        """A read-only reader, open for the block only, holding the faces table cached since the
        last scan (loading it is most of a request's cost at 10 000 faces)."""
        with self._lock:
            try:
                connection = open_faceset(self.database, read_only=True)
            except StoreError as error:
                if _is_lock_error(error):
                    raise FacesetBusy("the faceset is being written by another facesmith command; "
                                      "try again when it finishes") from error
                raise
            try:
                key = self._scan_key(connection)
                cached = self._faces if self._faces is not None and self._faces[0] == key else None
                reader = FacesetReader.on(connection, self.database, faces=cached[1] if cached else None)
                if cached is None:
                    self._faces = (key, reader.faces())
                    self._static = None
                yield reader
            finally:
                connection.close()

    @staticmethod
    def _scan_key(connection: duckdb.DuckDBPyConnection) -> tuple:
        """Changes whenever a scan added, changed or removed faces."""
        return tuple(connection.execute(
            "SELECT (SELECT count(*) FROM runs), (SELECT max(finished_at) FROM runs), "
            "(SELECT max(started_at) FROM runs), (SELECT count(*) FROM faces)").fetchone())

    def static_columns(self, reader: FacesetReader) -> StaticColumns:
        """The columns only a scan changes, for the faces `reader` holds (built once per scan)."""
        table = reader.faces()
        if self._static is None or self._static[0] is not table:
            self._static = (table, StaticColumns.build(table))
        return self._static[1]

    def index(self) -> dict[str, Any]:
        with self.reader() as reader:
            static = self.static_columns(reader)
            return build_index(reader, static)

    def crop_paths(self) -> dict[str, Path]:
        """face_id -> its aligned crop (absolute)."""
        with self.reader() as reader:
            table = reader.faces()
            return {face_id: reader.crop_path(aligned) for face_id, aligned in
                    zip(table.face_ids, table.aligned_paths, strict=True)}

    def record(self, decisions: Sequence[Decision], who: str) -> tuple[list[DecisionRow], dict[str, Any]]:
        """Append decisions (read-write only for that moment) and return the rows with the
        decided faces' new statuses, as the reader now rules."""
        with self._lock:
            try:
                rows = record_decisions(self.database, decisions, who)
            except StoreError as error:
                if _is_lock_error(error):
                    raise FacesetBusy("the faceset is being written by another facesmith command; "
                                      "the decision was not recorded, try again") from error
                raise
        with self.reader() as reader:
            return rows, statuses_for(reader, sorted({d.face_id for d in decisions}))

    def query_where(self, where: str) -> QueryResult:
        """face_ids of the faces view rows that `where` keeps, through the read-only SQL door."""
        # The closing parenthesis goes on its own line so a trailing '--' comment cannot hide it.
        with self._lock:
            try:
                return query_read_only(self.database, FACES_VIEW + where + "\n)")
            except StoreError as error:
                if _is_lock_error(error):
                    raise FacesetBusy("the faceset is being written by another facesmith command; "
                                      "try again when it finishes") from error
                raise
