"""Cluster a faceset's identity embeddings, name the main identity and flag other people and outliers.

Labels mean what they say:

- ``main`` — the main identity: the cluster of a pinned face or image, else the largest cluster;
- ``other-person`` — a face that reliably looks like someone else, in a cluster of any size (a
  passer-by seen once is still another person);
- ``outlier`` — a face whose embedding cannot be trusted to say who it is (too small, blurred, cut
  by the frame edge, misaligned landmarks, an uncertain detection: a 'bad' verdict on one of
  RELIABILITY_CHECKS) and that is not close to the main identity either.

Only reliable faces are clustered, so a partial face or a smudge never chains two people together
or forms a "person" of its own; each unreliable face is then compared with the main identity's
centre. Clustering: scikit-learn's AgglomerativeClustering on L2-normalised embeddings, cosine
distance, average linkage, cut at a distance threshold (no number of clusters to guess). Why this
one:

- average linkage merges two clusters only when their faces are close *on average*, so one
  ambiguous face cannot chain two people together as single linkage and DBSCAN can, and it needs
  no density parameter that depends on how many photos a person has;
- a distance threshold maps directly onto the embedder's verification threshold;
- it is deterministic and needs no seed.

Its cost is the condensed distance matrix: N²/2 doubles and O(N²) time, about 1 s and 100 MB for
5 000 faces on 2 cores. Larger sets are clustered on an evenly spread sample of
``max_cluster_faces`` faces; every other face joins the nearest cluster centre if that centre is
within the threshold, and forms its own cluster (another person) otherwise.

Each row carries the cosine distance to the main identity's centre (the re-normalised mean of its
embeddings), whether the face's embedding is reliable, and a sentence saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from curate.analysis.backfill import backfill_geometry_checks
from curate.errors import FacesmithError, StoreError
from curate.faceset import FaceTable, FacesetReader
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

# Checks whose 'bad' verdict makes a face's embedding unreliable: the embedder saw too few pixels,
# a blur, half a face, a crop made from wrong landmarks, or maybe no face at all.
RELIABILITY_CHECKS = ("face_size", "sharpness", "frame_edge", "alignment", "detection")


@dataclass(frozen=True)
class IdentitySettings:
    """How faces are grouped into people."""

    # Average-linkage cosine distance at which clusters stop merging; None: the backend's value
    # from DISTANCE_THRESHOLDS.
    distance_threshold: float | None = None
    # Faces clustered directly; beyond this an evenly spread sample is clustered and the rest
    # join the nearest centre (memory and time of the clustering grow with its square).
    max_cluster_faces: int = 5000
    # Faces per block when assigning the rest to centres.
    block: int = 4096

    def __post_init__(self) -> None:
        if self.distance_threshold is not None and not 0.0 < self.distance_threshold < 2.0:
            raise FacesmithError(f"distance_threshold must be in 0..2, got {self.distance_threshold}")
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
    cluster: int  # 0 = the main identity; others by size; −1 = not clustered (an unreliable face)
    label: str  # main, other-person, outlier
    distance: float  # cosine distance to the main identity's centre, 0..2
    reason: str
    reliable: bool = True  # no 'bad' verdict on RELIABILITY_CHECKS: the face was clustered

    def to_row(self) -> tuple:
        return (self.face_id, self.cluster, self.label, self.distance, self.reason, self.reliable)

    @classmethod
    def from_row(cls, row: tuple) -> IdentityRow:
        face_id, cluster, label, distance, reason, *rest = row
        return cls(face_id, int(cluster), label, float(distance), reason, bool(rest[0]) if rest and rest[0] is not None else True)


@dataclass(frozen=True)
class IdentitySummary:
    faces: int
    clusters: int  # people: clusters of reliable faces, the main one included
    labels: dict[str, int]  # faces per label
    main_faces: int
    pinned: str | None  # what pinned the main identity (an image path or 'embedding'), if anything
    unreliable: int  # faces not clustered (a 'bad' verdict on a reliability check)
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
    """Cluster labels (N,) int ≥ 0 of (N, D) embeddings, and whether only a sample was clustered.
    Labels are in no particular order. Beyond `max_cluster_faces`, a face near no sampled
    cluster's centre gets a cluster of its own."""
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
        lonely = np.flatnonzero(labels < 0)
        labels[lonely] = labels.max() + 1 + np.arange(len(lonely))
    return labels, sampled


def find_identities(
    table: FaceTable,
    settings: IdentitySettings = IdentitySettings(),
    backend: str | None = "embedded",
    pin_face: int | None = None,
    pin_embedding: np.ndarray | None = None,
    pin_name: str | None = None,
    unreliable: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[IdentityRow], bool]:
    """One IdentityRow per face (ordered by face_id) and whether clustering used a sample.

    `unreliable` maps face_id -> the RELIABILITY_CHECKS with a 'bad' verdict; those faces are left
    out of the clustering and labelled main (within the threshold of the main identity's centre)
    or outlier. The main identity is the cluster of `pin_face` (an index into the table) when
    given, else the cluster whose centre is nearest `pin_embedding` (which must be within the
    threshold), else the largest cluster (ties: the tighter one, then the one with the smallest
    face_id). `pin_name` names the pin in the reasons. Pure: reads nothing.
    """
    threshold = settings.threshold_for(backend)
    count = len(table)
    if count == 0:
        return [], False
    unreliable = unreliable or {}
    unit = _normalised(table.embeddings)
    trusted = np.array([face_id not in unreliable for face_id in table.face_ids])
    if pin_face is not None:
        trusted[pin_face] = True  # a person said this face is the one to learn
    if trusted.sum() < 2:  # nothing to cluster on: use every face rather than none
        trusted[:] = True
    clustered = np.flatnonzero(trusted)
    labels_of_clustered, sampled = cluster_embeddings(unit[clustered], threshold, settings.max_cluster_faces,
                                                      settings.block)
    raw_labels = np.full(count, -1, np.int64)
    raw_labels[clustered] = labels_of_clustered

    members: dict[int, np.ndarray] = {int(c): np.flatnonzero(raw_labels == c)
                                      for c in np.unique(raw_labels) if c >= 0}
    centres = {c: _normalised(unit[m].mean(axis=0)) for c, m in members.items()}
    spread = {c: float(np.mean(1.0 - unit[m] @ centres[c])) for c, m in members.items()}

    if pin_face is not None:
        main = int(raw_labels[pin_face])
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

    # Number the clusters: 0 = main, then the other people by size, then face_id.
    others = sorted((c for c in members if c != main),
                    key=lambda c: (-len(members[c]), table.face_ids[members[c][0]]))
    number = {main: 0, **{c: n for n, c in enumerate(others, start=1)}}
    main_centre = centres[main]
    distances = np.clip(1.0 - unit @ main_centre, 0.0, 2.0)
    pin_text = f"pinned identity ({pin_name})" if pin_name else "pinned identity"
    main_text = (pin_text if pin_face is not None or pin_embedding is not None
                 else "main identity (the largest cluster)")

    rows: list[IdentityRow] = []
    for index in range(count):
        face_id = table.face_ids[index]
        label_raw = int(raw_labels[index])
        distance = round(float(distances[index]), 6)
        if label_raw < 0:  # not clustered: its embedding cannot be trusted to name a person
            checks = ", ".join(unreliable.get(face_id, ()))
            if distance <= threshold:
                rows.append(IdentityRow(face_id, 0, "main", distance,
                                        f"{main_text}: distance {distance:.2f} to its centre (within "
                                        f"{threshold:.2f}), though its embedding is unreliable ({checks} bad)",
                                        False))
            else:
                rows.append(IdentityRow(face_id, -1, "outlier", distance,
                                        f"outlier: looks like no one reliably ({checks} bad); distance "
                                        f"{distance:.2f} from the main identity's centre", False))
            continue
        size = len(members[label_raw])
        if label_raw == main:
            rows.append(IdentityRow(face_id, 0, "main", distance,
                                    f"{main_text}: cluster 0 of {size} faces; distance {distance:.2f} "
                                    "to its centre"))
        else:
            cluster = number[label_raw]
            alone = "seen once" if size == 1 else f"cluster {cluster} of {size} faces"
            rows.append(IdentityRow(
                face_id, cluster, "other-person", distance,
                f"another person ({alone}): distance {distance:.2f} from the main identity's centre "
                f"(people split at {threshold:.2f})"))
    return rows, sampled


def _scanned_pin(
    table: FaceTable, pin_image: str | Path, roots: Mapping[str, Path], scanned: set[str]
) -> tuple[int, str] | None:
    """Index of the face in `pin_image` (the largest one when the image has several) when it is an
    image of the faceset, else None (a photo from anywhere else: see embed_pin_image).

    The path is relative to the scanned folder or absolute; a relative path that is no scanned
    image but names an existing file from the working directory is taken as that file (so both
    `--identity others/biden.jpg` and `--identity photos/others/biden.jpg` work). `roots` maps each
    scanned image's path to the folder its scan read (FacesetReader.source_roots).
    """
    path = Path(pin_image)
    scanned_paths = set(table.paths) | scanned
    if not path.is_absolute() and path.as_posix() not in scanned_paths and path.is_file():
        path = path.resolve()
    if path.is_absolute():
        resolved = path.resolve()
        own = []
        for folder in sorted(set(roots.values())):
            try:
                relative = resolved.relative_to(folder.resolve()).as_posix()
            except ValueError:
                continue
            if roots.get(relative) == folder:  # the image that its own scan read from this folder
                own.append(relative)
        if not own:
            return None
        path = Path(own[0])
    rel_path = path.as_posix()
    candidates = [i for i, p in enumerate(table.paths) if p == rel_path]
    if not candidates:
        if rel_path in scanned:
            raise FacesmithError(f"{rel_path} was scanned but no face was found in it")
        return None
    chosen = max(candidates, key=lambda i: (float(np.nan_to_num(table.face_size[i], nan=-1.0)), -i))
    if len(candidates) > 1:
        logger.info("%s has %d faces; pinning the largest (%s)", rel_path, len(candidates),
                    table.face_ids[chosen])
    return chosen, rel_path


def embed_pin_image(database: Path, image: Path) -> np.ndarray:
    """The (D,) embedding of the largest face in `image`, a photo outside the faceset, made with
    the backend and models that scanned the faceset (embeddings of other backends do not compare).
    The photo is only looked at: it never becomes a row of the faceset."""
    from curate.faces.align import arcface_crop
    from curate.scan.ingest import FileEntry, read_image
    from curate.scan.pipeline import analyzer_for_faceset

    image = Path(image)
    try:
        stat = image.stat()
    except OSError as error:
        raise FacesmithError(f"cannot read the identity image {image}: {error.strerror or error}") from error
    result = read_image(FileEntry(image.name, image, stat.st_size, stat.st_mtime_ns, None))
    if result.decoded is None:
        detail = result.rejection.detail if result.rejection else "it does not decode"
        raise FacesmithError(f"cannot use {image} as the identity: {detail}")
    pixels = result.decoded.image_bgr
    analyzer = analyzer_for_faceset(database)
    faces = analyzer.locate(pixels)
    if not faces:
        raise FacesmithError(f"no face found in {image}: give a photo where the main person's face is visible")
    largest = max(faces, key=lambda face: float((face.bbox[2] - face.bbox[0]) * (face.bbox[3] - face.bbox[1])))
    return np.asarray(analyzer.embed([arcface_crop(pixels, largest.landmarks5)])[0], np.float64)


def _listed(folders: list[Path]) -> str:
    return ", ".join(str(folder) for folder in folders) or "(none recorded)"


def analyze_identities(
    database: Path,
    settings: IdentitySettings = IdentitySettings(),
    pin_image: str | Path | None = None,
    pin_embedding: np.ndarray | None = None,
) -> IdentitySummary:
    """Cluster the faceset at `database` into identities and replace its `identities` table.

    `pin_image` makes the cluster of its face the main identity (its largest face when it has
    several): an image of the faceset (relative to the scanned folder, or absolute) pins that face;
    a photo anywhere else is embedded with the faceset's own backend and pins the nearest cluster,
    without becoming part of the faceset. `pin_embedding` pins by nearest cluster centre too. The
    threshold defaults to the faceset's backend's value.
    """
    started = time.perf_counter()
    database = Path(database)
    if not database.is_file():
        raise StoreError(f"no faceset at {database}: run 'facesmith curate scan' first")
    if pin_image is not None and pin_embedding is not None:
        raise FacesmithError("pin the main identity with an image or an embedding, not both")
    pin_face_id, pinned = None, None
    if pin_image is not None:
        with FacesetReader(database) as reader:
            table = reader.faces()
            scanned = {path for (path,) in reader.connection.execute("SELECT path FROM images").fetchall()}
            found = _scanned_pin(table, pin_image, reader.source_roots(), scanned)
        if found is not None:
            pin_face_id, pinned = table.face_ids[found[0]], found[1]
        elif Path(pin_image).is_file():
            pin_embedding, pinned = embed_pin_image(database, Path(pin_image)), str(Path(pin_image))
        else:
            raise FacesmithError(f"no image at {pin_image}: give a photo of the main person (inside the "
                                 "scanned folder or anywhere else)")
    elif pin_embedding is not None:
        pinned = "embedding"
    with FacesetStore(database) as store:
        backfill_geometry_checks(store)
        reader = FacesetReader.on(store.connection, database)
        table = reader.faces()
        backend = store.meta("backend")
        pin_face = table.index().get(pin_face_id) if pin_face_id is not None else None
        if pin_face_id is not None and pin_face is None:
            raise FacesmithError(f"{pinned} changed while it was being read: run the analysis again")
        unreliable = reader.bad_checks(RELIABILITY_CHECKS)
        rows, sampled = find_identities(table, settings, backend, pin_face, pin_embedding, pinned, unreliable)
        parameters = {**settings.to_dict(backend), "pin": pinned, "reliability_checks": list(RELIABILITY_CHECKS)}
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
        unreliable=sum(not row.reliable for row in rows),
    )
