"""The faceset database: DuckDB schema, migrations, batch writes and the read-only query door."""

from __future__ import annotations

import json
from contextlib import contextmanager
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import duckdb

from curate.environment import (
    connect_when_free,
    describe,
    environment_errors,
    guarded_transaction,
    is_environment_error,
    lock_hint,
)
from curate.errors import ReadOnlyQueryError, StoreError
from curate.faceset import check_role, table_exists
from curate.records import FaceRecord, ImageRecord

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6

IMAGE_COLUMNS = (
    "image_id, path, content_hash, bytes, mtime_ns, width, height, format, mode, status, "
    "reject_reason, face_count, run_id"
)
FACE_COLUMNS = (
    "face_id, image_id, face_index, det_score, bbox, landmarks5, landmarks68, yaw, pitch, roll, "
    "face_size, sharpness, motion_blur, brightness, shadows_clipped, highlights_clipped, contrast, "
    "lighting_lr, lighting_tb, color_cast, phash, embedding, face_type, resolution, image_to_face, "
    "aligned_path"
)
CHECK_COLUMNS = "face_id, measure, raw_value, score, bad_low, ok_low, ok_high, bad_high, verdict"
# The dfl_faces columns in the order of curate.interop.dfl.DflFaceRow.to_row().
DFL_FACE_COLUMNS = (
    "image_id, face_type, source_filename, source_rect, source_landmarks, aligned_landmarks, "
    "image_to_face, eyebrows_expand_mod, status, reason"
)

# Each migration takes the database from version N-1 to N; they run in order, in one
# transaction, and are never edited once released (add a new one instead).
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            started_at TIMESTAMPTZ NOT NULL,
            finished_at TIMESTAMPTZ,
            status VARCHAR NOT NULL,              -- running, done, interrupted
            source_root VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,
            providers VARCHAR[] NOT NULL,
            device VARCHAR NOT NULL,
            models JSON,
            settings JSON NOT NULL,
            tool_version VARCHAR NOT NULL,
            summary JSON
        )""",
        """CREATE TABLE images (
            image_id VARCHAR PRIMARY KEY,
            path VARCHAR NOT NULL UNIQUE,         -- relative to the scanned root, '/'-separated
            content_hash VARCHAR,                 -- sha256 of the file bytes
            bytes BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            width INTEGER,
            height INTEGER,
            format VARCHAR,
            mode VARCHAR,
            status VARCHAR NOT NULL CHECK (status IN ('ok', 'rejected')),
            reject_reason VARCHAR,
            face_count INTEGER NOT NULL,
            run_id VARCHAR NOT NULL
        )""",
        """CREATE TABLE faces (
            face_id VARCHAR PRIMARY KEY,
            image_id VARCHAR NOT NULL,
            face_index INTEGER NOT NULL,
            det_score DOUBLE NOT NULL,
            bbox DOUBLE[4] NOT NULL,              -- x1, y1, x2, y2 in source pixels
            landmarks5 DOUBLE[10] NOT NULL,       -- (x, y) pairs, source pixels
            landmarks68 DOUBLE[136] NOT NULL,     -- (x, y) pairs, source pixels, iBUG layout
            yaw DOUBLE, pitch DOUBLE, roll DOUBLE,  -- degrees
            face_size DOUBLE NOT NULL,            -- source pixels covered by the aligned square
            sharpness DOUBLE, motion_blur DOUBLE, brightness DOUBLE,
            shadows_clipped DOUBLE, highlights_clipped DOUBLE, contrast DOUBLE,
            lighting_lr DOUBLE, lighting_tb DOUBLE, color_cast DOUBLE,
            phash VARCHAR,
            embedding FLOAT[] NOT NULL,           -- L2-normalised; length = meta.embedding_dim
            face_type VARCHAR NOT NULL,
            resolution INTEGER NOT NULL,
            image_to_face DOUBLE[6] NOT NULL,     -- 2×3 affine, source px -> aligned px
            aligned_path VARCHAR NOT NULL         -- relative to the database's folder
        )""",
        """CREATE TABLE face_checks (
            face_id VARCHAR NOT NULL,
            measure VARCHAR NOT NULL,             -- sharpness, brightness, lighting, ...
            raw_value DOUBLE,
            score DOUBLE,                         -- 0..1, lower is worse
            bad_low DOUBLE, ok_low DOUBLE,        -- the band used (NULL: open edge);
            ok_high DOUBLE, bad_high DOUBLE,      -- score 1 inside [ok_low, ok_high], 0 past bad
            verdict VARCHAR NOT NULL,             -- ok, warn, bad
            PRIMARY KEY (face_id, measure)
        )""",
        "CREATE INDEX faces_image ON faces (image_id)",
        """CREATE VIEW rejected AS
            SELECT path, reject_reason, bytes, run_id FROM images WHERE status = 'rejected'""",
        """CREATE VIEW rejects_by_reason AS
            SELECT reject_reason, count(*) AS files FROM images WHERE status = 'rejected'
            GROUP BY reject_reason ORDER BY files DESC, reject_reason""",
        """CREATE VIEW pose_coverage AS
            SELECT CAST(floor(yaw / 15) * 15 AS INTEGER) AS yaw_bin,
                   CAST(floor(pitch / 15) * 15 AS INTEGER) AS pitch_bin,
                   count(*) AS faces, max(sharpness) AS best_sharpness
            FROM faces WHERE yaw IS NOT NULL GROUP BY ALL ORDER BY yaw_bin, pitch_bin""",
        """CREATE VIEW summary AS
            SELECT (SELECT count(*) FROM images) AS images,
                   (SELECT count(*) FROM images WHERE status = 'ok') AS images_ok,
                   (SELECT count(*) FROM images WHERE status = 'rejected') AS images_rejected,
                   (SELECT count(*) FROM images WHERE status = 'ok' AND face_count = 0)
                       AS images_without_faces,
                   (SELECT count(*) FROM faces) AS faces,
                   (SELECT count(*) FROM runs) AS runs""",
        "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    ],
    # Analysis results: each table is recomputed whole by its analysis and says why per face.
    2: [
        """CREATE TABLE analyses (
            kind VARCHAR PRIMARY KEY,             -- duplicates, identities, selection
            analysed_at TIMESTAMPTZ NOT NULL,
            faces INTEGER NOT NULL,               -- faces in the set when it ran
            parameters JSON NOT NULL
        )""",
        """CREATE TABLE duplicates (
            face_id VARCHAR PRIMARY KEY,          -- every face that belongs to a duplicate group
            group_id VARCHAR NOT NULL,            -- the face kept for the group
            kind VARCHAR NOT NULL,                -- exact-file, exact-pixels, near
            keep BOOLEAN NOT NULL,                -- true for exactly one face per group
            similarity DOUBLE,                    -- embedding cosine to the kept face
            phash_distance INTEGER,               -- Hamming distance to the kept face's phash
            reason VARCHAR NOT NULL
        )""",
        """CREATE TABLE identities (
            face_id VARCHAR PRIMARY KEY,
            cluster INTEGER NOT NULL,             -- -1: belongs to no cluster (outlier)
            label VARCHAR NOT NULL,               -- main, other-person, outlier
            distance DOUBLE NOT NULL,             -- cosine distance to the main identity's centre
            reason VARCHAR NOT NULL
        )""",
        """CREATE TABLE selection (
            face_id VARCHAR PRIMARY KEY,
            selected BOOLEAN NOT NULL,
            pick_order INTEGER,                   -- 1 = picked first; NULL when not selected
            yaw_bin INTEGER, pitch_bin INTEGER, light_bin VARCHAR,
            reason VARCHAR NOT NULL               -- 'selected' or why the face was left out
        )""",
    ],
    # DeepFaceLab interop: the metadata read from an imported DFL aligned folder (curate/interop/dfl.py).
    3: [
        """CREATE TABLE dfl_faces (
            image_id VARCHAR PRIMARY KEY,         -- the aligned file's images row
            face_type VARCHAR,                    -- DFL's name: half_face, midfull_face, full_face, whole_face, head, …
            source_filename VARCHAR,              -- the frame DFL cut the face from
            source_rect DOUBLE[4],                -- left, top, right, bottom in frame pixels
            source_landmarks DOUBLE[136],         -- (x, y) pairs, frame pixels, iBUG layout
            aligned_landmarks DOUBLE[136],        -- (x, y) pairs, aligned-image pixels
            image_to_face DOUBLE[6],              -- 2×3 affine, frame px -> aligned px
            eyebrows_expand_mod DOUBLE,
            status VARCHAR NOT NULL CHECK (status IN ('ok', 'no-metadata', 'rejected')),
            reason VARCHAR                        -- why no metadata or rejected; NULL when ok
        )""",
    ],
    # Views for the common questions (README, "Querying a faceset"). The coverage and lighting
    # views use curate.analysis.coverage's default bins; a test checks they agree with it.
    4: [
        """CREATE VIEW coverage AS
            SELECT least(CAST(floor(yaw / 15) * 15 AS INTEGER), 75) AS yaw_bin,
                   least(CAST(floor(pitch / 15) * 15 AS INTEGER), 45) AS pitch_bin,
                   count(*) AS faces, max(sharpness) AS best_sharpness
            FROM faces
            WHERE yaw BETWEEN -90 AND 90 AND pitch BETWEEN -60 AND 60
            GROUP BY ALL ORDER BY yaw_bin, pitch_bin""",
        """CREATE VIEW lighting AS
            SELECT CASE WHEN lighting_lr IS NULL OR lighting_tb IS NULL THEN 'unknown'
                        WHEN greatest(abs(lighting_lr), abs(lighting_tb)) < 0.1 THEN 'even'
                        WHEN abs(lighting_lr) >= abs(lighting_tb)
                             THEN CASE WHEN lighting_lr > 0 THEN 'right' ELSE 'left' END
                        ELSE CASE WHEN lighting_tb > 0 THEN 'top' ELSE 'bottom' END END AS light_bin,
                   count(*) AS faces
            FROM faces GROUP BY ALL ORDER BY faces DESC, light_bin""",
        """CREATE VIEW duplicate_groups AS
            SELECT d.group_id AS kept_face, any_value(d.kind) AS kind, count(*) AS members,
                   list(i.path ORDER BY d.keep DESC, d.face_id) AS paths,
                   list(d.face_id ORDER BY d.face_id) FILTER (NOT d.keep) AS dropped_faces
            FROM duplicates d JOIN faces f USING (face_id) JOIN images i USING (image_id)
            GROUP BY d.group_id ORDER BY members DESC, kept_face""",
        """CREATE VIEW identity_summary AS
            SELECT label, count(*) AS faces, count(DISTINCT cluster) AS clusters,
                   round(min(distance), 3) AS min_distance, round(max(distance), 3) AS max_distance
            FROM identities GROUP BY label ORDER BY faces DESC""",
        """CREATE VIEW other_people AS
            SELECT i.path, f.face_index, d.face_id, d.label, round(d.distance, 3) AS distance, d.reason
            FROM identities d JOIN faces f USING (face_id) JOIN images i USING (image_id)
            WHERE d.label <> 'main' ORDER BY d.distance DESC, d.face_id""",
        """CREATE VIEW selected_faces AS
            SELECT s.pick_order, s.face_id, i.path, f.yaw, f.pitch, s.light_bin, f.sharpness, f.aligned_path
            FROM selection s JOIN faces f USING (face_id) JOIN images i USING (image_id)
            WHERE s.selected ORDER BY s.pick_order""",
        "DROP VIEW summary",
        """CREATE VIEW summary AS
            SELECT (SELECT count(*) FROM images) AS images,
                   (SELECT count(*) FROM images WHERE status = 'ok') AS images_ok,
                   (SELECT count(*) FROM images WHERE status = 'rejected') AS images_rejected,
                   (SELECT count(*) FROM images WHERE status = 'ok' AND face_count = 0)
                       AS images_without_faces,
                   (SELECT count(*) FROM faces) AS faces,
                   (SELECT count(*) FROM duplicates WHERE NOT keep) AS duplicate_faces,
                   (SELECT count(*) FROM identities WHERE label <> 'main') AS other_identity_faces,
                   (SELECT count(*) FROM selection WHERE selected) AS selected_faces,
                   (SELECT count(*) FROM runs) AS runs""",
    ],
    # `coverage` (version 4) answers what `pose_coverage` did, with the report's bins.
    5: ["DROP VIEW pose_coverage"],
    # Curate decisions that hold on footage (curate/faceset.py): a person's decisions, how far each
    # dropped duplicate is from its keeper in pose, expression and light, whether an identity
    # verdict rests on a reliable embedding, and the expression each selected face shows.
    6: [
        """CREATE TABLE decisions (
            decision_id BIGINT PRIMARY KEY,       -- 1, 2, …: the order they were made; the latest wins
            face_id VARCHAR NOT NULL,
            content_hash VARCHAR,                 -- sha256 of the face's image (decisions move by it)
            face_index INTEGER,                   -- the face's index in that image
            action VARCHAR NOT NULL CHECK (action IN
                ('exclude', 'include', 'reset', 'keeper', 'label', 'tag', 'untag')),
            value VARCHAR,                        -- label: main | other-person | NULL; tag: the tag
            who VARCHAR NOT NULL,
            decided_at TIMESTAMPTZ NOT NULL,
            why VARCHAR
        )""",
        "ALTER TABLE duplicates ADD COLUMN pose_delta DOUBLE",        # degrees to the kept face
        "ALTER TABLE duplicates ADD COLUMN expression_delta DOUBLE",  # in expression tolerances
        "ALTER TABLE duplicates ADD COLUMN light_delta DOUBLE",       # lighting asymmetry
        "ALTER TABLE identities ADD COLUMN reliable BOOLEAN",         # the embedding can be trusted
        "ALTER TABLE selection ADD COLUMN expression_bin VARCHAR",
    ],
}


@dataclass(frozen=True)
class FileState:
    """What the database remembers of a file, to decide whether a re-scan must touch it."""

    image_id: str
    bytes: int
    mtime_ns: int
    content_hash: str | None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class FacesetStore:
    """Read-write access to one faceset file; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.connection = duckdb.connect(str(self.path))
        except duckdb.Error as error:
            if is_environment_error(error):
                raise describe(error, "open the faceset", self.path) from error
            raise StoreError(f"cannot open faceset {self.path}: {lock_hint(error)}") from error
        try:
            self._migrate()
        except BaseException as error:
            # Release the file: a half-made store would keep it locked for this process.
            self.connection.close()
            if isinstance(error, duckdb.Error):  # e.g. another program's 'meta' table
                raise StoreError(f"{self.path} is not a faceset this facesmith can read: {error}") from error
            raise

    def __enter__(self) -> "FacesetStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with environment_errors("close the faceset", self.path):
            self.connection.close()

    def execute(self, statement: str, parameters: Sequence[Any] = ()) -> duckdb.DuckDBPyConnection:
        """One statement outside a batch transaction, a full disk or read-only file worded for people."""
        try:
            with environment_errors("write to the faceset", self.path):
                return self.connection.execute(statement, list(parameters))
        except Exception as error:
            if _interrupted(error):
                raise KeyboardInterrupt from None
            raise

    # -- schema -----------------------------------------------------------------------------

    def schema_version(self) -> int:
        if not table_exists(self.connection, "meta"):
            return 0
        row = self.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this facesmith "
                f"({SCHEMA_VERSION}): upgrade facesmith"
            )
        if current == SCHEMA_VERSION:
            return
        with self._transaction(f"migrate to schema {SCHEMA_VERSION}:") as connection:
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    connection.execute(statement)
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])
        logger.info("faceset %s migrated from schema %d to %d", self.path, current, SCHEMA_VERSION)

    def meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def require_meta(self, key: str, value: str, what: str) -> None:
        """Record `value` under `key` the first time; refuse a different value later."""
        stored = self.meta(key)
        if stored is None:
            self.execute("INSERT INTO meta VALUES (?, ?)", [key, value])
        elif stored != value:
            raise StoreError(
                f"{self.path} was scanned with {what} {stored}; this scan asks for {value}. "
                f"Use a new --db file (or the same {what})."
            )

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self, run_id: str, source_root: str, backend: str, providers: Sequence[str], device: str,
        models: Any, settings: dict[str, Any], tool_version: str,
    ) -> None:
        # A run still 'running' in the file was killed: no two writers can hold the file at once.
        self.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
        self.execute(
            "INSERT INTO runs (run_id, started_at, status, source_root, backend, providers, device, "
            "models, settings, tool_version) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
            [run_id, _now(), source_root, backend, list(providers), device, json.dumps(models),
             json.dumps(settings), tool_version],
        )

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        """Mark the run done; the summary's providers (those the analysers really used, which
        engines with remote workers only learn while running) replace the ones given at start."""
        self.execute(
            "UPDATE runs SET status = 'done', finished_at = ?, summary = ?, "
            "providers = coalesce(?, providers) WHERE run_id = ?",
            [_now(), json.dumps(summary), summary.get("providers") or None, run_id],
        )

    def roll_back_open_transaction(self) -> bool:
        """Roll back a transaction that an interruption left open; True when there was one.

        The second guard for whoever writes after an interruption (the first is
        `curate.environment.guarded_transaction`): whatever is written next on a connection left
        in a transaction joins it and vanishes at close."""
        try:
            self.connection.execute("ROLLBACK")
        except duckdb.TransactionException:  # none was open: the usual case
            return False
        return True

    def interrupt_run(self, run_id: str, summary: dict[str, Any]) -> None:
        """Mark a run that stopped early (Ctrl-C, a full disk) 'interrupted', with what it saved."""
        self.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ?, summary = ? WHERE run_id = ?",
            [_now(), json.dumps(summary), run_id],
        )

    # -- images and faces ------------------------------------------------------------------

    def file_states(self) -> dict[str, FileState]:
        rows = self.connection.execute(
            "SELECT path, image_id, bytes, mtime_ns, content_hash FROM images"
        ).fetchall()
        return {path: FileState(image_id, size, mtime, digest) for path, image_id, size, mtime, digest in rows}

    def touch(self, image_id: str, mtime_ns: int) -> None:
        """Remember a new mtime for a file whose bytes did not change."""
        self.execute("UPDATE images SET mtime_ns = ? WHERE image_id = ?", [mtime_ns, image_id])

    def delete_images(self, image_ids: Sequence[str]) -> None:
        """Forget files that are gone from the scanned folder, with their faces and checks."""
        if not image_ids:
            return
        ids = list(image_ids)
        with self._transaction("remove vanished files from") as connection:
            for table in ("face_checks", "duplicates", "identities", "selection"):
                connection.execute(
                    f"DELETE FROM {table} WHERE face_id IN "
                    "(SELECT face_id FROM faces WHERE list_contains(?, image_id))", [ids])
            for table in ("faces", "dfl_faces", "images"):
                connection.execute(f"DELETE FROM {table} WHERE list_contains(?, image_id)", [ids])

    def write_batch(
        self,
        images: Sequence[ImageRecord],
        faces: Sequence[FaceRecord],
        checks: Iterable[tuple] = (),
    ) -> None:
        """Replace these images' rows (and their faces) in one transaction."""
        ids = [image.image_id for image in images]
        with self._transaction("write a batch to") as connection:
            if ids:
                _delete_scan_rows(connection, ids)
                _insert_rows(connection, f"images ({IMAGE_COLUMNS})", [i.to_row() for i in images])
            _insert_rows(connection, f"faces ({FACE_COLUMNS})", [face.to_row() for face in faces])
            _insert_rows(connection, f"face_checks ({CHECK_COLUMNS})", list(checks))

    def load_shard(self, shard: Any, touched: Sequence[tuple[str, int]] = ()) -> None:
        """Load a Parquet shard (`curate.scan.shards.Shard`) the way `write_batch` writes rows: its
        images replace theirs, with their faces and checks, and `touched` (image_id, mtime_ns)
        pairs get their new mtime, all in one transaction. DuckDB reads the files itself."""
        images, faces, checks = (str(path) for path in shard.files())
        with self._transaction("load a Parquet shard into") as connection:
            for image_id, mtime_ns in touched:
                connection.execute("UPDATE images SET mtime_ns = ? WHERE image_id = ?", [mtime_ns, image_id])
            ids = [row[0] for row in connection.execute(
                "SELECT image_id FROM read_parquet(?)", [images]).fetchall()]
            if ids:
                _delete_scan_rows(connection, ids)
            connection.execute(f"INSERT INTO images ({IMAGE_COLUMNS}) SELECT {IMAGE_COLUMNS} "
                               "FROM read_parquet(?)", [images])
            connection.execute(f"INSERT INTO faces ({FACE_COLUMNS}) SELECT {FACE_COLUMNS} "
                               "FROM read_parquet(?)", [faces])
            connection.execute(f"INSERT INTO face_checks ({CHECK_COLUMNS}) SELECT {CHECK_COLUMNS} "
                               "FROM read_parquet(?)", [checks])

    def add_checks(self, checks: Sequence[tuple], measures: Sequence[str]) -> None:
        """Replace these measures' face_checks rows of the faces in `checks` (rows as
        curate.faces.quality.check_rows), in one transaction."""
        face_ids = sorted({row[0] for row in checks})
        with self._transaction("add quality checks to") as connection:
            if face_ids:
                connection.execute("DELETE FROM face_checks WHERE list_contains(?, face_id) AND list_contains(?, measure)",
                                   [face_ids, list(measures)])
            _insert_rows(connection, f"face_checks ({CHECK_COLUMNS})", list(checks))

    def write_dfl_faces(self, rows: Sequence[tuple]) -> None:
        """Replace the dfl_faces rows of these images (rows as DflFaceRow.to_row()) in one transaction."""
        with self._transaction("write DFL metadata to") as connection:
            ids = [row[0] for row in rows]
            if ids:
                connection.execute("DELETE FROM dfl_faces WHERE list_contains(?, image_id)", [ids])
            _insert_rows(connection, f"dfl_faces ({DFL_FACE_COLUMNS})", list(rows))

    # -- analysis results -----------------------------------------------------------------

    def replace_analysis(
        self, kind: str, table: str, rows: Sequence[tuple], parameters: dict[str, Any]
    ) -> None:
        """Swap an analysis table's whole content and record when and how it was computed."""
        with self._transaction(f"store the {kind} analysis in") as connection:
            connection.execute(f"DELETE FROM {table}")
            _insert_rows(connection, table, list(rows))
            faces = connection.execute("SELECT count(*) FROM faces").fetchone()[0]
            connection.execute(
                "INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?)",
                [kind, _now(), faces, json.dumps(parameters)],
            )

    @contextmanager
    def _transaction(self, action: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN … COMMIT around the block; ROLLBACK on any error, a database error becoming a
        StoreError that says what could not be done ("cannot <action> <path>")."""
        try:
            with guarded_transaction(self.connection) as connection:
                yield connection
        except BaseException as error:
            if _interrupted(error):
                raise KeyboardInterrupt from None
            if isinstance(error, duckdb.Error):
                if is_environment_error(error):
                    raise describe(error, action, self.path) from None
                raise StoreError(f"cannot {action} {self.path}: {error}") from error
            raise


def _interrupted(error: BaseException) -> bool:
    """Ctrl-C that DuckDB caught inside a statement: it stops the query and raises an error of its
    own ('Query interrupted') in place of the KeyboardInterrupt."""
    return (isinstance(error, (RuntimeError, duckdb.InterruptException))
            and "interrupted" in str(error).lower())


def _delete_scan_rows(connection: duckdb.DuckDBPyConnection, image_ids: list[str]) -> None:
    """The images, faces and checks rows a re-scan of these images replaces."""
    connection.execute(
        "DELETE FROM face_checks WHERE face_id IN "
        "(SELECT face_id FROM faces WHERE list_contains(?, image_id))", [image_ids]
    )
    connection.execute("DELETE FROM faces WHERE list_contains(?, image_id)", [image_ids])
    connection.execute("DELETE FROM images WHERE list_contains(?, image_id)", [image_ids])


def _insert_rows(connection: duckdb.DuckDBPyConnection, target: str, rows: list[tuple]) -> None:
    """INSERT many rows as multi-row VALUES statements: DuckDB's executemany pays a full
    statement per row, ~50× slower for the few hundred rows of a scan batch."""
    if not rows:
        return
    width = len(rows[0])
    one_row = f"({', '.join('?' * width)})"
    per_statement = max(1, 2000 // width)  # keep each statement's parameter list moderate
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        connection.execute(
            f"INSERT INTO {target} VALUES {', '.join([one_row] * len(chunk))}",
            [value for row in chunk for value in row],
        )


def set_role(database: Path, role: str) -> None:
    """Record whether the faceset at `database` is a src (the face to learn) or a dst (the frames
    to merge into); see curate.faceset for what the role changes."""
    check_role(role)
    database = Path(database)
    if not database.is_file():
        raise StoreError(f"no faceset at {database}: run 'facesmith curate scan' first")
    with FacesetStore(database) as store:
        store.set_meta("role", role)


# -- read-only queries ---------------------------------------------------------------------

_READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA"}


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]


DEFAULT_QUERY_SECONDS = 60.0
DEFAULT_QUERY_MEMORY = "2GB"
# A read waits this long for another process's write to end: the trainer holds its history file only
# while it writes, so a query meets at most a moment of it (a scan holds a faceset throughout).
LOCK_WAIT = 5.0
_MEMORY_LIMIT = re.compile(r"\s*\d+(\.\d+)?\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)\s*", re.I)


def query_read_only(path: Path, sql: str, timeout_s: float = DEFAULT_QUERY_SECONDS,
                    memory_limit: str = DEFAULT_QUERY_MEMORY) -> QueryResult:
    """Run `sql` on the faceset at `path` without any way to change it or touch other files.

    The file is opened read-only with file-system access from SQL switched off, and statements
    other than queries (INSERT, COPY, ATTACH, …) are refused before anything runs. Each call is
    bounded: it is stopped after `timeout_s` seconds and may use at most `memory_limit` (DuckDB's
    notation, e.g. '2GB'), with no spilling to disk, so a recursive query cannot take the machine.
    """
    path = Path(path)
    if not timeout_s > 0:
        raise ReadOnlyQueryError(f"the time limit must be more than 0 seconds, got {timeout_s}")
    if not _MEMORY_LIMIT.fullmatch(str(memory_limit)):
        raise ReadOnlyQueryError(f"memory limit {memory_limit!r} is not a size like 512MB or 2GB")
    if not path.is_file():
        raise StoreError(f"no faceset at {path}")
    try:
        connection = connect_when_free(
            path, read_only=True, wait=LOCK_WAIT,
            # locked, so no statement can switch file access (or logging to files) back on, nor
            # lift the memory limit; an empty temp_directory turns spilling to disk off
            config={"enable_external_access": False, "memory_limit": str(memory_limit).strip(),
                    "temp_directory": "", "lock_configuration": True},
        )
    except duckdb.Error as error:
        raise StoreError(f"cannot open {path} read-only: {lock_hint(error)}") from error
    try:
        try:
            statements = connection.extract_statements(sql)
        except duckdb.Error as error:
            raise ReadOnlyQueryError(f"cannot parse the query: {error}") from error
        if not statements:
            raise ReadOnlyQueryError("no statement given")
        for statement in statements:
            try:
                kind = statement.type.name
            except ValueError:  # a statement type newer than the duckdb Python enum knows
                kind = "UNKNOWN"
            # EXPLAIN ANALYZE runs the statement it explains, whatever that is.
            analyzes = kind == "EXPLAIN" and re.match(r"\s*EXPLAIN\s+ANALY[SZ]E\b", statement.query, re.I)
            if kind not in _READ_ONLY_TYPES or analyzes:
                raise ReadOnlyQueryError(
                    f"refused: '{statement.query.strip()[:60]}' is a {kind} statement; "
                    "facesmith sql only reads (SELECT, EXPLAIN, PRAGMA, DESCRIBE, SHOW)"
                )
        result = None
        timer = threading.Timer(timeout_s, connection.interrupt)
        timer.daemon = True
        timer.start()
        try:
            for statement in statements:
                result = connection.execute(statement)
            columns = [column[0] for column in result.description] if result.description else []
            rows = result.fetchall() if result.description else []
        except duckdb.InterruptException as error:
            raise ReadOnlyQueryError(f"query stopped after {timeout_s:g} s (raise --timeout to let it run "
                                     "longer)") from error
        except duckdb.OutOfMemoryException as error:
            raise ReadOnlyQueryError(f"query needs more than {memory_limit} of memory (raise --memory-limit, "
                                     f"or select fewer rows or columns): {_first_line(error)}") from error
        except duckdb.Error as error:
            raise ReadOnlyQueryError(f"query failed: {error}") from error
        finally:
            timer.cancel()
        return QueryResult(columns, rows)
    finally:
        connection.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
