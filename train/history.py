"""The model folder's DuckDB file: per-iteration loss history, sessions, the validation split, events and per-face losses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import duckdb
import numpy as np

from curate.errors import StoreError
from curate.environment import connect_when_free, guarded_transaction, lock_hint
from curate.training_loss import COLUMNS as FACE_LOSS_COLUMNS
from curate.training_loss import FACESET_META_KEYS, FaceLoss

HISTORY_FILE = "model.duckdb"
READER_WAIT = 5.0  # seconds a reader waits for the trainer's write to end
WRITER_WAIT = 300.0  # seconds the trainer waits for readers to let go before it fails
SCHEMA_VERSION = 2

# Each migration takes the file from version N-1 to N; released ones are never edited.
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
        """CREATE TABLE sessions (
            session_id INTEGER PRIMARY KEY,
            started_at TIMESTAMPTZ NOT NULL,
            start_iteration BIGINT NOT NULL,
            device VARCHAR NOT NULL,
            config JSON NOT NULL
        )""",
        """CREATE TABLE history (
            iteration BIGINT PRIMARY KEY,         -- 1 = the first trained step
            wall_time TIMESTAMPTZ NOT NULL,
            ms DOUBLE NOT NULL,                   -- this step's duration, sampler wait included
            src_loss DOUBLE,                      -- NULL when the step's loss was not finite
            dst_loss DOUBLE,
            phase VARCHAR NOT NULL,
            learning_rate DOUBLE NOT NULL,
            session_id INTEGER NOT NULL
        )""",
        """CREATE TABLE faces (
            face_id VARCHAR NOT NULL,
            side VARCHAR NOT NULL CHECK (side IN ('src', 'dst')),
            split VARCHAR NOT NULL CHECK (split IN ('train', 'validation')),
            PRIMARY KEY (side, face_id)
        )""",
        """CREATE TABLE events (
            iteration BIGINT NOT NULL,
            logged_at TIMESTAMPTZ NOT NULL,
            kind VARCHAR NOT NULL,                -- checkpoint, rollback, plateau, phase, note
            detail VARCHAR NOT NULL
        )""",
        """CREATE VIEW loss_by_phase AS
            SELECT phase, min(iteration) AS first_iteration, max(iteration) AS last_iteration,
                   round(median(ms), 1) AS median_ms, round(avg(src_loss), 4) AS mean_src_loss,
                   round(avg(dst_loss), 4) AS mean_dst_loss
            FROM history GROUP BY phase ORDER BY first_iteration""",
    ],
    # Per-face running losses (train/face_losses.py), one snapshot per kept checkpoint, written just
    # before the checkpoint: a resume or rollback to iteration N loads the snapshot of N exactly.
    # curate.training_loss reads this table by path (curate cannot import train): its columns are that
    # module's contract, and a test reads what the trainer wrote through it.
    2: [
        """CREATE TABLE face_losses (
            iteration BIGINT NOT NULL,            -- the checkpoint this snapshot belongs to
            side VARCHAR NOT NULL CHECK (side IN ('src', 'dst')),
            face_id VARCHAR NOT NULL,             -- the face's id in that side's faceset
            loss DOUBLE NOT NULL,                 -- running loss: moving average over the face's own steps
            seen BIGINT NOT NULL,                 -- how many batches the face was in
            last_loss DOUBLE NOT NULL,            -- its loss the last time it was in a batch
            last_iteration BIGINT NOT NULL,       -- that iteration
            PRIMARY KEY (iteration, side, face_id)
        )""",
        """CREATE VIEW face_losses_latest AS
            SELECT side, face_id, loss, seen, last_loss, last_iteration, iteration FROM face_losses
            WHERE iteration = (SELECT max(iteration) FROM face_losses)""",
    ],
}


@dataclass(frozen=True)
class HistoryRow:
    iteration: int
    wall_time: datetime
    ms: float
    src_loss: float | None
    dst_loss: float | None
    phase: str
    learning_rate: float
    session_id: int

    def to_row(self) -> tuple:
        return (self.iteration, self.wall_time, self.ms, self.src_loss, self.dst_loss, self.phase,
                self.learning_rate, self.session_id)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ModelHistory:
    """Read/write access to a model folder's history file; every write is one transaction.

    DuckDB lets no other process open a file while one process has it open for writing, not even to
    read. So the trainer `release()`s the file between its writes (a flush every 100 iterations, a
    checkpoint, an event) and the next use opens it again: `train status`, the reports and the review
    app read a model while it trains. Each side waits its turn (`wait` seconds) instead of failing
    when it meets the other's lock.
    """

    def __init__(self, model_dir: Path, read_only: bool = False, wait: float | None = None):
        self.path = Path(model_dir) / HISTORY_FILE
        self.read_only = read_only
        # A reader waits out a write (milliseconds); the trainer waits out readers (a report, a page).
        self.wait = (READER_WAIT if read_only else WRITER_WAIT) if wait is None else wait
        if read_only and not self.path.is_file():
            raise StoreError(f"no training history at {self.path}: is {model_dir} a model folder?")
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._open()  # a locked or damaged file is an error now, not at the first read
        if not read_only:
            self._migrate()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection, opened again after `release()`."""
        return self._connection if self._connection is not None else self._open()

    def _open(self) -> duckdb.DuckDBPyConnection:
        try:
            self._connection = connect_when_free(self.path, self.read_only, self.wait)
        except duckdb.Error as error:
            raise StoreError(f"cannot open {self.path}: "
                             f"{lock_hint(error, 'training', 'stop it with Ctrl-C (it saves first)')}") from error
        return self._connection

    def release(self) -> None:
        """Close the file until the next read or write, so other processes may open it meanwhile."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        self.release()

    def __enter__(self) -> ModelHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        exists = self.connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'").fetchone()[0]
        version = 0
        if exists:
            row = self.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has history schema {version}, newer than this facesmith "
                             f"({SCHEMA_VERSION}): upgrade facesmith")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with guarded_transaction(self.connection) as connection:
                for statement in _MIGRATIONS[target]:
                    connection.execute(statement)
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(target)])

    # -- writes -------------------------------------------------------------------------------
    def start_session(self, start_iteration: int, device: str, config: dict[str, Any]) -> int:
        row = self.connection.execute("SELECT coalesce(max(session_id), 0) + 1 FROM sessions").fetchone()
        session_id = int(row[0])
        self.connection.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                                [session_id, _now(), start_iteration, device, json.dumps(config)])
        return session_id

    def append(self, rows: Sequence[HistoryRow]) -> None:
        if not rows:
            return
        columns = list(zip(*(row.to_row() for row in rows)))
        with guarded_transaction(self.connection) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO history SELECT * FROM (SELECT unnest(?) AS iteration, unnest(?), "
                "unnest(?), unnest(?), unnest(?), unnest(?), unnest(?), unnest(?))",
                [list(column) for column in columns])

    def truncate_after(self, iteration: int) -> int:
        """Drop history (and per-face loss snapshots) past `iteration` (after a rollback or a resume
        from an older checkpoint); returns the history rows dropped."""
        count = self.connection.execute("SELECT count(*) FROM history WHERE iteration > ?",
                                        [iteration]).fetchone()[0]
        with guarded_transaction(self.connection) as connection:
            connection.execute("DELETE FROM history WHERE iteration > ?", [iteration])
            connection.execute("DELETE FROM face_losses WHERE iteration > ?", [iteration])
        return int(count)

    def archive_history(self, table: str) -> None:
        """Move every history row into a new table `table`, and the per-face loss snapshots into
        `<table>_face_losses` (pretraining's losses stay queryable)."""
        if not table.replace("_", "").isalnum():
            raise ValueError(f"bad archive table name {table!r}")
        with guarded_transaction(self.connection) as connection:
            connection.execute(f"CREATE TABLE {table} AS SELECT * FROM history")
            connection.execute("DELETE FROM history")
            connection.execute(f"CREATE TABLE {table}_face_losses AS SELECT * FROM face_losses")
            connection.execute("DELETE FROM face_losses")

    def save_face_losses(self, iteration: int, rows: Sequence[FaceLoss]) -> None:
        """Store the per-face losses as the snapshot of `iteration` (replacing one stored before), in
        one transaction. Written before that iteration's checkpoint, so every checkpoint has its own."""
        with guarded_transaction(self.connection) as connection:
            connection.execute("DELETE FROM face_losses WHERE iteration = ?", [iteration])
            if rows:
                columns = [list(column) for column in zip(*(row.to_row() for row in rows))]
                connection.execute(
                    "INSERT INTO face_losses SELECT ?, * FROM (SELECT unnest(?), unnest(?), unnest(?), unnest(?), "
                    "unnest(?), unnest(?))", [iteration, *columns])

    def keep_face_losses(self, iterations: Sequence[int]) -> None:
        """Drop the snapshots of checkpoints no longer kept (backup rotation)."""
        self.connection.execute("DELETE FROM face_losses WHERE NOT list_contains(?, iteration)",
                                [[int(i) for i in iterations]])

    def record_facesets(self, src: Path, dst: Path) -> None:
        """The facesets this session trains on (absolute), so curation can tell which side a faceset
        was (curate.training_loss.side_of)."""
        for side, path in (("src", src), ("dst", dst)):
            self.set_meta(FACESET_META_KEYS[side], str(Path(path).resolve()))

    def log_event(self, iteration: int, kind: str, detail: str) -> None:
        self.connection.execute("INSERT INTO events VALUES (?, ?, ?, ?)", [iteration, _now(), kind, detail])

    def record_faces(self, side: str, train_ids: Sequence[str], validation_ids: Sequence[str]) -> None:
        """Record a side's split once; it is fixed at model creation and read back on resume."""
        with guarded_transaction(self.connection) as connection:
            connection.execute("DELETE FROM faces WHERE side = ?", [side])
            rows = [(face_id, side, "train") for face_id in train_ids]
            rows += [(face_id, side, "validation") for face_id in validation_ids]
            if rows:
                connection.executemany("INSERT INTO faces VALUES (?, ?, ?)", rows)

    def set_meta(self, key: str, value: str) -> None:
        self.connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    # -- reads ----------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def split(self, side: str) -> tuple[list[str], list[str]] | None:
        """(train ids, validation ids) recorded for `side`, or None before the first run."""
        rows = self.connection.execute("SELECT face_id, split FROM faces WHERE side = ? ORDER BY face_id",
                                       [side]).fetchall()
        if not rows:
            return None
        return ([f for f, s in rows if s == "train"], [f for f, s in rows if s == "validation"])

    def losses(self, phase: str | None = None, since: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(iterations (N,), losses (N, 2) src/dst with NaN for missing, ms (N,)), ordered."""
        query = "SELECT iteration, src_loss, dst_loss, ms FROM history WHERE iteration > ?"
        params: list[Any] = [since]
        if phase is not None:
            query += " AND phase = ?"
            params.append(phase)
        rows = self.connection.execute(query + " ORDER BY iteration", params).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0)
        data = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
        return data[:, 0].astype(np.int64), data[:, 1:3], data[:, 3]

    def face_losses(self, iteration: int) -> list[FaceLoss]:
        """The per-face loss snapshot stored with the checkpoint of `iteration` (empty if none)."""
        if not self._has_table("face_losses"):  # a read-only file from before per-face losses
            return []
        rows = self.connection.execute(
            f"SELECT {', '.join(FACE_LOSS_COLUMNS)} FROM face_losses WHERE iteration = ? ORDER BY side, face_id",
            [iteration]).fetchall()
        return [FaceLoss(str(side), str(face_id), float(loss), int(seen), float(last), int(last_iteration))
                for side, face_id, loss, seen, last, last_iteration in rows]

    def _has_table(self, name: str) -> bool:
        return bool(self.connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])

    def last_iteration(self) -> int:
        return int(self.connection.execute("SELECT coalesce(max(iteration), 0) FROM history").fetchone()[0])

    def events(self, kind: str | None = None) -> list[tuple[int, str, str]]:
        query = "SELECT iteration, kind, detail FROM events"
        params = []
        if kind:
            query += " WHERE kind = ?"
            params.append(kind)
        return [(int(i), str(k), str(d)) for i, k, d in
                self.connection.execute(query + " ORDER BY logged_at", params).fetchall()]

    def phase_start(self, phase: str) -> int:
        """The first iteration of the latest stretch of `phase` (0 if it never ran)."""
        row = self.connection.execute(
            "SELECT coalesce(max(iteration), 0) FROM history WHERE phase <> ?", [phase]).fetchone()
        after = int(row[0])
        first = self.connection.execute(
            "SELECT min(iteration) FROM history WHERE phase = ? AND iteration > ?", [phase, after]).fetchone()
        return int(first[0]) if first and first[0] is not None else 0
