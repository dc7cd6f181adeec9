"""The tiny training runs the merge-quality weights were chosen from, and how each weighting separates them.

Trains each named run (64 px liae-ud, dims 64/32/32/16, batch 4, a merge check every 50 iterations)
on the test facesets (built from the sample photos as tests/train/conftest.py does), stores every
check's raw measures, then prints, for the default check settings and for a grid of weights, the
largest drop below its best that the quality rule would see in each run (3 checks in a row while
the training loss falls). The rule flags a run when that drop exceeds the margin.

    python tools/quality_runs.py [--out build/quality_runs] [--runs healthy overfitted open_mouth ...] [--grid]

Runs already trained under --out are read back, not trained again (delete the folder to retrain).
About 2–4 minutes per run on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BASE = {"resolution": 64, "archi": "liae-ud", "ae_dims": 64, "e_dims": 32, "d_dims": 32, "d_mask_dims": 16,
        "batch_size": 4, "save_every": 10000, "preview_every": 10000, "validation_share": 0.5, "seed": 1,
        "sampler_workers": 2}
# name: (options, src faceset ("usual" or "open_mouth"), iterations)
RUNS = {
    "healthy": (dict(BASE, phase="rw"), "usual", 600),
    "overfitted": (dict(BASE, phase="lrd", lr_dropout=False, learning_rate=2e-4, random_dst_flip=False), "usual", 600),
    "open_mouth": (dict(BASE, phase="rw"), "open_mouth", 600),
    "eyes_mouth_prio": (dict(BASE, phase="rw", eyes_mouth_prio=True), "usual", 600),
    "face_style_10": (dict(BASE, phase="rw", face_style_power=10.0), "usual", 600),
    "df_true_face_1": (dict(BASE, phase="rw", archi="df", true_face_power=1.0), "usual", 600),
    "rw_lr_4x": (dict(BASE, phase="rw", learning_rate=2e-4), "usual", 600),
    "lrd_lr_8x": (dict(BASE, phase="lrd", lr_dropout=False, learning_rate=4e-4, random_dst_flip=False), "usual", 600),
}
HEALTHY, FAILING = ("healthy",), ("overfitted", "open_mouth")


def open_mouth_faceset(root: Path, src_photos: Path, analyzer) -> Path:
    """The src photos with every mouth painted wide open (one expression), scanned (as the test does)."""
    import cv2
    import numpy as np

    from curate.scan.pipeline import ScanSettings, scan_folder

    database = root / "src" / "faceset.duckdb"
    if database.is_file():
        return database
    photos = root / "src_photos"
    photos.mkdir(parents=True, exist_ok=True)
    for path in sorted(src_photos.iterdir()):
        image = cv2.imread(str(path))
        for face in analyzer.locate(image):
            mouth = np.asarray(face.landmarks68, np.float64)[48:68]
            width = float(np.ptp(mouth[:, 0]))
            centre = (int(mouth[:, 0].mean()), int(mouth[:, 1].mean() + 0.22 * width))
            cv2.ellipse(image, centre, (int(0.55 * width), int(0.54 * width)), 0, 0, 360, (20, 10, 40), -1,
                        cv2.LINE_AA)
        cv2.imwrite(str(photos / path.name), image)
    scan_folder(photos, database, ScanSettings(resolution=128, batch_size=8), analyzer=analyzer)
    return database


def train_run(out: Path, name: str, facesets: dict[str, tuple[Path, Path]], analyzer) -> list[dict]:
    from merge.checks import MergeChecker, read_checks
    from train.loop import close_session, open_session, run_training

    stored = out / f"{name}.json"
    if stored.is_file():
        return json.loads(stored.read_text())
    options, source, iterations = RUNS[name]
    session = open_session(out / name, options, *facesets[source])
    try:
        run_training(session, max_iterations=iterations, evaluators=(MergeChecker(session, every=50, analyzer=analyzer),))
    finally:
        close_session(session)
    rows = read_checks(out / name)
    for row in rows:
        row["checked_at"] = str(row["checked_at"])
    stored.write_text(json.dumps(rows, indent=1, default=str))
    return rows


def largest_drop(checks: list[dict], settings) -> float:
    """The largest amount by which 3 checks in a row sat below the best score while training loss fell."""
    from merge.quality import quality_scores

    scores = quality_scores(checks, settings)
    patience, drop = settings.check_patience, -1.0
    for end in range(patience, len(checks)):
        window = scores[:end + 1]
        training = [check["training_loss"] for check in checks[:end + 1]]
        best = max(range(len(window)), key=lambda index: window[index])
        if len(window) - 1 - best < patience:
            continue
        if training[-1] < training[best] and training[-1] < training[-patience]:
            drop = max(drop, window[best] - max(window[-patience:]))
    return drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "quality_runs")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--grid", action="store_true", help="also rank a grid of weights by separation")
    args = parser.parse_args()

    from curate.faces.backends.embedded import EmbeddedFaceAnalyzer
    from merge.checks import judge
    from merge.quality import CheckSettings
    from tests.train.conftest import build_training_facesets
    from tools.fetch_samples import fetch_samples

    samples = REPO / "samples"
    fetch_samples(samples, quiet=True)
    analyzer = EmbeddedFaceAnalyzer(device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    usual = args.out / "facesets"
    if (usual / "src" / "faceset.duckdb").is_file():
        facesets = {"usual": (usual / "src" / "faceset.duckdb", usual / "dst" / "faceset.duckdb")}
    else:
        facesets = {"usual": build_training_facesets(usual, samples, analyzer)}
    facesets["open_mouth"] = (open_mouth_faceset(args.out / "open_mouth_faceset", usual / "src_photos", analyzer),
                              facesets["usual"][1])
    runs = {name: train_run(args.out, name, facesets, analyzer) for name in args.runs}

    settings = CheckSettings()
    loss_rule = CheckSettings(check_rule="heldout-loss")
    print(f"default settings: margin {settings.check_quality_margin}; largest drop below the best per run:")
    for name, checks in runs.items():
        quality, loss = judge(checks, settings), judge(checks, loss_rule)
        print(f"  {name:16s} drop {largest_drop(checks, settings):6.3f}  quality rule: "
              f"{'FLAG' if quality.flagged else 'ok  '} best {quality.best_iteration}  | loss rule: "
              f"{'FLAG' if loss.flagged else 'ok  '} best {loss.best_iteration}")
    if not args.grid:
        return
    ranked = []
    for identity, expression, loss_weight, scale in itertools.product((0.2, 0.3, 0.4), (0.2, 0.3, 0.4),
                                                                      (0.1, 0.2, 0.3, 0.4), (2.0, 4.0)):
        trial = CheckSettings(check_weight_identity=identity, check_weight_expression=expression,
                              check_weight_heldout_loss=loss_weight, check_loss_scale=scale)
        drops = {name: largest_drop(checks, trial) for name, checks in runs.items()}
        healthy = max(drops[name] for name in HEALTHY if name in drops)
        failing = min(drops[name] for name in FAILING if name in drops)
        ranked.append((failing - healthy, identity, expression, loss_weight, scale, healthy, failing))
    print("best separations (failing minus healthy drop): identity, expression, held-out loss weight, loss scale")
    for gap, identity, expression, loss_weight, scale, healthy, failing in sorted(ranked, reverse=True)[:10]:
        print(f"  gap {gap:.3f}  weights {identity}/{expression}/{loss_weight}, scale {scale}: "
              f"healthy {healthy:.3f}, failing {failing:.3f}")


if __name__ == "__main__":
    main()
