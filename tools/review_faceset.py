"""Build a large faceset quickly for the review benchmark: real scanned faces copied with new ids.

A real scan of the sample photos gives a few dozen faces with every column, check row and crop.
`grow_faceset` copies its rows N times into a new database: each copy is a new image (new id,
path and content hash) whose faces keep their crop file (so thumbnails are real JPEGs) but get a
spread pose, jittered quality numbers and a jittered embedding, so the duplicate and identity
analyses and the selection have real work to do. Nothing here is a test fixture: it is for
`tools/bench_review.py` and for trying the review app on a big set by hand:

    python tools/review_faceset.py --faces 10000 --out /tmp/review10k
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def scan_samples(samples: Path, out: Path) -> Path:
    """Scan every sample photo at 128 px into `out/base/faceset.duckdb` (kept between runs)."""
    from curate.scan.pipeline import ScanSettings, scan_folder

    database = out / "base" / "faceset.duckdb"
    if not database.is_file():
        database.parent.mkdir(parents=True, exist_ok=True)
        scan_folder(samples, database, ScanSettings(resolution=128, batch_size=8))
    return database


def grow_faceset(base: Path, out: Path, faces: int) -> Path:
    """A faceset at `out/faceset.duckdb` with about `faces` faces copied from `base`, analysed
    (duplicates, identities) and with a selection; its crops are the base's, shared."""
    from curate.analysis.duplicates import analyze_duplicates
    from curate.analysis.identities import analyze_identities
    from curate.analysis.selection import SelectionSettings, select_and_export
    from curate.scan.pipeline import default_aligned_dir

    out.mkdir(parents=True, exist_ok=True)
    database = out / "faceset.duckdb"
    for stale in (database, Path(f"{database}.wal")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(base, database)
    # faces.aligned_path is relative to the database's folder: point it at the base's crops.
    aligned = default_aligned_dir(database)
    if aligned.is_symlink() or aligned.exists():
        aligned.unlink() if aligned.is_symlink() else shutil.rmtree(aligned)
    aligned.symlink_to(default_aligned_dir(base).resolve(), target_is_directory=True)
    with duckdb.connect(str(database)) as connection:
        base_faces = connection.execute("SELECT count(*) FROM faces").fetchone()[0]
        copies = max(1, -(-faces // max(base_faces, 1)))
        connection.execute("CREATE TEMP TABLE copies AS SELECT range AS copy FROM range(1, ?)", [copies])
        connection.execute("""
            INSERT INTO images SELECT
                substr(sha256(i.image_id || c.copy), 1, 16), 'copy' || lpad(c.copy::VARCHAR, 4, '0') || '/' || i.path,
                sha256(coalesce(i.content_hash, '') || c.copy), i.bytes, i.mtime_ns, i.width, i.height,
                i.format, i.mode, i.status, i.reject_reason, i.face_count, i.run_id
            FROM images i, copies c""")
        columns = [row[0] for row in connection.execute("DESCRIBE faces").fetchall()]
        replaced = {
            "face_id": "substr(sha256(f.image_id || c.copy), 1, 16) || '_' || lpad(f.face_index::VARCHAR, 2, '0')",
            "image_id": "substr(sha256(f.image_id || c.copy), 1, 16)",
            # a spread of poses so the heat map has many cells
            "yaw": "f.yaw + (hash(c.copy, f.face_id, 'y') % 1000) / 1000.0 * 80 - 40",
            "pitch": "f.pitch + (hash(c.copy, f.face_id, 'p') % 1000) / 1000.0 * 40 - 20",
            "sharpness": "f.sharpness * (0.5 + (hash(c.copy, f.face_id, 's') % 1000) / 1000.0)",
            "brightness": "least(1, f.brightness * (0.8 + (hash(c.copy, f.face_id, 'b') % 1000) / 2500.0))",
            "phash": "printf('%016x', hash(c.copy, f.face_id, 'h'))",
            "embedding": "list_transform(f.embedding, lambda x: x + ((hash(c.copy, f.face_id, x) % 1000) / 1000.0 - 0.5) * 0.08)",
        }
        select = ", ".join(replaced.get(name, f"f.{name}") for name in columns)
        connection.execute(f"INSERT INTO faces SELECT {select} FROM faces f, copies c")
        connection.execute("""
            INSERT INTO face_checks SELECT
                substr(sha256(f.image_id || c.copy), 1, 16) || '_' || lpad(f.face_index::VARCHAR, 2, '0'),
                k.measure, k.raw_value, k.score, k.bad_low, k.ok_low, k.ok_high, k.bad_high, k.verdict
            FROM face_checks k JOIN faces f USING (face_id), copies c""")
        total = connection.execute("SELECT count(*) FROM faces").fetchone()[0]
        # trim to the size asked for (whole images), keeping the originals
        if total > faces:
            extra = connection.execute("""
                SELECT image_id FROM (SELECT image_id, sum(face_count) OVER (ORDER BY path) AS running
                                      FROM images WHERE path LIKE 'copy%') WHERE running > ? - ?""",
                                       [faces, base_faces]).fetchall()
            ids = [row[0] for row in extra]
            connection.execute("DELETE FROM face_checks WHERE face_id IN (SELECT face_id FROM faces WHERE list_contains(?, image_id))", [ids])
            connection.execute("DELETE FROM faces WHERE list_contains(?, image_id)", [ids])
            connection.execute("DELETE FROM images WHERE list_contains(?, image_id)", [ids])
    analyze_duplicates(database)
    analyze_identities(database)
    select_and_export(database, out / "selected", SelectionSettings(budget=500))
    return database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/facesmith_review_bench"))
    parser.add_argument("--samples", type=Path, default=REPO / "samples")
    args = parser.parse_args()
    started = time.perf_counter()
    base = scan_samples(args.samples, args.out)
    database = grow_faceset(base, args.out / f"set{args.faces}", args.faces)
    with duckdb.connect(str(database), read_only=True) as connection:
        count = connection.execute("SELECT count(*) FROM faces").fetchone()[0]
    print(f"{database}: {count} faces in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
