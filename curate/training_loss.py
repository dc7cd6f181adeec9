"""Per-face training losses read from a model folder by path: the contract between the trainer and curation.

The trainer keeps a running loss for every src and dst face it trains on and stores it in the model
folder's history file (`train/face_losses.py`, `train/history.py`). Curation must not import `train`
(dependencies point one way), so the reports and the review app read that file here, read-only, and
this module states what they rely on:

- the file `model.duckdb` in the model folder;
- the table `face_losses`: `iteration` (BIGINT: the checkpoint the snapshot belongs to), `side`
  (`src` | `dst`), `face_id` (the face's id in that side's faceset), `loss` (DOUBLE: the running
  loss, a moving average over the face's own steps), `seen` (BIGINT: batches it was in),
  `last_loss` (DOUBLE: its loss the last time), `last_iteration` (BIGINT: that iteration); one
  snapshot per kept checkpoint, the newest (largest `iteration`) being the current one;
- the `meta` keys `src_faceset` and `dst_faceset`: the absolute path of each side's faceset as the
  last session trained on it (face ids are per faceset, and two facesets scanned from folders with
  the same file names share them, so a faceset's side is found by its path).

A model folder from before per-face losses has no such table: it reads as no losses.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from curate.environment import lock_hint
from curate.errors import StoreError
from curate.faceset import table_exists

HISTORY_FILE = "model.duckdb"  # train.history.HISTORY_FILE (a test checks they agree)
TABLE = "face_losses"
COLUMNS = ("side", "face_id", "loss", "seen", "last_loss", "last_iteration")
SIDES = ("src", "dst")
FACESET_META_KEYS = {"src": "src_faceset", "dst": "dst_faceset"}


@dataclass(frozen=True)
class FaceLoss:
    """One face's running training loss, as the trainer stores it (one row of `face_losses`)."""

    side: str  # src or dst
    face_id: str
    loss: float  # the running loss (moving average over the face's own steps)
    seen: int  # batches the face was in, over every session
    last_loss: float  # its loss the last time it was in a batch
    last_iteration: int  # that iteration

    def to_row(self) -> tuple:
        return (self.side, self.face_id, self.loss, self.seen, self.last_loss, self.last_iteration)


@dataclass(frozen=True)
class FaceLosses:
    """One side's per-face losses at a model's newest snapshot."""

    model_dir: Path
    side: str
    iteration: int | None  # the snapshot's iteration; None when the model has recorded none
    faceset: Path | None  # the faceset this side trained on, as the trainer recorded it
    losses: dict[str, FaceLoss] = field(default_factory=dict)  # face_id -> its running loss

    @property
    def median(self) -> float | None:
        """The median running loss over this side's faces (what a face's loss is compared with)."""
        return statistics.median(face.loss for face in self.losses.values()) if self.losses else None

    def ratio(self, face_id: str) -> float | None:
        """The face's running loss over the side's median (2.0: twice as hard as the typical face)."""
        median, face = self.median, self.losses.get(face_id)
        return None if face is None or not median else face.loss / median

    def ranked(self) -> list[FaceLoss]:
        """Hardest first (highest running loss; ties by face id, so the order is deterministic)."""
        return sorted(self.losses.values(), key=lambda face: (-face.loss, face.face_id))


def history_path(model_dir: Path) -> Path:
    return Path(model_dir) / HISTORY_FILE


def _connect(model_dir: Path) -> duckdb.DuckDBPyConnection:
    path = history_path(model_dir)
    if not path.is_file():
        raise StoreError(f"no training history at {path}: is {model_dir} a model folder?")
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as error:
        raise StoreError(f"cannot read the per-face training losses in {path}: "
                         f"{lock_hint(error, 'training', 'stop it with Ctrl-C (it saves first)')}") from error


def _meta(connection: duckdb.DuckDBPyConnection, key: str) -> str | None:
    if not table_exists(connection, "meta"):
        return None
    row = connection.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return None if row is None else str(row[0])


def read_face_losses(model_dir: Path, side: str) -> FaceLosses:
    """`side`'s per-face losses at the model's newest snapshot (empty when none were recorded).

    Raises StoreError when `model_dir` holds no history file, or while training holds it (DuckDB
    lets no other process open a file being written).
    """
    if side not in SIDES:
        raise ValueError(f"side is src or dst, not {side!r}")
    model_dir = Path(model_dir)
    connection = _connect(model_dir)
    try:
        recorded = _meta(connection, FACESET_META_KEYS[side])
        faceset = Path(recorded) if recorded else None
        if not table_exists(connection, TABLE):
            return FaceLosses(model_dir, side, None, faceset)
        (iteration,) = connection.execute(f"SELECT max(iteration) FROM {TABLE}").fetchone()
        if iteration is None:
            return FaceLosses(model_dir, side, None, faceset)
        rows = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE iteration = ? AND side = ?",
                                  [iteration, side]).fetchall()
    finally:
        connection.close()
    losses = {row[1]: FaceLoss(str(row[0]), str(row[1]), float(row[2]), int(row[3]), float(row[4]), int(row[5]))
              for row in rows}
    return FaceLosses(model_dir, side, int(iteration), faceset, losses)


def side_of(model_dir: Path, database: Path, role: str) -> str:
    """Which side of the model the faceset at `database` trained as: the side whose recorded faceset
    is this file; `role` (the faceset's own) when the model recorded neither as this file."""
    database = Path(database).resolve()
    connection = _connect(Path(model_dir))
    try:
        recorded = {side: _meta(connection, key) for side, key in FACESET_META_KEYS.items()}
    finally:
        connection.close()
    matching = [side for side, path in recorded.items() if path and Path(path).resolve() == database]
    return matching[0] if len(matching) == 1 else role


__all__ = ["COLUMNS", "FACESET_META_KEYS", "HISTORY_FILE", "SIDES", "TABLE", "FaceLoss", "FaceLosses",
           "history_path", "read_face_losses", "side_of"]
