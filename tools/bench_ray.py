"""Benchmark: the Ray scan engine against the local engine on the same photos and CPUs.

Builds (or reuses) the photo set of bench_scan.py, then in one run
  1. scans it with the local engine (threads) into a fresh faceset,
  2. starts a local Ray instance with the same number of CPUs (its start-up is timed apart: a
     cluster is normally already running) and scans it with the Ray engine into another, twice:
     with the default plan (on CPUs the actors decode their own files) and with separate decode
     tasks (the plan used when the actors hold GPUs),
  3. checks the facesets hold the same rows, and
  4. times each stage of the per-image work on its own (decode; detect + 68 landmarks + pose +
     alignment + quality + crop; embedding per face), the costs the README's estimate for a
     million frames on N GPUs is built from.
Prints images/s for both engines and their ratio (target >= 0.8).

    python tools/bench_ray.py [--images 500] [--cpus 2] [--out build/bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.scan.ingest import walk_files  # noqa: E402
from curate.scan.pipeline import (  # noqa: E402
    ImagePreparer,
    ScanSettings,
    decode_entry,
    make_analyzer,
    scan_folder,
)
from tools.bench_scan import photo_set  # noqa: E402


def fresh(database: Path) -> Path:
    for leftover in (database, Path(f"{database}.wal"), database.parent / f"{database.stem}_aligned",
                     database.parent / f"{database.stem}_shards"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    return database


def same_rows(first: Path, second: Path) -> bool:
    """Both facesets hold the same images, faces and checks (run ids aside)."""
    queries = ["SELECT * EXCLUDE (run_id) FROM images ORDER BY image_id",
               "SELECT face_id, face_index, bbox, yaw, sharpness, aligned_path FROM faces ORDER BY face_id",
               "SELECT * FROM face_checks ORDER BY face_id, measure"]
    results = []
    for database in (first, second):
        with duckdb.connect(str(database), read_only=True) as connection:
            results.append([connection.execute(query).fetchall() for query in queries])
    return results[0] == results[1]


def stage_costs(folder: Path, work: Path, sample: int = 60) -> dict[str, float]:
    """Milliseconds per image (decode, per-image analysis) and per face (embedding), one thread."""
    settings = ScanSettings()
    analyzer = make_analyzer(settings, threads=1)
    preparer = ImagePreparer(settings, analyzer, {}, work / "stage_aligned", work)
    (work / "stage_aligned").mkdir(parents=True, exist_ok=True)
    entries = list(walk_files(folder))[:sample]
    decode = analyse = embed = 0.0
    faces = 0
    for entry in entries:
        started = time.perf_counter()
        result, unchanged = decode_entry(entry, None, settings.max_pixels)
        decoded_at = time.perf_counter()
        prepared = preparer.analyse(entry, result, unchanged)
        analysed_at = time.perf_counter()
        if prepared.embedding_crops:
            analyzer.embed(prepared.embedding_crops)
        embed += time.perf_counter() - analysed_at
        decode += decoded_at - started
        analyse += analysed_at - decoded_at
        faces += len(prepared.faces)
    return {"decode_ms_per_image": round(1000 * decode / len(entries), 1),
            "analyse_ms_per_image": round(1000 * analyse / len(entries), 1),
            "embed_ms_per_face": round(1000 * embed / max(faces, 1), 1),
            "faces_per_image": round(faces / len(entries), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for both engines (threads / Ray CPUs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    import ray

    from curate.scan.ray_engine import RayEngine, start_ray

    photos_dir = photo_set(args.out / "photos", args.images)

    settings = ScanSettings(workers=args.cpus, batch_size=args.batch_size)
    local_db = fresh(args.out / "local" / "bench.duckdb")
    local = scan_folder(photos_dir, local_db, settings)

    started = time.perf_counter()
    start_ray(None, args.cpus)
    ray_start = time.perf_counter() - started
    try:
        ray_db = fresh(args.out / "ray" / "bench.duckdb")
        engine = RayEngine()
        on_ray = scan_folder(photos_dir, ray_db, settings, engine=engine)
        tasks_db = fresh(args.out / "ray_tasks" / "bench.duckdb")
        with_tasks = scan_folder(photos_dir, tasks_db, settings, engine=RayEngine(decode_tasks=True))
    finally:
        ray.shutdown()
    assert local.images_ok == on_ray.images_ok == with_tasks.images_ok == args.images
    equal = same_rows(local_db, ray_db) and same_rows(local_db, tasks_db)
    costs = stage_costs(photos_dir, args.out / "stages")

    local_rate = local.images_processed / local.seconds
    ray_rate = on_ray.images_processed / on_ray.seconds
    tasks_rate = with_tasks.images_processed / with_tasks.seconds
    figures = {
        "images": args.images, "cpus": args.cpus, "faces": local.faces,
        "local_images_per_s": round(local_rate, 2), "ray_images_per_s": round(ray_rate, 2),
        "ratio_ray_to_local": round(ray_rate / local_rate, 3),
        "ray_decode_tasks_images_per_s": round(tasks_rate, 2),
        "ratio_ray_decode_tasks_to_local": round(tasks_rate / local_rate, 3),
        "ray_start_s": round(ray_start, 1), "shard_load_ms_per_image": round(1000 * engine.load_seconds / args.images, 2),
        "same_rows": equal, **costs,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"photos: {args.images} (640-1920 px JPEG), {local.faces} faces, {args.cpus} CPUs")
    print(f"local engine : {local_rate:7.2f} images/s")
    print(f"ray engine   : {ray_rate:7.2f} images/s (cluster start {ray_start:.1f} s, not counted)")
    print(f"ratio        : {ray_rate / local_rate:.3f} of the local engine's throughput (target >= 0.8)")
    print(f"ray engine with separate decode tasks (the GPU plan): {tasks_rate:.2f} images/s, "
          f"ratio {tasks_rate / local_rate:.3f}")
    print(f"shard loading: {figures['shard_load_ms_per_image']} ms per image (DuckDB read_parquet, one "
          f"transaction per {args.batch_size}-image shard)")
    print(f"same rows    : {equal}")
    print(f"per image, one thread: decode {costs['decode_ms_per_image']} ms, analysis "
          f"{costs['analyse_ms_per_image']} ms; embedding {costs['embed_ms_per_face']} ms per face "
          f"({costs['faces_per_image']} faces per image)")


if __name__ == "__main__":
    main()
