"""The one door to a curated faceset: its settings and role, its faces, and which of them train and why not the others.

Every later stage reads a faceset through :class:`FacesetReader`: the analyses (duplicates,
identities, selection) and the reports for the faces' columns, `train` for the faces it learns
from, merge checks for held-out frames, the review app for everything. So the rule "which faces
train" is written once, here:

- a **dst** faceset is what gets merged: every face trains, whatever analysis found (it reports
  duplicates and other people, it never thins the frames), unless a person excluded it by hand;
- a **src** face trains when it is of the main identity (once identities were analysed), is not a
  near or exact duplicate dropped in favour of another face, has no ``bad`` verdict on a quality
  gate (exposure, clipping, sharpness, size, frame edge, landmark fit), and — when a selection
  was made and the caller asks for it — was selected;
- a person's decisions (the ``decisions`` table, latest first) win over all of it: ``exclude``
  keeps a face out, ``include`` lets it in, ``label`` overrides the identity verdict and
  ``keeper`` makes a face keep its duplicate group (honoured by the duplicates analysis).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np

from curate.environment import lock_hint
from curate.errors import FacesmithError, StoreError

ROLES = ("src", "dst")
DEFAULT_ROLE = "src"

# Measures whose 'bad' verdict keeps a src face from training, and makes a face lose its
# duplicate group to any member without one: exposure, clipping, sharpness, size, a face cut by
# the frame edge and landmarks that do not fit a face (misalignment).
QUALITY_GATES = ("brightness", "shadows_clipped", "highlights_clipped", "sharpness", "face_size",
                 "frame_edge", "alignment")
# How each measure's 'bad' verdict reads in a reason.
QUALITY_WORDS = {
    "sharpness": "blurry",
    "motion_blur": "motion-blurred",
    "face_size": "too small",
    "brightness": "badly exposed",
    "shadows_clipped": "shadows clipped",
    "highlights_clipped": "highlights clipped",
    "contrast": "flat",
    "lighting": "harshly lit",
    "color_cast": "colour cast",
    "frame_edge": "cut by the frame edge",
    "alignment": "misaligned landmarks",
    "detection": "uncertain detection",
}

DECISION_ACTIONS = ("exclude", "include", "reset", "keeper", "label", "tag", "untag")
LABEL_VALUES = ("main", "other-person")

# Exclusion kinds, in the order reasons are listed.
EXCLUSION_KINDS = ("decision", "duplicate", "other-person", "outlier", "quality", "selection")


@dataclass(frozen=True, eq=False)
class FaceTable:
    """Every face of a faceset, one array entry per face, ordered by face_id (deterministic)."""

    face_ids: list[str]
    image_ids: list[str]
    paths: list[str]  # image path relative to the scanned root
    content_hashes: list[str]  # sha256 of the image file
    face_index: np.ndarray  # (N,) int32, index of the face within its image
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    phash: np.ndarray  # (N,) uint64 perceptual hash of the aligned crop
    yaw: np.ndarray  # (N,) float64 degrees (NaN where unknown)
    pitch: np.ndarray  # (N,) float64 degrees
    roll: np.ndarray  # (N,) float64 degrees
    sharpness: np.ndarray  # (N,) float64
    brightness: np.ndarray  # (N,) float64, 0..1
    contrast: np.ndarray  # (N,) float64
    lighting_lr: np.ndarray  # (N,) float64, −1..1, > 0 brighter on image right
    lighting_tb: np.ndarray  # (N,) float64, −1..1, > 0 brighter at the top
    face_size: np.ndarray  # (N,) float64 source pixels
    det_score: np.ndarray  # (N,) float64
    aligned_paths: list[str]  # relative to the database's folder
    image_sizes: np.ndarray  # (N, 2) int64 width, height of the source image
    landmarks68: np.ndarray = field(default_factory=lambda: np.zeros((0, 68, 2)))  # (N, 68, 2) float64 source px

    def __len__(self) -> int:
        return len(self.face_ids)

    def index(self) -> dict[str, int]:
        """face_id -> position in the table."""
        return {face_id: i for i, face_id in enumerate(self.face_ids)}


_QUERY = """
    SELECT f.face_id, f.image_id, i.path, i.content_hash, f.face_index, f.embedding, f.phash,
           f.yaw, f.pitch, f.roll, f.sharpness, f.brightness, f.contrast, f.lighting_lr,
           f.lighting_tb, f.face_size, f.det_score, f.aligned_path, i.width, i.height, f.landmarks68
    FROM faces f JOIN images i USING (image_id)
    ORDER BY f.face_id
"""


def load_faces(connection: duckdb.DuckDBPyConnection) -> FaceTable:
    """All faces of the faceset behind `connection` (read-only or not)."""
    # fetchnumpy hands list columns over as arrays: ~10x faster than fetchall's Python floats
    # (10 000 faces: 0.17 against 1.5 s), which the review app pays on every scan change.
    columns = connection.execute(_QUERY).fetchnumpy()
    count = len(columns["face_id"])

    def floats(name: str) -> np.ndarray:
        return np.ma.filled(np.ma.asarray(columns[name]).astype(np.float64), np.nan)

    def strings(name: str) -> list:
        return [None if value is np.ma.masked else value for value in columns[name].tolist()]

    def stacked(name: str, dtype: type, width: int) -> np.ndarray:
        return (np.stack([np.asarray(value, dtype) for value in columns[name]]) if count
                else np.zeros((0, width), dtype))

    # An empty faceset still has a (0, D) embedding matrix, so shape arithmetic downstream holds.
    dimension = int(connection.execute("SELECT coalesce(max(value::INTEGER), 0) FROM meta "
                                       "WHERE key = 'embedding_dim'").fetchone()[0])
    return FaceTable(
        face_ids=strings("face_id"),
        image_ids=strings("image_id"),
        paths=strings("path"),
        content_hashes=strings("content_hash"),
        face_index=np.asarray(columns["face_index"], dtype=np.int32),
        embeddings=stacked("embedding", np.float32, dimension),
        phash=np.array([int(h, 16) if h else 0 for h in strings("phash")], dtype=np.uint64),
        yaw=floats("yaw"),
        pitch=floats("pitch"),
        roll=floats("roll"),
        sharpness=floats("sharpness"),
        brightness=floats("brightness"),
        contrast=floats("contrast"),
        lighting_lr=floats("lighting_lr"),
        lighting_tb=floats("lighting_tb"),
        face_size=floats("face_size"),
        det_score=floats("det_score"),
        aligned_paths=strings("aligned_path"),
        image_sizes=np.stack([np.asarray(columns["width"], np.int64),
                              np.asarray(columns["height"], np.int64)], axis=1).reshape(count, 2),
        landmarks68=stacked("landmarks68", np.float64, 136).reshape(count, 68, 2),
    )


def open_faceset(path: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to an existing faceset file (a clear error when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no faceset at {path}: run 'facesmith curate scan' first")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as error:
        raise StoreError(f"cannot open {path}: {lock_hint(error)}") from error


def table_exists(connection: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the faceset behind `connection` has a table or view called `name`."""
    return bool(connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def check_role(role: str) -> str:
    """`role` if it is a faceset role, else a clear error."""
    if role not in ROLES:
        raise FacesmithError(f"a faceset's role is src (the face to learn) or dst (the frames to merge into), "
                             f"not {role!r}")
    return role


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FacesetInfo:
    """What a faceset is: its file, role and the settings every scan of it shared."""

    path: Path  # the database file, absolute
    role: str  # src or dst
    backend: str | None  # embedded, insightface
    embedding_dim: int
    face_type: str | None
    resolution: int | None
    source_root: Path | None  # the scanned folder (images.path is relative to it)
    faces: int
    analyses: dict[str, datetime]  # kind (duplicates, identities, selection, …) -> when it ran
    has_selection: bool  # a selection with at least one selected face exists

    def to_dict(self) -> dict:
        return {"path": str(self.path), "role": self.role, "backend": self.backend,
                "embedding_dim": self.embedding_dim, "face_type": self.face_type,
                "resolution": self.resolution,
                "source_root": str(self.source_root) if self.source_root else None,
                "faces": self.faces, "analyses": {k: v.isoformat() for k, v in self.analyses.items()},
                "has_selection": self.has_selection}


@dataclass(frozen=True)
class DecisionRow:
    """One row of the append-only `decisions` table."""

    decision_id: int
    face_id: str
    content_hash: str | None  # sha256 of the face's image: decisions move between facesets by it
    face_index: int | None
    action: str  # one of DECISION_ACTIONS
    value: str | None  # label: main | other-person | None (back to automatic); tag/untag: the tag
    who: str
    decided_at: datetime
    why: str | None

    def to_row(self) -> tuple:
        return (self.decision_id, self.face_id, self.content_hash, self.face_index, self.action,
                self.value, self.who, self.decided_at, self.why)

    def to_dict(self) -> dict:
        values = dict(zip(DECISION_COLUMNS, self.to_row()))
        values["decided_at"] = self.decided_at.isoformat()
        return values


DECISION_COLUMNS = ("decision_id", "face_id", "content_hash", "face_index", "action", "value", "who",
                    "decided_at", "why")


@dataclass(frozen=True)
class FaceDecisions:
    """The standing decisions on one face after folding its rows in order (the latest wins)."""

    inclusion: str | None = None  # 'exclude', 'include' or None (automatic)
    inclusion_why: str | None = None
    inclusion_who: str | None = None
    label: str | None = None  # 'main', 'other-person' or None (automatic)
    keeper: bool = False
    tags: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.inclusion or self.label or self.keeper or self.tags)


def fold_decisions(rows: Iterable[DecisionRow]) -> dict[str, FaceDecisions]:
    """face_id -> its standing decisions, applying `rows` in decision_id order."""
    state: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: r.decision_id):
        face = state.setdefault(row.face_id, {"tags": []})
        if row.action in ("exclude", "include"):
            face.update(inclusion=row.action, inclusion_why=row.why, inclusion_who=row.who)
        elif row.action == "reset":
            face.update(inclusion=None, inclusion_why=None, inclusion_who=None, label=None, keeper=False)
        elif row.action == "keeper":
            face["keeper"] = row.value != "off"
        elif row.action == "label":
            face["label"] = row.value if row.value in LABEL_VALUES else None
        elif row.action == "tag" and row.value and row.value not in face["tags"]:
            face["tags"].append(row.value)
        elif row.action == "untag" and row.value in face["tags"]:
            face["tags"].remove(row.value)
    return {face_id: FaceDecisions(**{**values, "tags": tuple(values["tags"])})
            for face_id, values in state.items()}


@dataclass(frozen=True)
class Exclusion:
    """One reason a face does not train."""

    kind: str  # one of EXCLUSION_KINDS
    text: str  # the sentence a person reads, e.g. 'duplicate of f0012 (near)', 'blurry (sharpness bad)'


@dataclass(frozen=True)
class FaceStatus:
    """Whether one face trains, and every reason it does not."""

    face_id: str
    trains: bool
    reasons: tuple[Exclusion, ...]  # empty when it trains
    decided: bool  # a person's decision set the outcome (include or exclude)

    @property
    def reason(self) -> str:
        """All reasons in one line ('' when the face trains)."""
        return "; ".join(reason.text for reason in self.reasons)


@dataclass(frozen=True)
class TrainingFace:
    """One face as training and merge checks need it."""

    face_id: str
    crop_path: Path  # absolute path of the stored aligned crop
    crop_resolution: int
    image_to_face: np.ndarray  # (2, 3) float64, source px -> stored-crop px
    landmarks68: np.ndarray  # (68, 2) float64, source px
    landmarks5: np.ndarray  # (5, 2) float64, source px
    bbox: np.ndarray  # (4,) float64, source px
    yaw: float  # degrees, NaN where unknown
    source_path: Path | None  # the image it came from, absolute (None: the source folder is unknown)


# -- the reader ---------------------------------------------------------------------------------


class FacesetReader:
    """Read access to one faceset file. Use as a context manager, or wrap a connection that an
    analysis already holds (`FacesetReader.on(connection, path)`); then closing is the owner's."""

    def __init__(self, path: Path, quality_gates: Sequence[str] = QUALITY_GATES) -> None:
        self.path = Path(path).resolve()
        self.connection = open_faceset(self.path, read_only=True)
        self._owned = True
        self.quality_gates = tuple(quality_gates)
        self._faces: FaceTable | None = None

    @classmethod
    def on(cls, connection: duckdb.DuckDBPyConnection, path: Path,
           quality_gates: Sequence[str] = QUALITY_GATES, faces: FaceTable | None = None) -> "FacesetReader":
        """`faces`: the faces table the caller already holds for this file (only a scan changes it),
        so a long-lived caller such as the review server does not load it again per request."""
        reader = cls.__new__(cls)
        reader.path = Path(path).resolve()
        reader.connection = connection
        reader._owned = False
        reader.quality_gates = tuple(quality_gates)
        reader._faces = faces
        return reader

    def __enter__(self) -> "FacesetReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self.connection.close()

    # -- what the faceset is --------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    @property
    def role(self) -> str:
        return self.meta("role") or DEFAULT_ROLE

    def info(self) -> FacesetInfo:
        analyses = {}
        if table_exists(self.connection, "analyses"):
            analyses = dict(self.connection.execute("SELECT kind, analysed_at FROM analyses").fetchall())
        resolution = self.meta("resolution")
        source_root = self.meta("source_root")
        if source_root is None:
            row = self.connection.execute("SELECT source_root FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
            source_root = row[0] if row else None
        return FacesetInfo(
            path=self.path, role=self.role, backend=self.meta("backend"),
            embedding_dim=int(self.meta("embedding_dim") or 0), face_type=self.meta("face_type"),
            resolution=int(resolution) if resolution else None,
            source_root=Path(source_root) if source_root else None,
            faces=int(self.connection.execute("SELECT count(*) FROM faces").fetchone()[0]),
            analyses=analyses, has_selection=self._has_selection(),
        )

    def _has_selection(self) -> bool:
        return table_exists(self.connection, "selection") and bool(self.connection.execute(
            "SELECT count(*) FROM selection WHERE selected").fetchone()[0])

    def source_roots(self) -> dict[str, Path]:
        """images.path -> the folder its scan read it from (runs.source_root of images.run_id)."""
        rows = self.connection.execute(
            "SELECT i.path, r.source_root FROM images i JOIN runs r USING (run_id)").fetchall()
        return {path: Path(root) for path, root in rows if root}

    # -- faces and their verdicts --------------------------------------------------------

    def faces(self) -> FaceTable:
        """Every face (cached for the reader's life)."""
        if self._faces is None:
            self._faces = load_faces(self.connection)
        return self._faces

    def bad_checks(self, measures: Sequence[str] | None = None,
                   face_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        """face_id -> the measures (of `measures`, default the quality gates) with a 'bad' verdict
        (of the faces `face_ids` only, when given)."""
        measures = list(self.quality_gates if measures is None else measures)
        result: dict[str, list[str]] = {}
        if not measures:
            return result
        only, parameters = _only_faces(face_ids)
        for face_id, measure in self.connection.execute(
                "SELECT face_id, measure FROM face_checks WHERE verdict = 'bad' AND list_contains(?, measure)"
                f"{only} ORDER BY face_id, list_position(?, measure)", [measures, *parameters, measures]).fetchall():
            result.setdefault(face_id, []).append(measure)
        return result

    def verdict_counts(self, measures: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
        """face_id -> (bad, warn) verdict counts over `measures` (default the quality gates)."""
        measures = list(self.quality_gates if measures is None else measures)
        rows = self.connection.execute(
            "SELECT face_id, count(*) FILTER (verdict = 'bad'), count(*) FILTER (verdict = 'warn') "
            "FROM face_checks WHERE list_contains(?, measure) GROUP BY face_id", [measures]).fetchall()
        return {face_id: (int(bad), int(warn)) for face_id, bad, warn in rows}

    def decision_log(self) -> list[DecisionRow]:
        """Every decision, oldest first (empty for a faceset from before decisions existed)."""
        if not table_exists(self.connection, "decisions"):
            return []
        rows = self.connection.execute(
            f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions ORDER BY decision_id").fetchall()
        return [DecisionRow(*row) for row in rows]

    def decisions(self) -> dict[str, FaceDecisions]:
        """face_id -> its standing decisions (faces nobody decided on are absent)."""
        return fold_decisions(self.decision_log())

    def identity_labels(self, face_ids: Sequence[str] | None = None) -> dict[str, tuple[str, float, str]]:
        """face_id -> (label, distance to the main identity, reason) from the identities analysis."""
        if not table_exists(self.connection, "identities"):
            return {}
        only, parameters = _only_faces(face_ids)
        return {face_id: (label, float(distance), reason) for face_id, label, distance, reason in
                self.connection.execute("SELECT face_id, label, distance, reason FROM identities WHERE true"
                                        f"{only}", parameters).fetchall()}

    def dropped_duplicates(self, face_ids: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
        """face_id -> (the face kept in its place, kind) for every duplicate not kept."""
        if not table_exists(self.connection, "duplicates"):
            return {}
        only, parameters = _only_faces(face_ids)
        return {face_id: (group_id, kind) for face_id, group_id, kind in self.connection.execute(
            f"SELECT face_id, group_id, kind FROM duplicates WHERE NOT keep{only}", parameters).fetchall()}

    def selected(self) -> dict[str, int]:
        """face_id -> pick order of the faces the latest selection picked."""
        if not table_exists(self.connection, "selection"):
            return {}
        return dict(self.connection.execute(
            "SELECT face_id, pick_order FROM selection WHERE selected").fetchall())

    # -- which faces train ------------------------------------------------------------------

    def statuses(self, use_selection: bool = True, as_role: str | None = None,
                 face_ids: Sequence[str] | None = None) -> list[FaceStatus]:
        """Every face (face_id order) with whether it trains and why not.

        use_selection: for a src faceset with a selection, faces the selection did not pick do
        not train; without it (what the selection itself asks), every eligible face trains.
        as_role: read the faceset as this role instead of its stored one (training reads its
        --dst faceset as a dst whatever it was scanned as).
        face_ids: only these faces (those of them the faceset has). A face's status depends on its
        own rows and decisions alone, so this is the whole answer's rows for them, read without
        loading every face (the review app asks after each decision).
        """
        if face_ids is None:
            ids = list(self.faces().face_ids)
        else:
            ids = [row[0] for row in self.connection.execute(
                "SELECT face_id FROM faces WHERE list_contains(?, face_id) ORDER BY face_id",
                [sorted(set(face_ids))]).fetchall()]
        decisions = self.decisions()
        if (as_role or self.role) == "dst":
            automatic: dict[str, list[Exclusion]] = {}
        else:
            automatic = self._automatic_exclusions(ids, decisions, use_selection,
                                                   only=None if face_ids is None else ids)
        statuses = []
        for face_id in ids:
            decided = decisions.get(face_id, FaceDecisions())
            reasons = list(automatic.get(face_id, ()))
            if decided.inclusion == "exclude":
                who = f" by {decided.inclusion_who}" if decided.inclusion_who else ""
                why = f": {decided.inclusion_why}" if decided.inclusion_why else ""
                reasons.insert(0, Exclusion("decision", f"excluded by hand{who}{why}"))
                statuses.append(FaceStatus(face_id, False, tuple(reasons), True))
            elif decided.inclusion == "include":
                statuses.append(FaceStatus(face_id, True, (), True))
            else:
                statuses.append(FaceStatus(face_id, not reasons, tuple(reasons), False))
        return statuses

    def _automatic_exclusions(self, face_ids: Sequence[str], decisions: Mapping[str, FaceDecisions],
                              use_selection: bool, only: Sequence[str] | None = None) -> dict[str, list[Exclusion]]:
        """`only`: the faces to read (each query restricted to them), None for every face."""
        reasons: dict[str, list[Exclusion]] = {}
        for face_id, (kept, kind) in sorted(self.dropped_duplicates(only).items()):
            if not decisions.get(face_id, FaceDecisions()).keeper:
                reasons.setdefault(face_id, []).append(Exclusion("duplicate", f"duplicate of {kept} ({kind})"))
        labels = self.identity_labels(only)
        for face_id in face_ids:
            hand = decisions.get(face_id, FaceDecisions()).label
            if hand == "other-person":
                reasons.setdefault(face_id, []).append(Exclusion("other-person", "other person (labelled by hand)"))
            elif hand is None and face_id in labels and labels[face_id][0] != "main":
                label, distance, _ = labels[face_id]
                words = "other person" if label == "other-person" else label
                reasons.setdefault(face_id, []).append(Exclusion(
                    label, f"{words} (distance {distance:.2f} from the main identity)"))
        for face_id, measures in self.bad_checks(face_ids=only).items():
            for measure in measures:
                reasons.setdefault(face_id, []).append(
                    Exclusion("quality", f"{QUALITY_WORDS.get(measure, measure)} ({measure} bad)"))
        if use_selection and self._has_selection():
            picked = self.selected()
            for face_id in face_ids:
                if face_id not in picked and face_id not in reasons:
                    reasons.setdefault(face_id, []).append(Exclusion("selection", "not selected"))
        order = {kind: i for i, kind in enumerate(EXCLUSION_KINDS)}
        return {face_id: sorted(found, key=lambda e: order[e.kind]) for face_id, found in reasons.items()}

    def trainable_ids(self, use_selection: bool = True, as_role: str | None = None) -> list[str]:
        """The faces that train, in face_id order."""
        return [status.face_id for status in self.statuses(use_selection, as_role) if status.trains]

    def crop_path(self, aligned_path: str) -> Path:
        """The absolute path of a stored crop (aligned_path is relative to the database's folder)."""
        return self.path.parent / aligned_path

    def training_faces(self, use_selection: bool = True, face_ids: Sequence[str] | None = None,
                       as_role: str | None = None) -> list[TrainingFace]:
        """The faces that train (or exactly `face_ids`, in their order), as training needs them."""
        wanted = list(face_ids) if face_ids is not None else self.trainable_ids(use_selection, as_role)
        if not wanted:
            return []
        rows = self.connection.execute(
            "SELECT f.face_id, f.aligned_path, f.resolution, f.image_to_face, f.landmarks68, f.landmarks5, "
            "f.bbox, f.yaw, i.path, r.source_root FROM faces f JOIN images i USING (image_id) "
            "LEFT JOIN runs r USING (run_id) WHERE list_contains(?, f.face_id)", [wanted]).fetchall()
        by_id = {row[0]: row for row in rows}
        missing = [face_id for face_id in wanted if face_id not in by_id]
        if missing:
            raise StoreError(f"{self.path} has no face {missing[0]}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        faces = []
        for face_id in wanted:
            _, aligned, resolution, image_to_face, landmarks68, landmarks5, bbox, yaw, path, root = by_id[face_id]
            faces.append(TrainingFace(
                face_id=face_id, crop_path=self.crop_path(aligned), crop_resolution=int(resolution),
                image_to_face=np.asarray(image_to_face, np.float64).reshape(2, 3),
                landmarks68=np.asarray(landmarks68, np.float64).reshape(68, 2),
                landmarks5=np.asarray(landmarks5, np.float64).reshape(5, 2),
                bbox=np.asarray(bbox, np.float64),
                yaw=float("nan") if yaw is None else float(yaw),
                source_path=Path(root) / path if root else None))
        return faces

    def embeddings(self, face_ids: Sequence[str]) -> np.ndarray:
        """(len(face_ids), D) float32 embeddings of these faces, in their order."""
        table = self.faces()
        index = table.index()
        missing = [face_id for face_id in face_ids if face_id not in index]
        if missing:
            raise StoreError(f"{self.path} has no face {missing[0]}")
        return table.embeddings[[index[face_id] for face_id in face_ids]]


def analysis_parameters(connection: duckdb.DuckDBPyConnection, kind: str) -> dict:
    """The parameters an analysis stored when it last ran ({} when it never ran)."""
    if not table_exists(connection, "analyses"):
        return {}
    row = connection.execute("SELECT parameters FROM analyses WHERE kind = ?", [kind]).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def _only_faces(face_ids: Sequence[str] | None) -> tuple[str, list]:
    """An `AND face_id IN (...)` clause (as list_contains) and its parameter, or nothing for all faces."""
    if face_ids is None:
        return "", []
    return " AND list_contains(?, face_id)", [list(face_ids)]
