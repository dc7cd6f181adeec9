"""Cluster a faceset's identity embeddings, name the main identity and flag other people and outliers.

Clustering: scikit-learn's AgglomerativeClustering on L2-normalised embeddings, cosine distance,
average linkage, cut at a distance threshold (no number of clusters to guess). Why this one:

- average linkage merges two clusters only when their faces are close *on average*, so one
  ambiguous face (a blurry profile) cannot chain two people together as single linkage and
  DBSCAN can, and it needs no density parameter that depends on how many photos a person has;
- a distance threshold maps directly onto the embedder's verification threshold;
- it is deterministic and needs no seed.

Its cost is the condensed distance matrix: N²/2 doubles and O(N²) time, about 1 s and 100 MB for
5 000 faces on 2 cores. Larger sets are clustered on an evenly spread sample of
``max_cluster_faces`` faces; every other face joins the nearest cluster centre if that centre is
within the threshold, and is an outlier otherwise.

Labels: ``main`` (the main identity: the largest cluster, or the cluster of a pinned face),
``other-person`` (a member of another cluster with at least ``min_size`` faces) and ``outlier``
(a face in no cluster of that size). Each row carries the cosine distance to the main identity's
centre (the re-normalised mean of its embeddings) and a sentence saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from curate.analysis.duplicates import source_roots
from curate.errors import FacesmithError, StoreError
from curate.faceset import FaceTable, load_faces
from curate.store import FacesetStore

logger = logging.getLogger(__name__)

# Cosine-distance cut for average linkage, per backend (meta.backend).
# embedded (SFace 128-d, measured on the samples): the same person's photos have cosine
# 0.68–0.91 (distance ≤ 0.32; DESIGN.md saw 0.62–0.99), different people −0.16–0.35 (distance
# ≥ 0.65); OpenCV's SFace verification threshold is cosine 0.363 (distance 0.637). 0.55 sits in
# the gap, a little on the strict side of OpenCV's. insightface (ArcFace, buffalo_l): same-person
# cosines are lower and more spread (typically 0.3–0.8) while different people stay near 0, so
# the cut is looser; this value follows ArcFace's usual verification range and has NOT been
# measured in this project (no buffalo_l weights here): check it on your own set.
DISTANCE_THRESHOLDS: dict[str, float] = {"embedded": 0.55, "insightface": 0.65}
_FALLBACK_THRESHOLD = 0.55

LABELS = ("main", "other-person", "outlier")


@dataclass(frozen=True)
class IdentitySettings:
    """How faces are grouped into people."""

    # Average-linkage cosine distance at which clusters stop merging; None: the backend's value
    # from DISTANCE_THRESHOLDS.
    distance_threshold: float | None = None
    # Faces a cluster needs to count as a person (other-person); smaller clusters are outliers
    # (a misdetection, a passer-by, one odd frame). The main identity is exempt.
    min_size: int = 3
    # Faces clustered directly; beyond this an evenly spread sample is clustered and the rest
    # join the nearest centre (memory and time of the clustering grow with its square).
    max_cluster_faces: int = 5000
    # Faces per block when assigning the rest to centres.
    block: int = 4096

    def __post_init__(self) -> None:
        if self.distance_threshold is not None and not 0.0 < self.distance_threshold < 2.0:
            raise FacesmithError(f"distance_threshold must be in 0..2, got {self.distance_threshold}")
        if self.min_size < 1:
            raise FacesmithError(f"min_size must be at least 1, got {self.min_size}")
        if self.max_cluster_faces < 2:
            raise FacesmithError(f"max_cluster_faces must be at least 2, got {self.max_cluster_faces}")
        if self.block < 1:
            raise FacesmithError(f"block must be at least 1, got {self.block}")

    def threshold_for(self, backend: str | None) -> float:
        """The distance threshold to use for embeddings from `backend`."""
        if self.distance_threshold is not None:
            return self.distance_threshold
        if backend not in DISTANCE_THRESHOLDS:
            logger.warning("no identity threshold calibrated for backend %r; using %.2f",
                           backend, _FALLBACK_THRESHOLD)
        return DISTANCE_THRESHOLDS.get(backend or "", _FALLBACK_THRESHOLD)

    def to_dict(self, backend: str | None = None) -> dict:
        values = asdict(self)
        values["distance_threshold_used"] = self.threshold_for(backend)
        return values


@dataclass(frozen=True)
class IdentityRow:
    """One face's identity verdict, as stored in the `identities` table."""

    face_id: str
    cluster: int  # 0 = the main identity; others by size; −1 = no cluster of min_size faces
    label: str  # main, other-person, outlier
    distance: float  # cosine distance to the main identity's centre, 0..2
    reason: str

    def to_row(self) -> tuple:
        # reliable (schema 6) is left NULL until the identities analysis fills it (issue 13, main)
        return (self.face_id, self.cluster, self.label, self.distance, self.reason, None)

    @classmethod
    def from_row(cls, row: tuple) -> IdentityRow:
        face_id, cluster, label, distance, reason = row[:5]
        return cls(face_id, int(cluster), label, float(distance), reason)


@dataclass(frozen=True)
class IdentitySummary:
    faces: int
    clusters: int  # clusters of at least min_size faces, the main one included
    labels: dict[str, int]  # faces per label
    main_faces: int
    pinned: str | None  # what pinned the main identity (an image path or 'embedding'), if anything
    distance_threshold: float
    sampled: bool  # True when only a sample was clustered
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def cluster_embeddings(
    embeddings: np.ndarray, threshold: float, max_cluster_faces: int = 5000, block: int = 4096
) -> tuple[np.ndarray, bool]:
    """Cluster labels (N,) int (≥ 0, or −1 for a face near no cluster) of (N, D) embeddings, and
    whether only a sample was clustered. Labels are in no particular order."""
    from sklearn.cluster import AgglomerativeClustering

    unit = _normalised(embeddings).astype(np.float32)
    count = len(unit)
    if count == 0:
        return np.zeros(0, np.int64), False
    if count == 1:
        return np.zeros(1, np.int64), False
    sampled = count > max_cluster_faces
    sample = (np.unique(np.linspace(0, count - 1, max_cluster_faces).round().astype(np.int64))
              if sampled else np.arange(count))
    model = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold)
    labels = np.full(count, -1, np.int64)
    labels[sample] = model.fit_predict(unit[sample])
    if sampled:
        cluster_ids = np.unique(labels[sample])
        centres = _normalised(np.stack([unit[sample][labels[sample] == c].mean(axis=0)
                                        for c in cluster_ids])).astype(np.float32)
        rest = np.setdiff1d(np.arange(count), sample)
        for start in range(0, len(rest), block):
            chunk = rest[start:start + block]
            similarity = unit[chunk] @ centres.T
            nearest = similarity.argmax(axis=1)
            close = 1.0 - similarity[np.arange(len(chunk)), nearest] <= threshold
            labels[chunk] = np.where(close, cluster_ids[nearest], -1)
    return labels, sampled


def find_identities(
    table: FaceTable,
    settings: IdentitySettings = IdentitySettings(),
    backend: str | None = "embedded",
    pin_face: int | None = None,
    pin_embedding: np.ndarray | None = None,
    pin_name: str | None = None,
) -> tuple[list[IdentityRow], bool]:
    """One IdentityRow per face (ordered by face_id) and whether clustering used a sample.

    The main identity is the cluster of `pin_face` (an index into the table) when given, else
    the cluster whose centre is nearest `pin_embedding` (which must be within the threshold),
    else the largest cluster (ties: the tighter one, then the one with the smallest face_id).
    `pin_name` names the pin in the reasons. Pure: reads nothing.
    """
    threshold = settings.threshold_for(backend)
    count = len(table)
    if count == 0:
        return [], False
    unit = _normalised(table.embeddings)
    raw_labels, sampled = cluster_embeddings(unit, threshold, settings.max_cluster_faces, settings.block)

    members: dict[int, np.ndarray] = {int(c): np.flatnonzero(raw_labels == c)
                                      for c in np.unique(raw_labels) if c >= 0}
    centres = {c: _normalised(unit[m].mean(axis=0)) for c, m in members.items()}
    spread = {c: float(np.mean(1.0 - unit[m] @ centres[c])) for c, m in members.items()}

    if pin_face is not None:
        main = int(raw_labels[pin_face])
        if main < 0:  # a face near no sampled cluster forms its own identity
            main = max(members, default=-1) + 1
            members[main] = np.array([pin_face])
            centres[main] = unit[pin_face]
            spread[main] = 0.0
            raw_labels = raw_labels.copy()
            raw_labels[pin_face] = main
    elif pin_embedding is not None:
        pinned = _normalised(np.asarray(pin_embedding, np.float64).ravel())
        if pinned.shape != unit.shape[1:]:
            raise FacesmithError(f"the pinned embedding has {pinned.size} values; this faceset's "
                                 f"have {unit.shape[1]}")
        distances = {c: 1.0 - float(centre @ pinned) for c, centre in centres.items()}
        main = min(distances, key=lambda c: (distances[c], c))
        if distances[main] > threshold:
            raise FacesmithError(
                f"no identity in the faceset matches the pinned face: the nearest cluster centre is "
                f"at cosine distance {distances[main]:.2f}, above the threshold {threshold:.2f}")
    else:
        main = min(members, key=lambda c: (-len(members[c]), spread[c], table.face_ids[members[c][0]]))

    # Number the clusters: 0 = main, then other clusters of min_size faces by size, then face_id.
    others = sorted((c for c in members if c != main and len(members[c]) >= settings.min_size),
                    key=lambda c: (-len(members[c]), table.face_ids[members[c][0]]))
    number = {main: 0, **{c: n for n, c in enumerate(others, start=1)}}
    main_centre = centres[main]
    distances = np.clip(1.0 - unit @ main_centre, 0.0, 2.0)
    pin_text = f"pinned identity ({pin_name})" if pin_name else "pinned identity"
    main_text = (pin_text if pin_face is not None or pin_embedding is not None
                 else "main identity (the largest cluster)")

    rows: list[IdentityRow] = []
    for index in range(count):
        label_raw = int(raw_labels[index])
        distance = round(float(distances[index]), 6)
        size = len(members[label_raw]) if label_raw >= 0 else 0
        if label_raw == main:
            rows.append(IdentityRow(table.face_ids[index], 0, "main", distance,
                                    f"{main_text}: cluster 0 of {size} faces; distance {distance:.2f} "
                                    "to its centre"))
        elif label_raw in number:
            cluster = number[label_raw]
            rows.append(IdentityRow(
                table.face_ids[index], cluster, "other-person", distance,
                f"another person: cluster {cluster} of {size} faces, distance {distance:.2f} from the "
                f"main identity's centre (clusters split at {threshold:.2f})"))
        else:
            where = (f"its cluster has {size} face{'s' if size != 1 else ''}, fewer than "
                     f"{settings.min_size}" if size else "it is near no cluster centre")
            rows.append(IdentityRow(
                table.face_ids[index], -1, "outlier", distance,
                f"outlier: {where}; distance {distance:.2f} from the main identity's centre"))
    return rows, sampled


def _pinned_face(
    table: FaceTable, pin_image: str | Path, roots: Mapping[str, Path], scanned: set[str]
) -> tuple[int, str]:
    """Index of the face in `pin_image` (the largest one when the image has several).

    The path is relative to the scanned folder, or absolute inside it; a relative path that is
    no scanned image but names an existing file from the working directory is taken as that
    file (so both `--identity others/biden.jpg` and `--identity photos/others/biden.jpg` work).
    `roots` maps each scanned image's path to the folder its scan read (see source_roots).
    """
    path = Path(pin_image)
    scanned_paths = set(table.paths) | scanned
    folders = sorted(set(roots.values()))
    if not path.is_absolute() and path.as_posix() not in scanned_paths and path.is_file():
        path = path.resolve()
    if path.is_absolute():
        resolved = path.resolve()
        inside: dict[Path, str] = {}  # folder -> the path relative to it
        for folder in folders:
            try:
                inside[folder] = resolved.relative_to(folder.resolve()).as_posix()
            except ValueError:
                continue
        if not inside:
            raise FacesmithError(f"{pin_image} is not under the scanned folder {_listed(folders)}")
        # The image that its own scan read from this folder; a file of the same relative path
        # under another scan's folder is a different file.
        own = [relative for folder, relative in inside.items() if roots.get(relative) == folder]
        if not own:
            relative = next(iter(inside.values()))
            if relative in roots:
                raise FacesmithError(f"{pin_image} is not the scanned {relative}: that one was read "
                                     f"from {roots[relative]}")
            own = [relative]
        path = Path(own[0])
    rel_path = path.as_posix()
    candidates = [i for i, p in enumerate(table.paths) if p == rel_path]
    if not candidates:
        raise FacesmithError(
            f"{rel_path} was scanned but no face was found in it" if rel_path in scanned
            else f"{rel_path} is not in the faceset: give a path relative to the scanned folder "
                 f"{_listed(folders)} of an image that was scanned")
    chosen = max(candidates, key=lambda i: (float(np.nan_to_num(table.face_size[i], nan=-1.0)),
                                            -i))
    if len(candidates) > 1:
        logger.info("%s has %d faces; pinning the largest (%s)", rel_path, len(candidates),
                    table.face_ids[chosen])
    return chosen, rel_path


def _listed(folders: list[Path]) -> str:
    return ", ".join(str(folder) for folder in folders) or "(none recorded)"


def analyze_identities(
    database: Path,
    settings: IdentitySettings = IdentitySettings(),
    pin_image: str | Path | None = None,
    pin_embedding: np.ndarray | None = None,
) -> IdentitySummary:
    """Cluster the faceset at `database` into identities and replace its `identities` table.

    `pin_image` (relative to the scanned folder, or absolute inside it) makes the cluster of its
    face the main identity (its largest face when it has several); `pin_embedding` does the same
    by nearest cluster centre. The threshold defaults to the faceset's backend's value.
    """
    started = time.perf_counter()
    database = Path(database)
    if not database.is_file():
        raise StoreError(f"no faceset at {database}: run 'facesmith curate scan' first")
    if pin_image is not None and pin_embedding is not None:
        raise FacesmithError("pin the main identity with an image or an embedding, not both")
    with FacesetStore(database) as store:
        table = load_faces(store.connection)
        backend = store.meta("backend")
        pin_face, pinned = None, None
        if pin_image is not None:
            scanned = {path for (path,) in store.connection.execute("SELECT path FROM images").fetchall()}
            pin_face, pinned = _pinned_face(table, pin_image, source_roots(store.connection), scanned)
        elif pin_embedding is not None:
            pinned = "embedding"
        rows, sampled = find_identities(table, settings, backend, pin_face, pin_embedding, pinned)
        parameters = {**settings.to_dict(backend), "pin": pinned}
        store.replace_analysis("identities", "identities", [row.to_row() for row in rows], parameters)
    labels = {label: sum(row.label == label for row in rows) for label in LABELS}
    return IdentitySummary(
        faces=len(table),
        clusters=len({row.cluster for row in rows if row.cluster >= 0}),
        labels=labels,
        main_faces=labels["main"],
        pinned=pinned,
        distance_threshold=settings.threshold_for(backend),
        sampled=sampled,
        seconds=round(time.perf_counter() - started, 3),
    )
