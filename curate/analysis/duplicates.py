"""Find exact and near-duplicate faces in a faceset and choose which face of each group to keep.

A near duplicate is **the same picture** — the same person in the same pose, expression and light,
resized, re-encoded, slightly cropped or re-exposed — never merely the same person in the same
shot. Three relations make a face a duplicate of another:

- **exact-file** — the two images have the same content hash (sha256 of the bytes), and the faces
  the same index in them: every face of a copied file is a copy.
- **exact-pixels** — different files (another name, format or encoder) that decode to identical
  pixels, e.g. a PNG and a BMP of one image. Candidates are found cheaply (same image size, same
  face index, same perceptual hash of the face) and then confirmed by decoding both files.
- **near** — every one of: embedding cosine ≥ ``min_cosine``, perceptual-hash distance ≤
  ``max_phash_distance``, yaw and pitch within ``max_pose_delta`` degrees, eye, mouth and brow
  shape within ``max_expression_delta`` (curate.faces.expression), and brightness and lighting
  direction within ``max_light_delta``.

Exact copies are an equivalence (a copy of a copy is a copy), so they are grouped transitively.
Near duplicates are not: frames of a slow head turn are each "near" the next, and connected
components chained whole shots into one group (an interview lost 92 % of its faces that way).
Near groups are therefore **stars** formed by greedy leader clustering in keeper order: faces are
ranked best first (a face a person chose as keeper; no 'bad' quality-gate verdict; fewer
warnings; sharper for its contrast; larger; better exposed; smaller face_id), and each face in
turn is dropped as a near duplicate of the *first-ranked kept face it matches*, or is kept. So
every dropped face passes every threshold against the face kept in its place (its row says by
how much), and a face with a 'bad' exposure, clipping, sharpness, size, frame-edge or alignment
verdict never keeps a group that has a member without one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from curate.analysis.backfill import backfill_geometry_checks
from curate.errors import FacesmithError, StoreError
from curate.faces.expression import difference_or_unknown, expression_delta, expression_features, widening
from curate.faces.quality import PerceptualHash
from curate.faceset import QUALITY_GATES, QUALITY_WORDS, FaceTable, FacesetReader
from curate.scan.ingest import FileEntry, read_image
from curate.store import FacesetStore

logger = logging.getLogger(__name__)

# (path_a, path_b) relative to the scanned root -> True/False, or None when it cannot tell
# (a file is missing or no longer decodes): such a pair is never called exact-pixels.
PixelEqual = Callable[[str, str], "bool | None"]

KINDS = ("exact-file", "exact-pixels", "near")


@dataclass(frozen=True)
class DuplicateSettings:
    """What counts as a duplicate. Defaults calibrated on the embedded backend (SFace, 128-d)
    against generated copies of real photos and generated footage (see
    tests/curate/test_duplicates.py and tests/curate/test_footage.py):

    - near copies (resized 0.5–0.75×, JPEG q50–95, cropped 3–5 %, brightness ±15 %) have SFace
      cosine 0.64–1.0 and perceptual-hash distance 0–12 bits (54 % at 0, 99 % at ≤ 10);
    - different photos of the same person have cosine up to 0.8 (0.99 in other sets) but phash
      distance ≥ 20; different people have cosine ≤ 0.35;
    - a mirrored copy keeps cosine 0.5–0.98 but its phash is 26–32 bits away.

    So the perceptual hash is what tells a copy from another photo of the same person (and from
    a mirror), and the cosine is the identity guard that keeps two different faces with similar
    crops apart. In footage, neighbouring frames of a head turn or of speech also pass both: the
    pose, expression and light gates are what keep them (a copy moves the pose estimate by
    ≤ 1.2°, the expression features by ≤ 0.5 of their tolerance and the light by ≤ 0.07).

    In a set of one person nearly every pair passes the cosine test and the phash decides alone,
    so its threshold also sets how many unrelated faces match by chance: two independent 64-bit
    median-split hashes are ≤ 10 bits apart with probability 2.3e-8 (≤ 14: 6.7e-6), about 0.3
    chance pairs in 5 000 faces and 110 in 100 000 (≤ 14: 83 and 33 000).
    """

    # Embedding cosine at or above which two faces may be near duplicates. Between the highest
    # different-person cosine seen (0.35) and the lowest near-copy cosine (0.64).
    min_cosine: float = 0.5
    # Perceptual-hash Hamming distance (of 64 bits; always even, the hash splits at the median)
    # at or below which two faces may be near duplicates. Well below the smallest distance
    # between different photos (20).
    max_phash_distance: int = 10
    # Largest |Δyaw| or |Δpitch| in degrees: a face turned further is a new pose, never a copy.
    # Re-encoded and resized copies of one photo move the estimate by up to 4° (pitch is the
    # noisier), profiles and faces under 150 px by up to 7° (those copies then stay apart).
    max_pose_delta: float = 5.0
    # Largest change of an expression feature in units of its tolerance
    # (curate.faces.expression.TOLERANCES): eyes, mouth or brows that moved are a new expression.
    max_expression_delta: float = 1.0
    # Largest change of the left/right or top/bottom lighting asymmetry (curate.faces.quality.Lighting):
    # re-exposed and re-encoded copies move it by ≤ 0.03; light from another side by 0.1 and more.
    max_light_delta: float = 0.08
    # Largest change of mean brightness (0..1): a +15 % and a −15 % re-exposure of one photo are
    # up to 0.2 apart and still the same picture (colour transfer in training evens exposure out);
    # a scene whose light went on or off is not.
    max_brightness_delta: float = 0.25
    # Rows of the blocked similarity product; its memory is about block × 8·block × 5 bytes
    # (float32 similarities plus a mask) + D × 8·block × 4, under 4 MiB at 256 for 128-d
    # embeddings, whatever the number of faces (tools/bench_dedup.py: 256–512 run fastest).
    block: int = 256
    # A horizontally mirrored copy is a new training pose to SAEHD, so by default it is not a
    # duplicate: its phash differs by far more than max_phash_distance. When True, each face's
    # aligned crop is also hashed mirrored and either hash may match (pose, expression and light
    # are then compared mirrored too).
    mirrored_are_duplicates: bool = False
    # Confirm exact-pixels candidates by decoding both files (needs the scanned folder).
    check_pixels: bool = True
    # Keepers are ranked by log(sharpness for contrast) + log(face size) − this × |brightness − 0.5|:
    # at 5, a copy 0.1 further from mid-grey must be 1.65× sharper or larger to keep the group.
    exposure_weight: float = 5.0
    # Measures whose 'bad' verdict makes a face lose its group to any member without one.
    quality_gates: tuple[str, ...] = QUALITY_GATES

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_cosine <= 1.0:
            raise FacesmithError(f"min_cosine must be in -1..1, got {self.min_cosine}")
        if not 0 <= self.max_phash_distance <= 64:
            raise FacesmithError(f"max_phash_distance must be in 0..64 bits, got {self.max_phash_distance}")
        for name in ("max_pose_delta", "max_expression_delta", "max_light_delta", "max_brightness_delta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise FacesmithError(f"{name} must be a number >= 0, got {value}")
        if self.block < 1:
            raise FacesmithError(f"block must be at least 1, got {self.block}")
        if not 0.0 <= self.exposure_weight <= 100.0:
            raise FacesmithError(f"exposure_weight must be in 0..100, got {self.exposure_weight}")
        object.__setattr__(self, "quality_gates", tuple(self.quality_gates))

    def to_dict(self) -> dict:
        values = asdict(self)
        values["quality_gates"] = list(self.quality_gates)
        return values


@dataclass(frozen=True)
class DuplicateRow:
    """One face of a duplicate group, as stored in the `duplicates` table."""

    face_id: str
    group_id: str  # the face_id kept for the group
    kind: str  # exact-file, exact-pixels, near (the kept row: the group's weakest relation)
    keep: bool
    similarity: float  # embedding cosine to the kept face
    phash_distance: int  # Hamming distance (bits) to the kept face's perceptual hash
    reason: str
    pose_delta: float | None = None  # largest |Δyaw|, |Δpitch| to the kept face, degrees
    expression_delta: float | None = None  # in expression tolerances (≤ max_expression_delta)
    light_delta: float | None = None  # largest |Δlighting_lr|, |Δlighting_tb| to the kept face

    def to_row(self) -> tuple:
        return (self.face_id, self.group_id, self.kind, self.keep, self.similarity,
                self.phash_distance, self.reason, self.pose_delta, self.expression_delta, self.light_delta)

    @classmethod
    def from_row(cls, row: tuple) -> DuplicateRow:
        face_id, group_id, kind, keep, similarity, phash_distance, reason, *deltas = row
        deltas = [None if value is None else float(value) for value in deltas] + [None] * (3 - len(deltas))
        return cls(face_id, group_id, kind, bool(keep), float(similarity), int(phash_distance), reason, *deltas[:3])


@dataclass(frozen=True)
class DuplicateSummary:
    faces: int  # faces in the set
    groups: int
    faces_to_drop: int  # members that are not kept
    by_kind: dict[str, int]  # faces to drop per kind
    pixel_checks: int  # image pairs decoded and compared
    pixel_checks_skipped: int  # candidate pairs left unconfirmed (file missing or undecodable)
    seconds: float
    largest_group: int = 0  # members of the largest group
    keepers_by_hand: int = 0  # groups whose keeper a person chose

    def to_dict(self) -> dict:
        return asdict(self)


# -- all-pairs similarity search -----------------------------------------------------------------

COLUMN_TILE_FACTOR = 8  # a tile is block rows × (8 · block) columns


def pair_blocks(
    embeddings: np.ndarray,
    threshold: float,
    block: int = 256,
    tile_filter: Callable[[slice, slice], np.ndarray] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair (i < j) of rows of `embeddings` (N, D) whose dot product is ≥ `threshold`,
    as arrays (i, j, cosine) one tile at a time. `tile_filter(rows, columns)` may veto pairs: it
    gets two slices of row indices and returns a bool (len(rows), len(columns)) array, True to
    keep; it is called only for tiles with a pair above the threshold.

    Rows should be L2-normalised so the dot product is the cosine. The upper triangle is walked
    in tiles of `block` rows × 8·`block` columns: each column tile is transposed once into a
    reused buffer, each tile is one BLAS call into another, so the memory beyond the input is
    about block × 8·block × 5 bytes + D × 8·block × 4 bytes (6.5 MiB at block 256, D 512),
    whatever N is — never N × N.
    """
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {matrix.shape}")
    count, dim = matrix.shape
    if count < 2:
        return
    block = max(1, min(block, count))
    columns = min(count, block * COLUMN_TILE_FACTOR)
    # Flat buffers, reshaped per tile: a contiguous `out` keeps every product on BLAS (numpy
    # falls back to a far slower loop for a strided view of a larger buffer).
    transposed = np.empty(dim * columns, np.float32)
    similarities = np.empty(block * columns, np.float32)
    mask = np.empty(block * columns, bool)
    for column_start in range(0, count, columns):
        column_end = min(count, column_start + columns)
        width = column_end - column_start
        tile_columns = transposed[: dim * width].reshape(dim, width)
        np.copyto(tile_columns, matrix[column_start:column_end].T)
        for row_start in range(0, column_end - 1, block):  # rows below every column: skipped
            row_end = min(count, row_start + block)
            height = row_end - row_start
            tile = similarities[: height * width].reshape(height, width)
            tile_mask = mask[: height * width].reshape(height, width)
            np.matmul(matrix[row_start:row_end], tile_columns, out=tile)
            if row_end <= column_start and tile.max() < threshold:
                continue  # the common case, settled in one read of the tile
            np.greater_equal(tile, threshold, out=tile_mask)
            if row_end > column_start:  # the tile reaches the diagonal: keep j > i only
                for local_row in range(max(0, column_start - row_start), height):
                    tile_mask[local_row, : min(width, row_start + local_row - column_start + 1)] = False
            if not tile_mask.any():
                continue
            if tile_filter is not None:
                tile_mask &= tile_filter(slice(row_start, row_end), slice(column_start, column_end))
            local_i, local_j = np.nonzero(tile_mask)
            if local_i.size:
                yield (local_i + row_start, local_j + column_start,
                       tile[local_i, local_j].astype(np.float64))


def all_pairs_above(
    embeddings: np.ndarray, threshold: float, block: int = 256
) -> Iterator[tuple[int, int, float]]:
    """(i, j, cosine) for every pair i < j of the (N, D) L2-normalised `embeddings` with cosine
    ≥ `threshold`, in tile order (not sorted); extra memory O(block·(block + D)), never N × N:
    see :func:`pair_blocks`."""
    for first, second, cosine in pair_blocks(embeddings, threshold, block):
        yield from zip(first.tolist(), second.tolist(), cosine.tolist())


_BYTE_POPCOUNT = np.array([value.bit_count() for value in range(256)], np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy ≥ 2 has a ufunc for it; older numpy counts bytes)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    bytes_ = np.ascontiguousarray(values).view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_POPCOUNT[bytes_].sum(axis=-1, dtype=np.uint8)


def phash_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between uint64 hash arrays, elementwise with broadcasting (an (n, 1)
    and a (1, m) array give the (n, m) matrix)."""
    return _popcount(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(np.int64)



# -- ranking keepers -----------------------------------------------------------------------------


def relative_sharpness(table: FaceTable, index: int) -> float:
    """Sharpness (variance of the Laplacian) divided by the luma variance (contrast², 0..1 scale):
    the Laplacian's variance grows with the square of contrast, so without this a brightened or
    contrast-stretched copy would look sharper than its original. NaN when unknown."""
    contrast = float(table.contrast[index])
    if not math.isfinite(contrast) or contrast <= 0:
        return math.nan
    return float(table.sharpness[index]) / (contrast * contrast)


def _log(value: float) -> float:
    return math.log(value) if math.isfinite(value) and value > 0 else -math.inf


@dataclass(frozen=True)
class KeeperRank:
    """How good a keeper a face is; `key()` sorts the best first."""

    face_id: str
    by_hand: bool  # a person made it a keeper
    bad: tuple[str, ...]  # quality gates with a 'bad' verdict
    warnings: int  # quality gates with a 'warn' verdict
    sharpness: float  # relative_sharpness, NaN when unknown
    size: float  # face size, source px
    brightness: float  # mean luma, 0..1
    exposure_weight: float

    @property
    def parts(self) -> dict[str, float]:
        """The quality score's parts: log sharpness for contrast, log size, exposure penalty."""
        offset = abs(self.brightness - 0.5) if math.isfinite(self.brightness) else 0.5
        return {"sharpness": _log(self.sharpness), "size": _log(self.size),
                "exposure": -self.exposure_weight * offset}

    @property
    def quality(self) -> float:
        """log(sharpness for contrast) + log(size) − weight·|brightness − 0.5|: a copy twice the
        size or twice as sharp gains 0.69; 0.1 further from mid-grey costs 0.5 at the default weight."""
        return sum(self.parts.values())

    def key(self) -> tuple:
        quality = self.quality
        return (not self.by_hand, bool(self.bad), self.warnings, -quality if math.isfinite(quality) else math.inf,
                self.face_id)


def keeper_ranks(
    table: FaceTable,
    bad: Mapping[str, Sequence[str]] | None = None,
    warnings: Mapping[str, int] | None = None,
    keepers: set[str] | frozenset[str] = frozenset(),
    exposure_weight: float = 5.0,
) -> list[KeeperRank]:
    """One KeeperRank per face of `table` (table order). `bad`: face_id -> gate measures with a
    'bad' verdict; `warnings`: face_id -> number of 'warn' verdicts; `keepers`: faces a person chose."""
    bad = bad or {}
    warnings = warnings or {}
    return [KeeperRank(face_id, face_id in keepers, tuple(bad.get(face_id, ())), int(warnings.get(face_id, 0)),
                       relative_sharpness(table, i), float(table.face_size[i]), float(table.brightness[i]),
                       exposure_weight)
            for i, face_id in enumerate(table.face_ids)]


def lost_because(kept: KeeperRank, lost: KeeperRank) -> str:
    """Why `kept` ranks above `lost`: the first part of the key in which they differ, and for the
    quality score the part that gained the kept face the most."""
    if kept.by_hand and not lost.by_hand:
        return "the kept face was chosen by hand"
    if lost.bad and not kept.bad:
        words = ", ".join(f"{measure} ({QUALITY_WORDS.get(measure, measure)})" for measure in lost.bad)
        return f"this face has a bad {words} verdict and the kept face has none"
    if lost.warnings > kept.warnings:
        return (f"the kept face has fewer quality warnings ({kept.warnings} vs {lost.warnings}) on "
                "exposure, clipping, sharpness, size, frame edge and alignment")
    gains = {name: kept.parts[name] - lost.parts[name] for name in kept.parts}
    best = max(gains, key=lambda name: (gains[name] if math.isfinite(gains[name]) else math.inf))
    if not gains[best] > 0:
        return "equal quality; the kept face has the lower face id"
    if best == "sharpness":
        return f"the kept face is sharper for its contrast ({kept.sharpness:.0f} vs {lost.sharpness:.0f})"
    if best == "size":
        return f"the kept face is larger ({kept.size:.0f} vs {lost.size:.0f} px)"
    return f"the kept face is better exposed (brightness {kept.brightness:.2f} vs {lost.brightness:.2f})"


# -- same picture: pose, expression and light ------------------------------------------------


@dataclass(frozen=True, eq=False)
class SamePicture:
    """Pose, expression and light of every face, to test pairs against the settings' gates."""

    yaw: np.ndarray  # (N,) degrees
    pitch: np.ndarray  # (N,) degrees
    expression: np.ndarray  # (N, 5) curate.faces.expression features
    widen: np.ndarray  # (N,) expression tolerance widening for the face's size
    light: np.ndarray  # (N, 2) lighting_lr, lighting_tb
    brightness: np.ndarray  # (N,)
    settings: DuplicateSettings

    @classmethod
    def of(cls, table: FaceTable, settings: DuplicateSettings) -> "SamePicture":
        expression = (expression_features(table.landmarks68) if len(table.landmarks68) == len(table)
                      else np.full((len(table), 5), np.nan))
        light = np.stack([table.lighting_lr, table.lighting_tb], axis=1)
        return cls(table.yaw, table.pitch, expression, widening(table.face_size), light, table.brightness, settings)

    def deltas(self, first: np.ndarray, second: np.ndarray, mirrored: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pose, expression, light, brightness) deltas of the index pairs (first[k], second[k]);
        `mirrored` compares `second` as its mirror image (yaw and left/right lighting negated,
        eyes swapped). The expression tolerances widen for the smaller face of each pair."""
        sign = -1.0 if mirrored else 1.0
        pose = np.maximum(difference_or_unknown(self.yaw[first], sign * self.yaw[second]),
                          difference_or_unknown(self.pitch[first], self.pitch[second]))
        other = self.expression[second]
        if mirrored:
            other = other[:, [1, 0, 2, 3, 4]]
        expression = expression_delta(self.expression[first], other,
                                      np.maximum(self.widen[first], self.widen[second]))
        light_other = self.light[second] * np.array([sign, 1.0])
        light = difference_or_unknown(self.light[first], light_other).max(axis=1)
        brightness = difference_or_unknown(self.brightness[first], self.brightness[second])
        return pose, expression, light, brightness

    def passes(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """(K,) bool: pair k is the same pose, expression and light (or their mirror, when
        mirrored copies count)."""
        ok = self._within(*self.deltas(first, second))
        if self.settings.mirrored_are_duplicates:
            ok |= self._within(*self.deltas(first, second, mirrored=True))
        return ok

    def _within(self, pose: np.ndarray, expression: np.ndarray, light: np.ndarray,
                brightness: np.ndarray) -> np.ndarray:
        s = self.settings
        return ((pose <= s.max_pose_delta) & (expression <= s.max_expression_delta)
                & (light <= s.max_light_delta) & (brightness <= s.max_brightness_delta))


# -- exact duplicates -------------------------------------------------------------------------


class _UnionFind:
    def __init__(self, count: int) -> None:
        self.parent = list(range(count))

    def find(self, item: int) -> int:
        parent = self.parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:  # path compression
            parent[item], item = root, parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # the smaller index becomes the root: the result does not depend on edge order
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def groups(self) -> dict[int, list[int]]:
        members: dict[int, list[int]] = {}
        for item in range(len(self.parent)):
            members.setdefault(self.find(item), []).append(item)
        return members


@dataclass
class _PixelStats:
    checks: int = 0
    skipped: int = 0


def _exact_links(
    table: FaceTable, pixel_equal: PixelEqual | None, stats: _PixelStats
) -> _UnionFind:
    """Union-find over faces that are exact copies (same file bytes, or confirmed same pixels)."""
    exact = _UnionFind(len(table))
    by_content: dict[tuple[str, int], list[int]] = {}
    for index, (digest, face_index) in enumerate(zip(table.content_hashes, table.face_index.tolist())):
        if digest:
            by_content.setdefault((digest, face_index), []).append(index)
    for members in by_content.values():
        for other in members[1:]:
            exact.union(members[0], other)
    if pixel_equal is None:
        return exact

    # Candidates: same image size, same face index, same face phash, different file content.
    candidates: dict[tuple, dict[str, int]] = {}
    for index in range(len(table)):
        if not table.content_hashes[index]:
            continue
        width, height = (int(v) for v in table.image_sizes[index])
        key = (width, height, int(table.face_index[index]), int(table.phash[index]))
        candidates.setdefault(key, {}).setdefault(table.content_hashes[index], index)
    pixel_pairs: dict[tuple[str, str], bool | None] = {}
    for by_hash in candidates.values():
        if len(by_hash) < 2:
            continue
        leaders: list[int] = []  # one face per set of pixel-identical files seen so far
        for index in by_hash.values():
            for leader in leaders:
                pair = (table.paths[leader], table.paths[index])
                if pair not in pixel_pairs:
                    pixel_pairs[pair] = pixel_equal(*pair)
                    if pixel_pairs[pair] is None:
                        stats.skipped += 1
                    else:
                        stats.checks += 1
                if pixel_pairs[pair]:
                    exact.union(leader, index)
                    break
            else:
                leaders.append(index)
    return exact


class PixelComparer:
    """`pixel_equal` over scanned files: each file is decoded once (curate.scan.ingest, EXIF
    orientation applied) and remembered as a digest of its pixels; a file that is missing or no
    longer decodes answers None, so its pair is simply not confirmed.

    `root` is the folder every path is relative to, or a mapping from each path to its own
    folder (see FacesetReader.source_roots); a path without a folder is never checked.
    """

    def __init__(self, root: Path | Mapping[str, Path] | None, max_pixels: int | None = None) -> None:
        self.root = Path(root) if root is not None and not isinstance(root, Mapping) else None
        self.folders = {path: Path(folder) for path, folder in root.items()} if isinstance(root, Mapping) else None
        self.max_pixels = max_pixels
        self._digests: dict[str, str | None] = {}

    def digest(self, rel_path: str) -> str | None:
        if rel_path not in self._digests:
            self._digests[rel_path] = self._decode_digest(rel_path)
        return self._digests[rel_path]

    def _decode_digest(self, rel_path: str) -> str | None:
        folder = self.folders.get(rel_path) if self.folders is not None else self.root
        if folder is None:
            return None
        path = folder / rel_path
        try:
            stat = os.stat(path)
        except OSError as error:
            logger.warning("pixel check skipped for %s: %s", rel_path, error.strerror or error)
            return None
        entry = FileEntry(rel_path, path, stat.st_size, stat.st_mtime_ns, None)
        result = read_image(entry) if self.max_pixels is None else read_image(entry, self.max_pixels)
        if result.decoded is None:
            detail = result.rejection.detail if result.rejection else "not decoded"
            logger.warning("pixel check skipped for %s: %s", rel_path, detail)
            return None
        pixels = result.decoded.image_bgr
        hasher = hashlib.sha256(repr(pixels.shape).encode())
        hasher.update(np.ascontiguousarray(pixels).data)
        return hasher.hexdigest()

    def __call__(self, path_a: str, path_b: str) -> bool | None:
        first, second = self.digest(path_a), self.digest(path_b)
        if first is None or second is None:
            return None
        return first == second


# -- near duplicates: stars around kept faces ----------------------------------------------------


def _phash_close(first: np.ndarray, second: np.ndarray, limit: int,
                 first_mirrored: np.ndarray | None, second_mirrored: np.ndarray | None) -> np.ndarray:
    """(len(first), len(second)) bool: perceptual hashes within `limit` bits (or, with mirrored
    hashes given, either one mirrored)."""
    close = phash_distances(first[:, None], second[None, :]) <= limit
    if first_mirrored is not None and second_mirrored is not None:
        close |= phash_distances(first_mirrored[:, None], second[None, :]) <= limit
        close |= phash_distances(first[:, None], second_mirrored[None, :]) <= limit
    return close


def leader_groups(
    table: FaceTable,
    ranked: np.ndarray,
    settings: DuplicateSettings,
    same: SamePicture,
    mirrored_phash: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy leader clustering of the faces `ranked` (table indices, best keeper first): the
    table index of the face each one is dropped against, or its own index when it is kept.

    A face is dropped against the first-ranked kept face it matches (cosine, phash, pose,
    expression and light all within the settings), so it always matches its keeper and no chain
    of matches joins two faces that do not. Faces go through in blocks of `settings.block`, each
    compared with the kept faces so far in tiles of block × 8·block, then with the block's own
    earlier faces: memory stays O(block² + N·D) (the kept faces' embeddings), never N × N.
    """
    ranked = np.asarray(ranked, np.int64)
    count = len(ranked)
    keeper = ranked.copy()
    if count < 2:
        return keeper
    embeddings = np.ascontiguousarray(table.embeddings[ranked], dtype=np.float32)
    phash = table.phash[ranked]
    mirrored = mirrored_phash[ranked] if mirrored_phash is not None and settings.mirrored_are_duplicates else None
    limit, floor = settings.max_phash_distance, settings.min_cosine
    leaders = np.empty(count, np.int64)  # positions in `ranked` of the kept faces, in rank order
    leader_embeddings = np.empty_like(embeddings)
    kept = 0
    block, columns = settings.block, settings.block * COLUMN_TILE_FACTOR

    def candidates(similarities: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index pairs (positions in `ranked`) among rows × cols that are the same picture."""
        mask = similarities >= floor
        if not mask.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        mask &= _phash_close(phash[rows], phash[cols], limit,
                             None if mirrored is None else mirrored[rows],
                             None if mirrored is None else mirrored[cols])
        local_rows, local_cols = np.nonzero(mask)
        if local_rows.size:
            ok = same.passes(ranked[rows[local_rows]], ranked[cols[local_cols]])
            local_rows, local_cols = local_rows[ok], local_cols[ok]
        return local_rows, local_cols

    for start in range(0, count, block):
        stop = min(count, start + block)
        rows = np.arange(start, stop)
        matched = np.full(stop - start, -1, np.int64)  # index into `leaders`
        for column in range(0, kept, columns):
            end = min(kept, column + columns)
            similarities = embeddings[start:stop] @ leader_embeddings[column:end].T
            if similarities.max() < floor:
                continue
            similarities[matched >= 0] = -np.inf  # already dropped against an earlier kept face
            local_rows, local_cols = candidates(similarities, rows, leaders[column:end])
            if local_rows.size:  # nonzero() lists each row's columns in order: the first is the best
                first_rows, first_at = np.unique(local_rows, return_index=True)
                matched[first_rows] = column + local_cols[first_at]
        pending = rows[matched < 0]
        if pending.size:
            similarities = embeddings[pending] @ embeddings[pending].T
            similarities[np.triu_indices(len(pending))] = -np.inf  # earlier faces of the block only
            local_rows, local_cols = candidates(similarities, pending, pending)
            earlier: dict[int, list[int]] = {}
            for row, col in zip(local_rows.tolist(), local_cols.tolist()):
                earlier.setdefault(row, []).append(col)
            leader_at: dict[int, int] = {}  # pending index -> index into `leaders`
            for index, position in enumerate(pending.tolist()):
                first = next((leader_at[col] for col in earlier.get(index, ()) if col in leader_at), None)
                if first is None:
                    leaders[kept] = position
                    leader_embeddings[kept] = embeddings[position]
                    leader_at[index] = kept
                    kept += 1
                else:
                    matched[position - start] = first
        for offset in np.flatnonzero(matched >= 0):
            keeper[start + offset] = ranked[leaders[matched[offset]]]
    return keeper


def find_duplicates(
    table: FaceTable,
    settings: DuplicateSettings = DuplicateSettings(),
    pixel_equal: PixelEqual | None = None,
    mirrored_phash: np.ndarray | None = None,
    bad: Mapping[str, Sequence[str]] | None = None,
    warnings: Mapping[str, int] | None = None,
    keepers: set[str] | frozenset[str] = frozenset(),
) -> list[DuplicateRow]:
    """Duplicate groups of a faceset, one row per member face, ordered by group then face_id.

    `pixel_equal` confirms exact-pixels candidates (see PixelComparer); without it such copies
    are still found as near duplicates. `mirrored_phash` (N,) uint64, the phash of each face's
    mirrored crop, is used when settings.mirrored_are_duplicates is set. `bad` (face_id -> quality
    gates with a 'bad' verdict), `warnings` (face_id -> 'warn' count) and `keepers` (faces a
    person chose) rank the keepers. Pure: reads nothing.
    """
    return _find_duplicates(table, settings, pixel_equal, mirrored_phash, _PixelStats(), bad, warnings, keepers)


def _find_duplicates(
    table: FaceTable,
    settings: DuplicateSettings,
    pixel_equal: PixelEqual | None,
    mirrored_phash: np.ndarray | None,
    stats: _PixelStats,
    bad: Mapping[str, Sequence[str]] | None = None,
    warnings: Mapping[str, int] | None = None,
    keepers: set[str] | frozenset[str] = frozenset(),
) -> list[DuplicateRow]:
    if len(table) == 0:
        return []
    ranks = keeper_ranks(table, bad, warnings, keepers, settings.exposure_weight)
    keys = [rank.key() for rank in ranks]
    exact = _exact_links(table, pixel_equal, stats)
    # One representative per exact class, the best-ranked copy: copies share embedding, phash
    # and measures (a person's keeper choice may single one out).
    classes = exact.groups()
    representative = {root: min(members, key=keys.__getitem__) for root, members in classes.items()}
    ranked = np.array(sorted(representative.values(), key=keys.__getitem__), dtype=np.int64)
    use_mirror = settings.mirrored_are_duplicates and mirrored_phash is not None
    same = SamePicture.of(table, settings)
    keeper_of = leader_groups(table, ranked, settings, same, mirrored_phash if use_mirror else None)

    groups: dict[int, list[int]] = {}
    for position, face in enumerate(ranked.tolist()):
        groups.setdefault(int(keeper_of[position]), []).extend(classes[exact.find(face)])
    rows: list[DuplicateRow] = []
    for kept, members in groups.items():
        if len(members) > 1:
            rows.extend(_group_rows(table, kept, members, exact, representative, ranks, same, settings,
                                    mirrored_phash if use_mirror else None))
    rows.sort(key=lambda row: (row.group_id, not row.keep, row.face_id))
    return rows


def _group_rows(
    table: FaceTable,
    kept: int,
    members: list[int],
    exact: _UnionFind,
    representative: Mapping[int, int],
    ranks: Sequence[KeeperRank],
    same: SamePicture,
    settings: DuplicateSettings,
    mirrored_phash: np.ndarray | None,
) -> list[DuplicateRow]:
    """Rows of one group: the kept face first, then the others by face_id."""
    kept_id, kept_path = table.face_ids[kept], table.paths[kept]
    others = sorted((m for m in members if m != kept), key=lambda m: table.face_ids[m])
    # Each exact class is stood for by one member (its representative): another file's face in
    # the class copies it (exact-pixels), and a further copy of one file copies that file's first
    # face (exact-file).
    file_first: dict[tuple[int, str, int], int] = {}
    for index in sorted(members, key=lambda m: (m != representative[exact.find(m)], table.face_ids[m])):
        file_first.setdefault((exact.find(index), table.content_hashes[index], int(table.face_index[index])), index)
    array = np.array(others, dtype=np.int64)
    kept_array = np.full(len(others), kept, np.int64)
    direct = same.deltas(array, kept_array)
    mirrored_deltas = same.deltas(array, kept_array, mirrored=True) if mirrored_phash is not None else None
    rows: list[DuplicateRow] = []
    kinds: list[str] = []
    for k, index in enumerate(others):
        similarity = float(np.dot(table.embeddings[index], table.embeddings[kept]))
        distance = int(phash_distances(table.phash[index], table.phash[kept]))
        deltas = tuple(float(d[k]) for d in direct)
        if mirrored_deltas is not None and not same._within(*(np.array([d]) for d in deltas))[0]:
            deltas = tuple(float(d[k]) for d in mirrored_deltas)
        root = exact.find(index)
        original = file_first[(root, table.content_hashes[index], int(table.face_index[index]))]
        if original == index:
            original = representative[root]
        if original != index:
            same_file = table.content_hashes[original] == table.content_hashes[index]
            kind = "exact-file" if same_file else "exact-pixels"
            what = "same file bytes" if same_file else "same decoded pixels, different file"
            reason = f"exact copy of {table.face_ids[original]} ({table.paths[original]}): {what}"
            if original != kept:
                reason += f"; the group keeps {kept_id} ({kept_path})"
                if exact.find(original) != exact.find(kept):
                    reason += f", of which {table.face_ids[original]} is a near duplicate"
            else:
                reason += "; " + lost_because(ranks[kept], ranks[index])
        else:
            kind = "near"
            shown = distance
            if mirrored_phash is not None:
                shown = min(distance, int(phash_distances(mirrored_phash[index], table.phash[kept])),
                            int(phash_distances(table.phash[index], mirrored_phash[kept])))
            mirror = " (mirrored)" if shown < distance else ""
            reason = (f"near duplicate{mirror} of {kept_id} ({kept_path}): cosine {similarity:.2f}, "
                      f"phash {shown} bits, pose {deltas[0]:.1f}°, expression {deltas[1]:.2f}, "
                      f"light {deltas[2]:.2f}, brightness {deltas[3]:.2f} apart; {lost_because(ranks[kept], ranks[index])}")
        kinds.append(kind)
        rows.append(DuplicateRow(table.face_ids[index], kept_id, kind, False, round(similarity, 6), distance,
                                 reason, *(round(d, 4) if math.isfinite(d) else None for d in deltas[:3])))
    if all(kind == "exact-file" for kind in kinds):
        group_kind = "exact-file"
    elif all(kind != "near" for kind in kinds):
        group_kind = "exact-pixels"
    else:
        group_kind = "near"
    rank = ranks[kept]
    chosen = "chosen by hand; " if rank.by_hand else ""
    flagged = f"; its own bad verdicts: {', '.join(rank.bad)} (every member has one)" if rank.bad else ""
    kept_reason = (f"kept: {chosen}best of {len(members)} duplicates (sharpness for contrast "
                   f"{rank.sharpness:.0f}, face {rank.size:.0f} px, brightness {rank.brightness:.2f}, "
                   f"{rank.warnings} quality warnings){flagged}")
    return [DuplicateRow(kept_id, kept_id, group_kind, True, 1.0, 0, kept_reason, 0.0, 0.0, 0.0), *rows]


# -- the analysis over a faceset file -----------------------------------------------------------


def mirrored_phashes(table: FaceTable, database_dir: Path) -> np.ndarray:
    """(N,) uint64 perceptual hash of each face's aligned crop flipped left-right; a face whose
    crop cannot be read keeps its own phash (so it only matches unmirrored)."""
    hasher = PerceptualHash()
    hashes = table.phash.copy()
    for index, aligned in enumerate(table.aligned_paths):
        crop = cv2.imread(str(Path(database_dir) / aligned), cv2.IMREAD_COLOR) if aligned else None
        if crop is None:
            logger.warning("mirrored phash skipped for %s: cannot read its crop %s",
                           table.face_ids[index], aligned)
            continue
        hashes[index] = np.uint64(int(hasher.measure(np.ascontiguousarray(crop[:, ::-1])), 16))
    return hashes


def analyze_duplicates(database: Path, settings: DuplicateSettings = DuplicateSettings()) -> DuplicateSummary:
    """Find the duplicate groups of the faceset at `database` and replace its `duplicates` table
    (the settings are recorded in `analyses`). Pixel checks read each image from the source
    folder of the scan that read it; a missing folder or file only skips those checks."""
    started = time.perf_counter()
    database = Path(database)
    if not database.is_file():
        raise StoreError(f"no faceset at {database}: run 'facesmith curate scan' first")
    stats = _PixelStats()
    with FacesetStore(database) as store:
        backfill_geometry_checks(store)
        reader = FacesetReader.on(store.connection, database, settings.quality_gates)
        table = reader.faces()
        counts = reader.verdict_counts()
        bad = reader.bad_checks()
        warnings = {face_id: warn for face_id, (_, warn) in counts.items()}
        keepers = {face_id for face_id, decided in reader.decisions().items() if decided.keeper}
        pixel_equal = None
        if settings.check_pixels:
            roots = reader.source_roots()
            found = {folder: folder.is_dir() for folder in set(roots.values())}
            for folder in sorted(folder for folder, present in found.items() if not present):
                logger.warning("scanned folder %s not found: exact-pixels checks of its images skipped", folder)
            pixel_equal = PixelComparer({path: folder for path, folder in roots.items() if found[folder]})
        mirrored = mirrored_phashes(table, database.parent) if settings.mirrored_are_duplicates else None
        rows = _find_duplicates(table, settings, pixel_equal, mirrored, stats, bad, warnings, keepers)
        store.replace_analysis("duplicates", "duplicates", [row.to_row() for row in rows],
                               settings.to_dict())
    dropped = [row for row in rows if not row.keep]
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row.group_id] = sizes.get(row.group_id, 0) + 1
    by_kind = {kind: sum(row.kind == kind for row in dropped) for kind in KINDS}
    return DuplicateSummary(
        faces=len(table),
        groups=sum(row.keep for row in rows),
        faces_to_drop=len(dropped),
        by_kind=by_kind,
        pixel_checks=stats.checks,
        pixel_checks_skipped=stats.skipped,
        seconds=round(time.perf_counter() - started, 3),
        largest_group=max(sizes.values(), default=0),
        keepers_by_hand=sum(1 for row in rows if row.keep and row.face_id in keepers),
    )
