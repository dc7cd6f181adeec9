"""Benchmark: merge throughput on 720p frames, and what share of a training run merge checks take.

In one run, for a model at 128 px (liae-ud, default dims; weights as initialised — speed does not
depend on them):
  1. frames/s of `merge run` on 1280×720 frames made from the sample photos, mode overlay with rct
     colour transfer, every frame written with its label (metadata + watermark);
  2. the time of one merge check and of one training iteration (batch 8), and the share of a
     training run that checks take at the default interval (target < 5 %);
  3. what the merge-quality score adds to a check: normalising, combining and judging a check against
     a long history (every earlier check's score is recomputed with the current weights), timed alone.

    python tools/bench_merge.py [--frames 40] [--interval 2000] [--resolution 128]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.bench_scan import FACE_PHOTOS  # noqa: E402
from tools.bench_train import build_facesets  # noqa: E402
from tools.fetch_samples import fetch_samples  # noqa: E402

DEFAULT_CHECK_INTERVAL = 2000


def build_720p_frames(samples: Path, out: Path, count: int) -> Path:
    """`count` 1280×720 frames, each a sample photo letterboxed into the frame."""
    out.mkdir(parents=True, exist_ok=True)
    sources = [cv2.imread(str(samples / name), cv2.IMREAD_COLOR) for name in FACE_PHOTOS]
    for index in range(count):
        image = sources[index % len(sources)]
        scale = min(1280 / image.shape[1], 720 / image.shape[0])
        resized = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        frame = np.zeros((720, 1280, 3), np.uint8)
        y, x = (720 - resized.shape[0]) // 2, (1280 - resized.shape[1]) // 2
        frame[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
        cv2.imwrite(str(out / f"frame_{index:04d}.png"), frame)
    return out


def time_quality_scoring(check: dict, history: int, repeats: int = 20) -> float:
    """Seconds the merge-quality score adds to one check whose model holds `history` earlier checks:
    the components and weighted mean of the new check and the verdict (all scores recomputed)."""
    from merge.checks import judge
    from merge.quality import CheckSettings, best_loss, combine, components

    rng = np.random.default_rng(0)
    rows = []
    for index in range(history + 1):  # a plausible history: the stored measures, jittered
        row = dict(check, iteration=(index + 1) * 2000)
        for name in ("validation_src_loss", "identity_similarity", "expression_error", "sharpness_ratio",
                     "training_loss"):
            if row.get(name) is not None:
                row[name] = float(row[name]) * (1 + 0.05 * rng.standard_normal())
        rows.append(row)
    settings = CheckSettings()
    started = time.perf_counter()
    for _ in range(repeats):
        combine(components(rows[-1], best_loss(rows), settings), settings.weights)
        judge(rows, settings)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--interval", type=int, default=DEFAULT_CHECK_INTERVAL, help="merge-check interval")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "train")
    parser.add_argument("--history", type=int, default=500, help="earlier checks the quality verdict recomputes "
                        "(500 checks = a million iterations at the default interval)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from curate.faces.backends.embedded import EmbeddedFaceAnalyzer
    from merge.checks import MergeChecker
    from merge.runner import merge_frames
    from merge.settings import resolve_settings
    from train.loop import close_session, open_session, run_training
    from train.sampler import make_batch

    samples = REPO / "samples"
    fetch_samples(samples, quiet=True)
    src, dst = build_facesets(args.out, samples)
    work = Path(tempfile.mkdtemp(prefix="bench_merge_"))
    analyzer = EmbeddedFaceAnalyzer(device="auto")
    try:
        frames = build_720p_frames(samples, work / "frames", args.frames)
        session = open_session(work / "model", {"resolution": args.resolution, "batch_size": args.batch,
                                                "validation_share": 0.05, "save_every": 10**9,
                                                "preview_every": 10**9}, src, dst)
        run_training(session, max_iterations=2)  # a checkpoint to merge with; the step is traced

        settings = resolve_settings({"mode": "overlay", "color_transfer": "rct"})
        merge_frames(work / "model", frames, work / "warm", settings, analyzer=analyzer)  # load and trace
        shutil.rmtree(work / "warm")
        started = time.perf_counter()
        summary = merge_frames(work / "model", frames, work / "merged", settings, analyzer=analyzer)
        merge_seconds = time.perf_counter() - started
        frames_per_second = summary.merged / merge_seconds

        src_sampler, dst_sampler = session.samplers()
        batch = make_batch(1, src_sampler, dst_sampler, session.sampler_settings()).tensors()
        step_times = []
        for step in range(3, 8):
            started = time.perf_counter()
            session.trainer.train_step(batch, step, session.config.seed)
            step_times.append(time.perf_counter() - started)
        step_seconds = float(np.median(step_times[1:]))

        checker = MergeChecker(session, every=args.interval, analyzer=analyzer)
        checker.run(session.iteration)  # warm: traces the predictor and the loss graph
        started = time.perf_counter()
        result = checker.run(session.iteration)
        check_seconds = time.perf_counter() - started
        close_session(session)
        scoring_seconds = time_quality_scoring(result.to_dict(), args.history)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    share = check_seconds / (args.interval * step_seconds + check_seconds)
    figures = {"frames": summary.merged, "faces": summary.faces, "merge_seconds": round(merge_seconds, 2),
               "merge_frames_per_s": round(frames_per_second, 2), "model_resolution": args.resolution,
               "train_step_s": round(step_seconds, 3), "merge_check_s": round(check_seconds, 2),
               "check_frames": result.frames, "check_interval": args.interval,
               "check_share_of_training": round(share, 5), "quality_scoring_ms": round(scoring_seconds * 1000, 3),
               "quality_scoring_history": args.history,
               "quality_share_of_check": round(scoring_seconds / check_seconds, 6), "cores": os.cpu_count()}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"merge run   {summary.merged} frames of 1280x720 ({summary.faces} faces), overlay + rct, "
          f"{args.resolution} px model: {merge_seconds:.1f} s = {frames_per_second:.2f} frames/s")
    print(f"merge check {check_seconds:.2f} s ({result.frames} held-out frames); train step "
          f"{step_seconds * 1000:.0f} ms (batch {args.batch})")
    print(f"share of a training run spent in checks every {args.interval} iterations: {share:.3%} "
          f"(target < 5%)")
    print(f"merge-quality score and verdict over {args.history} earlier checks: {scoring_seconds * 1000:.2f} ms "
          f"= {scoring_seconds / check_seconds:.4%} of the check")


if __name__ == "__main__":
    main()
