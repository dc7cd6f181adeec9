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

`hardest_faces` puts the faces with the highest running loss beside what curation knows of them
(read through `curate.faceset.FacesetReader`: whether the face trains and why not, its bad and warn
quality verdicts, its identity label): the reports and the review app show that list.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from curate.environment import connect_when_free, lock_hint
from curate.errors import StoreError
from curate.faceset import QUALITY_WORDS, FacesetReader, table_exists

HISTORY_FILE = "model.duckdb"  # train.history.HISTORY_FILE (a test checks they agree)
TABLE = "face_losses"
COLUMNS = ("side", "face_id", "loss", "seen", "last_loss", "last_iteration")
SIDES = ("src", "dst")
FACESET_META_KEYS = {"src": "src_faceset", "dst": "dst_faceset"}
LOCK_WAIT = 5.0  # seconds to wait for the trainer's write (it holds the file only while it writes)


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
        return connect_when_free(path, read_only=True, wait=LOCK_WAIT)
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


# -- the hardest faces beside their verdicts ---------------------------------------------------------

DEFAULT_HARDEST = 10
# A face whose running loss is this many times the side's median is "hard" in the reports' advice.
# Faces of one person in one session spread to about 1.2x (the sample facesets at 80 iterations: the
# second-hardest real face at 1.16x, the noise crop the tests plant at 1.35x).
HARD_RATIO = 1.3


@dataclass(frozen=True)
class HardFace:
    """One face the model learns worst, with what curation says of it."""

    rank: int  # 1 = the highest running loss of its side
    face_id: str
    loss: float  # running loss
    ratio: float | None  # loss over the side's median: 2.0 = twice as hard as the typical face
    seen: int  # batches it was in
    last_loss: float
    last_iteration: int
    path: str  # its image, relative to the scanned folder
    face_index: int  # its index in that image
    aligned_path: str  # its crop, relative to the faceset's folder
    trains: bool  # whether it trains now, as the faceset reader rules (a decision since may have excluded it)
    status: str  # why it does not train ('' when it does)
    bad: tuple[str, ...]  # measures with a 'bad' verdict (every measure, not only the gates)
    warn: tuple[str, ...]  # measures with a 'warn' verdict
    identity: str | None  # 'main', 'other-person' or 'outlier' with its distance; None when not analysed

    @property
    def verdicts(self) -> str:
        """The quality verdicts in words, for one table cell ('ok' when none is warn or bad)."""
        words = [f"{QUALITY_WORDS.get(m, m)} (bad)" for m in self.bad] + [f"{m} warn" for m in self.warn]
        return ", ".join(words) or "ok"

    def to_dict(self) -> dict:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {**values, "bad": list(self.bad), "warn": list(self.warn), "verdicts": self.verdicts}


@dataclass(frozen=True)
class HardestFaces:
    """A side's hardest faces in one faceset, as the reports and the review app show them."""

    model_dir: str
    database: str
    side: str  # the side of the model this faceset trained as
    iteration: int | None  # the snapshot's (None: the model has recorded no per-face loss yet)
    faces_with_loss: int  # faces of this side with a running loss in the snapshot
    median: float | None
    not_in_faceset: int  # faces with a loss that the faceset no longer has (re-scanned, another faceset)
    faces: list[HardFace]  # hardest first

    def to_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in self.__dataclass_fields__ if name != "faces"},
                "faces": [face.to_dict() for face in self.faces]}


def hardest_faces(model_dir: Path, database: Path, count: int = DEFAULT_HARDEST,
                  side: str | None = None) -> HardestFaces:
    """The `count` faces of the faceset at `database` with the highest running training loss in the
    model at `model_dir`, each with its verdicts. `side`: which side of the model the faceset was
    (default: the one the model recorded for this file, else the faceset's own role)."""
    if count < 1:
        raise ValueError("count is at least 1")
    database = Path(database)
    with FacesetReader(database) as reader:
        role = reader.role
        side = side or side_of(model_dir, database, role)
        losses = read_face_losses(model_dir, side)
        table = reader.faces()
        position = table.index()
        statuses = {status.face_id: status for status in reader.statuses(as_role=side)}
        bad = reader.bad_checks(measures=_all_measures(reader))
        warn: dict[str, list[str]] = {}
        for face_id, measure in reader.connection.execute(
                "SELECT face_id, measure FROM face_checks WHERE verdict = 'warn' ORDER BY face_id, measure").fetchall():
            warn.setdefault(face_id, []).append(measure)
        labels = reader.identity_labels()
    ranked = [face for face in losses.ranked() if face.face_id in position]
    median = losses.median
    faces = []
    for rank, face in enumerate(ranked[:count], start=1):
        i = position[face.face_id]
        status = statuses[face.face_id]
        label = labels.get(face.face_id)
        faces.append(HardFace(
            rank=rank, face_id=face.face_id, loss=face.loss, ratio=losses.ratio(face.face_id), seen=face.seen,
            last_loss=face.last_loss, last_iteration=face.last_iteration, path=table.paths[i],
            face_index=int(table.face_index[i]), aligned_path=table.aligned_paths[i], trains=status.trains,
            status=status.reason, bad=tuple(bad.get(face.face_id, ())), warn=tuple(warn.get(face.face_id, ())),
            identity=None if label is None else f"{label[0]} ({label[1]:.2f})"))
    return HardestFaces(model_dir=str(model_dir), database=str(database), side=side, iteration=losses.iteration,
                        faces_with_loss=len(losses.losses), median=median,
                        not_in_faceset=len(losses.losses) - len(ranked), faces=faces)


def _all_measures(reader: FacesetReader) -> list[str]:
    return [measure for (measure,) in reader.connection.execute(
        "SELECT DISTINCT measure FROM face_checks ORDER BY measure").fetchall()]


__all__ = ["COLUMNS", "DEFAULT_HARDEST", "HARD_RATIO", "FACESET_META_KEYS", "HISTORY_FILE", "SIDES", "TABLE", "FaceLoss",
           "FaceLosses", "HardFace", "HardestFaces", "hardest_faces", "history_path", "read_face_losses", "side_of"]
