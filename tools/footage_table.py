"""The README's footage table: a generated interview clip through scan, analyze and select, as a user would run them.

Renders tools/footage.py's interview clip (speech with blinks, a slow head turn, a two-shot with
another person, a cut to them, a zoom with a nod) at 30 fps, scans it at the default settings,
analyses it with the main identity pinned by a photo that is not in the clip, selects a budget, and
prints per shot and in total: faces, faces dropped as duplicates, faces that can train, selected
of the budget, and the yaw range of the selection against the yaw range of the main person's
eligible faces. For comparison it also counts what the previous grouping — connected components of
the cosine + perceptual-hash pairs, without the pose, expression and light gates — would have
dropped on the same faces.

    python tools/footage_table.py [--budget 60] [--fps 30] [--out /tmp/footage]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.analysis.duplicates import DuplicateSettings, analyze_duplicates, pair_blocks, phash_distances  # noqa: E402
from curate.analysis.identities import analyze_identities  # noqa: E402
from curate.analysis.selection import SelectionSettings, select_and_export  # noqa: E402
from curate.faces.backends.embedded import EmbeddedFaceAnalyzer  # noqa: E402
from curate.faceset import FacesetReader  # noqa: E402
from curate.scan.pipeline import ScanSettings, scan_folder  # noqa: E402
from tools.fetch_samples import fetch_samples  # noqa: E402
from tools.footage import actor_from_photo, interview  # noqa: E402


def _load(path: Path) -> np.ndarray:
    import cv2
    from PIL import Image

    return cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)


def chained_drops(reader: FacesetReader) -> int:
    """Faces the connected-components rule (cosine + phash only) would drop: every component of
    the near pairs keeps one face."""
    table = reader.faces()
    settings = DuplicateSettings()
    parent = list(range(len(table)))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def close(rows: slice, cols: slice) -> np.ndarray:
        return phash_distances(table.phash[rows][:, None], table.phash[cols][None, :]) <= settings.max_phash_distance

    for first, second, _ in pair_blocks(table.embeddings, settings.min_cosine, settings.block, close):
        for a, b in zip(first.tolist(), second.tolist()):
            parent[find(a)] = find(b)
    roots = {find(i) for i in range(len(table))}
    return len(table) - len(roots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="keep the clip and faceset here")
    args = parser.parse_args()
    samples = fetch_samples(REPO / "samples")
    photos = samples / "face_recognition"
    work = args.out or Path(tempfile.mkdtemp(prefix="footage-"))
    if work.exists():
        shutil.rmtree(work)
    analyzer = EmbeddedFaceAnalyzer()
    actors = {"main": actor_from_photo("obama", _load(photos / "obama.jpg"), analyzer.locate),
              "main2": actor_from_photo("obama", _load(photos / "obama2.jpg"), analyzer.locate),
              "other": actor_from_photo("biden", _load(photos / "biden.jpg"), analyzer.locate)}
    started = time.perf_counter()
    clip = interview(actors, work / "frames", fps=args.fps)
    rendered = time.perf_counter() - started
    database = work / "faceset.duckdb"
    scan = scan_folder(work / "frames", database, ScanSettings(), analyzer=analyzer, role="src")
    duplicates = analyze_duplicates(database)
    analyze_identities(database, pin_image=photos / "obama3.jpg")
    selection = select_and_export(database, work / "selected", SelectionSettings(budget=args.budget))
    with FacesetReader(database) as reader:
        table = reader.faces()
        labels = reader.identity_labels()
        eligible = {s.face_id for s in reader.statuses(use_selection=False) if s.trains}
        selected = set(reader.selected())
        dropped = set(reader.dropped_duplicates())
        chained = chained_drops(reader)
    shot_of = {face_id: Path(path).name.split("_")[0] for face_id, path in zip(table.face_ids, table.paths)}
    main = [i for i, face_id in enumerate(table.face_ids) if labels[face_id][0] == "main"]

    def span(indices: list[int]) -> str:
        if not indices:
            return "—"
        yaws = table.yaw[indices]
        return f"{yaws.min():+.0f}° to {yaws.max():+.0f}°"

    print(f"clip: {len(clip.frames)} frames at {args.fps:g} fps rendered in {rendered:.0f} s; scan "
          f"{scan.seconds:.0f} s; {len(table)} faces; duplicate analysis {duplicates.seconds:.1f} s")
    print()
    print("| shot | faces (main) | dropped as duplicates | can train | selected | yaw of the main person's faces | yaw of its eligible faces | yaw selected |")
    print("|---|---|---|---|---|---|---|---|")
    for shot in dict.fromkeys(shot_of.values()):
        members = [i for i, face_id in enumerate(table.face_ids) if shot_of[face_id] == shot]
        main_members = [i for i in members if i in set(main)]
        ids = [table.face_ids[i] for i in members]
        print(f"| {shot} | {len(members)} ({len(main_members)}) | {sum(f in dropped for f in ids)} | "
              f"{sum(f in eligible for f in ids)} | {sum(f in selected for f in ids)} | {span(main_members)} | "
              f"{span([i for i in main_members if table.face_ids[i] in eligible])} | "
              f"{span([i for i in main_members if table.face_ids[i] in selected])} |")
    eligible_main = [i for i in main if table.face_ids[i] in eligible]
    picked = [i for i in main if table.face_ids[i] in selected]
    print(f"| **all** | {len(table)} ({len(main)}) | {len(dropped)} | {len(eligible)} | "
          f"{len(selected)} of {args.budget} | {span(main)} | {span(eligible_main)} | {span(picked)} |")
    print()
    print(f"connected components of cosine + phash pairs (the earlier rule) would drop {chained} of "
          f"{len(table)} faces; star groups with pose, expression and light gates drop {len(dropped)}")
    for warning in selection.warnings:
        print(f"warning: {warning}")
    if args.out is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
