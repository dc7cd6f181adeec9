"""Find exact and near-duplicate faces in a faceset and choose which face of each group to keep.

Three relations put two faces in one duplicate group:

- **exact-file** — the two images have the same content hash (sha256 of the bytes), and the faces
  the same index in them: every face of a copied file is a copy.
- **exact-pixels** — different files (another name, format or encoder) that decode to identical
  pixels, e.g. a PNG and a BMP of one image. Candidates are found cheaply (same image size, same
  face index, same perceptual hash of the face) and then confirmed by decoding both files.
- **near** — embedding cosine ≥ ``min_cosine`` AND perceptual-hash distance ≤
  ``max_phash_distance``: resized, re-encoded, slightly cropped or brightness-shifted copies.

Groups are the connected components of those relations (union-find), so a chain of near copies is
one group. Each group keeps one face, the best by :func:`choose_kept`; every other member gets a
row saying what it duplicates and why the kept face won.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from curate.errors import FacesmithError, StoreError
from curate.faceset import FaceTable, load_faces
from curate.scan.ingest import FileEntry, read_image
from curate.faces.quality import PerceptualHash
from curate.store import FacesetStore

logger = logging.getLogger(__name__)

# (path_a, path_b) relative to the scanned root -> True/False, or None when it cannot tell
# (a file is missing or no longer decodes): such a pair is never called exact-pixels.
PixelEqual = Callable[[str, str], "bool | None"]

KINDS = ("exact-file", "exact-pixels", "near")


@dataclass(frozen=True)
class DuplicateSettings:
    """What counts as a duplicate. Defaults calibrated on the embedded backend (SFace, 128-d)
    against generated copies of real photos (see tests/curate/test_duplicates.py):

    - near copies (resized 0.5–0.75×, JPEG q50–95, cropped 3–5 %, brightness ±15 %) have SFace
      cosine 0.64–1.0 and perceptual-hash distance 0–12 bits (54 % at 0, 99 % at ≤ 10);
    - different photos of the same person have cosine up to 0.8 (0.99 in other sets) but phash
      distance ≥ 20; different people have cosine ≤ 0.35;
    - a mirrored copy keeps cosine 0.5–0.98 but its phash is 26–32 bits away.

    So the perceptual hash is what tells a copy from another photo of the same person (and from
    a mirror), and the cosine is the identity guard that keeps two different faces with similar
    crops apart: a high cosine threshold (0.9) would miss about one near copy in ten, because
    SFace moves more than one might expect under small crops. ArcFace embeddings (insightface)
    also put different people well below 0.5, so the same defaults suit them.

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
    # between different photos (20); the rare near copy further away (up to 12 seen) usually
    # joins its group through the other copies, and chance matches stay rare (see above).
    max_phash_distance: int = 10
    # Rows of the blocked similarity product; its memory is about block × 8·block × 5 bytes
    # (float32 similarities plus a mask) + D × 8·block × 4, under 4 MiB at 256 for 128-d
    # embeddings, whatever the number of faces (tools/bench_dedup.py: 256–512 run fastest).
    block: int = 256
    # A horizontally mirrored copy is a new training pose to SAEHD, so by default it is not a
    # duplicate: its phash differs by far more than max_phash_distance. When True, each face's
    # aligned crop is also hashed mirrored and either hash may match.
    mirrored_are_duplicates: bool = False
    # Confirm exact-pixels candidates by decoding both files (needs the scanned folder).
    check_pixels: bool = True
    # Sharpness and face size within this relative step count as equal when choosing the face
    # to keep, so measurement noise between near-identical copies does not override a real
    # difference in the next criterion.
    quality_step: float = 0.05

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_cosine <= 1.0:
            raise FacesmithError(f"min_cosine must be in -1..1, got {self.min_cosine}")
        if not 0 <= self.max_phash_distance <= 64:
            raise FacesmithError(f"max_phash_distance must be in 0..64 bits, got {self.max_phash_distance}")
        if self.block < 1:
            raise FacesmithError(f"block must be at least 1, got {self.block}")
        if not 0.0 <= self.quality_step < 1.0:
            raise FacesmithError(f"quality_step must be in 0..1, got {self.quality_step}")

    def to_dict(self) -> dict:
        return asdict(self)


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

    def to_row(self) -> tuple:
        return (self.face_id, self.group_id, self.kind, self.keep, self.similarity,
                self.phash_distance, self.reason)

    @classmethod
    def from_row(cls, row: tuple) -> DuplicateRow:
        face_id, group_id, kind, keep, similarity, phash_distance, reason = row
        return cls(face_id, group_id, kind, bool(keep), float(similarity), int(phash_distance), reason)


@dataclass(frozen=True)
class DuplicateSummary:
    faces: int  # faces in the set
    groups: int
    faces_to_drop: int  # members that are not kept
    by_kind: dict[str, int]  # faces to drop per kind
    pixel_checks: int  # image pairs decoded and compared
    pixel_checks_skipped: int  # candidate pairs left unconfirmed (file missing or undecodable)
    seconds: float

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


# -- choosing the face to keep -------------------------------------------------------------------


def relative_sharpness(table: FaceTable, index: int) -> float:
    """Sharpness (variance of the Laplacian) divided by the luma variance (contrast², 0..1 scale):
    the Laplacian's variance grows with the square of contrast, so without this a brightened or
    contrast-stretched copy would look sharper than its original. NaN when unknown."""
    contrast = float(table.contrast[index])
    if not math.isfinite(contrast) or contrast <= 0:
        return math.nan
    return float(table.sharpness[index]) / (contrast * contrast)


def _finite(value: float, missing: float) -> float:
    return value if math.isfinite(value) else missing


def _below_best(kept_value: float, best: float, step: float, what: str) -> str:
    """Where the kept face is not itself the best by a criterion, name the best the loser missed."""
    if kept_value >= best:
        return ""
    return f", which is more than {step:.0%} below the group's {what}, {best:.0f}"


def choose_kept(table: FaceTable, members: list[int], step: float = 0.05) -> tuple[int, list[str]]:
    """The face a duplicate group keeps, and for each member why it lost ('' for the kept one).

    Criteria in order, each with a tolerance so that measurement noise between near-identical
    copies does not decide while a real difference does: keep the members whose
    relative_sharpness is within `step` (relative) of the sharpest; of those, the ones whose face
    size (source pixels) is within `step` of the largest; of those, the ones whose brightness is
    closest to mid-grey (0.5, to 0.01); then the smallest face_id, so ties are deterministic.
    """
    sharpness = {m: _finite(relative_sharpness(table, m), -math.inf) for m in members}
    best_sharpness = max(sharpness.values())
    sharp = [m for m in members if sharpness[m] >= best_sharpness * (1 - step)] \
        if best_sharpness > 0 else list(members)
    size = {m: _finite(float(table.face_size[m]), -math.inf) for m in sharp}
    best_size = max(size.values())
    large = [m for m in sharp if size[m] >= best_size * (1 - step)] if best_size > 0 else sharp
    offset = {m: round(abs(_finite(float(table.brightness[m]), math.inf) - 0.5), 2) for m in large}
    best_offset = min(offset.values())
    exposed = [m for m in large if offset[m] == best_offset]
    kept = min(exposed, key=lambda m: table.face_ids[m])
    reasons = []
    for m in members:
        if m == kept:
            reasons.append("")
        elif m not in size:
            reasons.append(f"kept face is sharper for its contrast ({sharpness[kept]:.0f} vs "
                           f"{_finite(sharpness[m], math.nan):.0f}"
                           + _below_best(sharpness[kept], best_sharpness, step, "sharpest") + ")")
        elif m not in offset:
            reasons.append(f"kept face is larger ({size[kept]:.0f} vs {size[m]:.0f} px"
                           + _below_best(size[kept], best_size, step, "largest")
                           + f"; sharpness within {step:.0%})")
        elif m not in exposed:
            reasons.append(f"kept face is better exposed (brightness {table.brightness[kept]:.2f} vs "
                           f"{table.brightness[m]:.2f}; sharpness and size within {step:.0%})")
        else:
            reasons.append("equal quality; the kept face has the lower face id")
    return kept, reasons


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
    folder (see source_roots); a path without a folder is never checked.
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


# -- near duplicates and groups --------------------------------------------------------------


def _near_pairs(
    table: FaceTable,
    candidates: np.ndarray,
    settings: DuplicateSettings,
    mirrored_phash: np.ndarray | None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (into the table) among `candidates` that are near duplicates."""
    phash = table.phash[candidates]
    mirrored = mirrored_phash[candidates] if mirrored_phash is not None else None
    limit = settings.max_phash_distance

    def distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return _popcount(np.bitwise_xor(first[:, None], second[None, :]))

    def close_enough(rows: slice, columns: slice) -> np.ndarray:
        # whole tiles at a time: in a one-person set most pairs pass the cosine test
        close = distances(phash[rows], phash[columns]) <= limit
        if mirrored is not None:
            close |= distances(mirrored[rows], phash[columns]) <= limit
            close |= distances(phash[rows], mirrored[columns]) <= limit
        return close

    embeddings = table.embeddings[candidates]
    for first, second, _ in pair_blocks(embeddings, settings.min_cosine, settings.block, close_enough):
        yield candidates[first], candidates[second]


def find_duplicates(
    table: FaceTable,
    settings: DuplicateSettings = DuplicateSettings(),
    pixel_equal: PixelEqual | None = None,
    mirrored_phash: np.ndarray | None = None,
) -> list[DuplicateRow]:
    """Duplicate groups of a faceset, one row per member face, ordered by group then face_id.

    `pixel_equal` confirms exact-pixels candidates (see PixelComparer); without it such copies
    are still found as near duplicates. `mirrored_phash` (N,) uint64, the phash of each face's
    mirrored crop, is used when settings.mirrored_are_duplicates is set. Pure: reads nothing.
    """
    return _find_duplicates(table, settings, pixel_equal, mirrored_phash, _PixelStats())


def _find_duplicates(
    table: FaceTable,
    settings: DuplicateSettings,
    pixel_equal: PixelEqual | None,
    mirrored_phash: np.ndarray | None,
    stats: _PixelStats,
) -> list[DuplicateRow]:
    count = len(table)
    if count == 0:
        return []
    exact = _exact_links(table, pixel_equal, stats)
    exact_classes = exact.groups()
    # Members of an exact class share their embedding and phash (up to float rounding), so the
    # near search runs over one representative per class.
    representatives = np.array(sorted(exact_classes), dtype=np.int64)
    groups = _UnionFind(count)
    for root, members in exact_classes.items():
        for member in members:
            groups.union(root, member)
    use_mirror = settings.mirrored_are_duplicates and mirrored_phash is not None
    for first, second in _near_pairs(table, representatives, settings,
                                     mirrored_phash if use_mirror else None):
        for a, b in zip(first.tolist(), second.tolist()):
            groups.union(a, b)

    rows: list[DuplicateRow] = []
    for members in groups.groups().values():
        if len(members) > 1:
            rows.extend(_group_rows(table, members, exact, settings, use_mirror, mirrored_phash))
    rows.sort(key=lambda row: (row.group_id, not row.keep, row.face_id))
    return rows


def _group_rows(
    table: FaceTable,
    members: list[int],
    exact: _UnionFind,
    settings: DuplicateSettings,
    use_mirror: bool,
    mirrored_phash: np.ndarray | None,
) -> list[DuplicateRow]:
    """Rows of one group: the kept face first, then the others by face_id."""
    kept, lost_because = choose_kept(table, members, settings.quality_step)
    why = dict(zip(members, lost_because))
    kept_id, kept_path = table.face_ids[kept], table.paths[kept]
    others = sorted((m for m in members if m != kept), key=lambda m: table.face_ids[m])
    # Each exact class is stood for by one member (the kept face where it belongs to the class,
    # else the smallest face_id): another file's face in the class copies it (exact-pixels), and
    # a further copy of one file copies that file's first face (exact-file).
    class_first: dict[int, int] = {}
    file_first: dict[tuple[int, str, int], int] = {}
    for index in [kept, *others]:
        root = exact.find(index)
        class_first.setdefault(root, index)
        file_first.setdefault((root, table.content_hashes[index], int(table.face_index[index])), index)
    rows: list[DuplicateRow] = []
    kinds: list[str] = []
    for index in others:
        similarity = float(np.dot(table.embeddings[index], table.embeddings[kept]))
        distance = int(phash_distances(table.phash[index], table.phash[kept]))
        root = exact.find(index)
        original = file_first[(root, table.content_hashes[index], int(table.face_index[index]))]
        if original == index:
            original = class_first[root]
        if original != index:
            same_file = table.content_hashes[original] == table.content_hashes[index]
            kind = "exact-file" if same_file else "exact-pixels"
            what = "same file bytes" if same_file else "same decoded pixels, different file"
            reason = f"exact copy of {table.face_ids[original]} ({table.paths[original]}): {what}"
            if original != kept:
                reason += f"; the group keeps {kept_id} ({kept_path})"
            else:
                reason += "; equal quality, the kept face has the lower face id"
        else:
            kind = "near"
            shown = distance
            if use_mirror and mirrored_phash is not None:
                shown = min(distance, int(phash_distances(mirrored_phash[index], table.phash[kept])),
                            int(phash_distances(table.phash[index], mirrored_phash[kept])))
            mirrored = " (mirrored)" if shown < distance else ""
            reason = (f"near duplicate{mirrored} of {kept_id} ({kept_path}): cosine {similarity:.2f}, "
                      f"phash {shown} bits" + (" as a mirror" if mirrored else ""))
            if similarity < settings.min_cosine or shown > settings.max_phash_distance:
                reason += ", linked through other faces of the group"
            reason += f"; {why[index]}"
        kinds.append(kind)
        rows.append(DuplicateRow(table.face_ids[index], kept_id, kind, False, round(similarity, 6),
                                 distance, reason))
    if all(kind == "exact-file" for kind in kinds):
        group_kind = "exact-file"
    elif all(kind != "near" for kind in kinds):
        group_kind = "exact-pixels"
    else:
        group_kind = "near"
    kept_reason = (f"kept: best of {len(members)} duplicates (sharpness for contrast "
                   f"{relative_sharpness(table, kept):.0f}, face {float(table.face_size[kept]):.0f} px, "
                   f"brightness {float(table.brightness[kept]):.2f})")
    return [DuplicateRow(kept_id, kept_id, group_kind, True, 1.0, 0, kept_reason), *rows]


# -- the analysis over a faceset file -----------------------------------------------------------


def source_roots(connection) -> dict[str, Path]:
    """images.path -> the folder it is relative to: the source folder of the scan that read that
    image (images.run_id -> runs.source_root), not the latest scan's for every image."""
    rows = connection.execute(
        "SELECT i.path, r.source_root FROM images i JOIN runs r USING (run_id)").fetchall()
    return {path: Path(root) for path, root in rows if root}


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
        table = load_faces(store.connection)
        pixel_equal = None
        if settings.check_pixels:
            roots = source_roots(store.connection)
            found = {folder: folder.is_dir() for folder in set(roots.values())}
            for folder in sorted(folder for folder, present in found.items() if not present):
                logger.warning("scanned folder %s not found: exact-pixels checks of its images skipped", folder)
            pixel_equal = PixelComparer({path: folder for path, folder in roots.items() if found[folder]})
        mirrored = mirrored_phashes(table, database.parent) if settings.mirrored_are_duplicates else None
        rows = _find_duplicates(table, settings, pixel_equal, mirrored, stats)
        store.replace_analysis("duplicates", "duplicates", [row.to_row() for row in rows],
                               settings.to_dict())
    dropped = [row for row in rows if not row.keep]
    by_kind = {kind: sum(row.kind == kind for row in dropped) for kind in KINDS}
    return DuplicateSummary(
        faces=len(table),
        groups=sum(row.keep for row in rows),
        faces_to_drop=len(dropped),
        by_kind=by_kind,
        pixel_checks=stats.checks,
        pixel_checks_skipped=stats.skipped,
        seconds=round(time.perf_counter() - started, 3),
    )
