"""Benchmark: the blocked all-pairs near-duplicate search against plain numpy, on synthetic embeddings.

For each embedding size it builds N random unit vectors (float32) and plants P near-duplicate
pairs (cosine 0.6–0.99) at random positions, then in one run measures
  1. `curate.analysis.duplicates.all_pairs_above` over all N·(N−1)/2 pairs at the near-duplicate
     threshold (DuplicateSettings().min_cosine): seconds, peak memory beyond the input
     (tracemalloc sees numpy's buffers) next to the block arithmetic, pairs found, and checks
     that every planted pair is among them and every reported pair really is above the threshold;
  2. two plain numpy baselines, timed on part of the work and extrapolated to all of it:
     - per query: one full similarity row `E @ E[i]` per face, then `nonzero(row >= t)` — the
       obvious O(N)-memory loop, timed on Q evenly spread queries, × N/Q (its answers for those
       queries are compared with the blocked search's, so it doubles as a correctness check);
     - full matrix: `E @ E.T` and `nonzero` on the first n faces, × (N/n)² — what fits in
       memory only for small sets (N² × 4 bytes: 40 GB at 100 000), shown for scale;
and prints the ratios baseline / blocked. Then, once per size, the realistic worst case for the
whole near-duplicate analysis: `find_duplicates` on N faces of ONE person (every pair has cosine
≈ 0.6, above the threshold, so the perceptual-hash test decides for all N²/2 pairs; hashes are
random median-split 64-bit words like real ones) with P planted near copies, checking that every
planted pair is grouped and counting the chance matches against their expected number.

    python tools/bench_dedup.py [--faces 100000] [--dims 128 512] [--pairs 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from math import comb
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.analysis.duplicates import COLUMN_TILE_FACTOR, DuplicateSettings, all_pairs_above, find_duplicates  # noqa: E402
from curate.faceset import FaceTable  # noqa: E402


def synthetic_embeddings(count: int, dim: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """(count, dim) float32 unit vectors and the planted near-duplicate pairs (i < j)."""
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((count, dim), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    chosen = rng.choice(count, size=2 * pairs, replace=False)
    planted = set()
    for a, b in chosen.reshape(pairs, 2):
        cosine = rng.uniform(0.6, 0.99)
        # a unit vector orthogonal to embeddings[a], mixed in so that the cosine is exact
        noise = rng.standard_normal(dim).astype(np.float32)
        noise -= noise @ embeddings[a] * embeddings[a]
        noise /= np.linalg.norm(noise)
        embeddings[b] = cosine * embeddings[a] + np.sqrt(1 - cosine**2) * noise
        planted.add((int(min(a, b)), int(max(a, b))))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings, planted


def blocked(embeddings: np.ndarray, threshold: float, block: int) -> tuple[float, int, list]:
    """Seconds, peak traced bytes beyond the input, and the pairs of all_pairs_above."""
    tracemalloc.start()
    started = time.perf_counter()
    found = list(all_pairs_above(embeddings, threshold, block))
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak, found


def per_query_baseline(embeddings: np.ndarray, threshold: float, queries: int) -> tuple[float, dict[int, set[int]]]:
    """Seconds for `queries` full similarity rows, and each query's partners j > i."""
    count = len(embeddings)
    chosen = np.unique(np.linspace(0, count - 1, queries).round().astype(np.int64))
    partners: dict[int, set[int]] = {}
    started = time.perf_counter()
    for query in chosen.tolist():
        row = embeddings @ embeddings[query]
        above = np.nonzero(row >= threshold)[0]
        partners[query] = set(above[above > query].tolist())
    return time.perf_counter() - started, partners


def full_matrix_baseline(embeddings: np.ndarray, threshold: float, subset: int) -> tuple[float, int]:
    """Seconds for the whole N × N product and threshold on the first `subset` faces."""
    part = embeddings[:subset]
    started = time.perf_counter()
    similarity = part @ part.T
    first, second = np.nonzero(similarity >= threshold)
    count = int((first < second).sum())
    return time.perf_counter() - started, count


def one_person_table(count: int, dim: int, pairs: int, seed: int = 1) -> FaceTable:
    """`count` faces of one person (pairwise cosine ≈ 0.6, random phashes) whose last `pairs`
    faces are near copies of the first `pairs` (cosine ≈ 0.95, phash 2 bits away)."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(dim)
    centre /= np.linalg.norm(centre)
    spread = np.sqrt((1 / 0.6 - 1) / dim)  # cosine to another face ≈ 1 / (1 + dim·spread²)
    embeddings = (centre + spread * rng.standard_normal((count, dim))).astype(np.float32)
    # 32 of 64 bits set, as the median split of the real hash gives
    bits = np.zeros((count, 64), np.uint8)
    np.put_along_axis(bits, rng.random((count, 64)).argsort(axis=1)[:, :32], 1, axis=1)
    phash = np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)
    copies = np.arange(count - pairs, count)
    embeddings[copies] = embeddings[:pairs] + 0.2 * spread * rng.standard_normal((pairs, dim)).astype(np.float32)
    phash[copies] = phash[:pairs] ^ np.uint64(0b101)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    ids = [f"face{index:07d}" for index in range(count)]
    ones = np.ones(count)
    return FaceTable(
        face_ids=ids, image_ids=ids, paths=[f"{i}.jpg" for i in ids], content_hashes=ids,
        face_index=np.zeros(count, np.int32), embeddings=embeddings, phash=phash,
        yaw=ones * 0, pitch=ones * 0, roll=ones * 0, sharpness=ones * 100, brightness=ones * 0.5,
        contrast=ones * 0.2, lighting_lr=ones * 0, lighting_tb=ones * 0, face_size=ones * 200,
        det_score=ones, aligned_paths=ids, image_sizes=np.full((count, 2), 640, np.int64),
        # one landmark set for every face (a frozen expression): the pose, expression and light
        # gates all pass, so the embedding and the perceptual hash decide, as in the worst case
        landmarks68=np.broadcast_to(rng.uniform(0, 200, (68, 2)), (count, 68, 2)),
    )


def run_one_person(count: int, dim: int, pairs: int, block: int) -> None:
    table = one_person_table(count, dim, pairs)
    settings = DuplicateSettings(block=block)
    started = time.perf_counter()
    rows = find_duplicates(table, settings)
    seconds = time.perf_counter() - started
    group_of = {row.face_id: row.group_id for row in rows}
    planted_found = all(
        group_of.get(table.face_ids[i], "a") == group_of.get(table.face_ids[count - pairs + i], "b")
        for i in range(pairs))
    chance_faces = len(rows) - 2 * pairs
    limit = settings.max_phash_distance
    chance_rate = sum(comb(32, k) ** 2 for k in range(limit // 2 + 1)) / comb(64, 32)
    sample = table.embeddings[:200] @ table.embeddings[200:400].T
    print(f"find_duplicates, one person {seconds:6.2f} s   ({count:,} faces, cosine between faces "
          f"{np.percentile(sample, 5):.2f}–{np.percentile(sample, 95):.2f}, so the phash decides every "
          f"pair; {pairs} planted pairs all grouped: {planted_found}; {chance_faces} more faces grouped "
          f"by chance phash matches, ~{2 * chance_rate * count * (count - 1) / 2:.0f} expected at "
          f"p = {chance_rate:.1e} per pair for ≤ {limit} bits)")
    if not planted_found:
        raise SystemExit("find_duplicates missed planted near copies")


def run(count: int, dim: int, pairs: int, block: int, queries: int, subset: int) -> None:
    threshold = DuplicateSettings().min_cosine
    embeddings, planted = synthetic_embeddings(count, dim, pairs)
    seconds, peak, found = blocked(embeddings, threshold, block)

    found_pairs = {(i, j) for i, j, _ in found}
    missing = planted - found_pairs
    exact = np.einsum("ij,ij->i", embeddings[[i for i, _, _ in found]].astype(np.float64),
                      embeddings[[j for _, j, _ in found]].astype(np.float64)) if found else np.zeros(0)
    wrong = int((exact < threshold - 1e-5).sum())

    query_seconds, partners = per_query_baseline(embeddings, threshold, queries)
    by_query: dict[int, set[int]] = {query: set() for query in partners}
    for i, j in found_pairs:
        if i in by_query:
            by_query[i].add(j)
    agree = all(by_query[query] == partners[query] for query in partners)
    per_query_total = query_seconds * count / len(partners)

    subset = min(subset, count)
    matrix_seconds, _ = full_matrix_baseline(embeddings, threshold, subset)
    matrix_total = matrix_seconds * (count / subset) ** 2

    columns = min(count, block * COLUMN_TILE_FACTOR)
    arithmetic = block * columns * (4 + 1) + dim * columns * 4
    print(f"\n== {count:,} unit embeddings × {dim} (float32), threshold cosine {threshold}, block {block}")
    print(f"blocked all_pairs_above   {seconds:8.2f} s   {count * (count - 1) / 2 / seconds / 1e6:8.0f} M pairs/s")
    print(f"  pairs found             {len(found):8d}   planted {len(planted)}, all found: {not missing} "
          f"(missing {len(missing)}); other pairs above the threshold by chance: "
          f"{len(found_pairs - planted)}; reported below the threshold: {wrong}")
    print(f"  peak memory beyond input {peak / 2**20:7.1f} MiB (tracemalloc; block arithmetic "
          f"{block}×{columns}×5 + {dim}×{columns}×4 B = {arithmetic / 2**20:.1f} MiB; input "
          f"{embeddings.nbytes / 2**20:.0f} MiB; an N×N float32 matrix would be "
          f"{count * count * 4 / 2**30:.0f} GiB)")
    print(f"baseline per-query rows   {per_query_total:8.2f} s   (measured {query_seconds:.2f} s on "
          f"{len(partners)} queries × {count / len(partners):.0f}; same pairs for those queries: {agree})")
    print(f"baseline full N×N matrix  {matrix_total:8.2f} s   (measured {matrix_seconds:.2f} s on the "
          f"first {subset:,} faces × {(count / subset) ** 2:.0f}; needs {count * count * 5 / 2**30:.0f} GiB at N)")
    print(f"ratio per-query / blocked {per_query_total / seconds:8.1f}×")
    print(f"ratio full-matrix / blocked {matrix_total / seconds:6.1f}×")
    if missing or wrong or not agree:
        raise SystemExit("the blocked search disagrees with the planted pairs or the baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512],
                        help="embedding sizes (128: embedded SFace; 512: insightface buffalo_l)")
    parser.add_argument("--pairs", type=int, default=300, help="near-duplicate pairs to plant")
    parser.add_argument("--block", type=int, default=DuplicateSettings().block)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (the target is 2 cores)")
    parser.add_argument("--queries", type=int, default=400, help="queries timed for the per-query baseline")
    parser.add_argument("--subset", type=int, default=8000, help="faces in the full-matrix baseline")
    args = parser.parse_args()

    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=args.threads):
        blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()
                         if i["user_api"] == "blas")
        print(f"numpy {np.__version__}; BLAS: {blas}")
        for dim in args.dims:
            run(args.faces, dim, args.pairs, args.block, args.queries, args.subset)
            run_one_person(args.faces, dim, args.pairs, args.block)


if __name__ == "__main__":
    main()
