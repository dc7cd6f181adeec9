"""Benchmark: merge throughput on 720p frames, and what share of a training run merge checks take.

In one run, for a model at 128 px (liae-ud, default dims; weights as initialised — speed does not
depend on them):
  1. frames/s of `merge run` on 1280×720 frames made from the sample photos, mode overlay with rct
     colour transfer, every frame written with its label (metadata + watermark);
  2. the time of one merge check and of one training iteration (batch 8), and the share of a
     training run that checks take at the default interval (target < 5 %);
  3. what the merge-quality score adds to a check: normalising, combining and judging a check against
     a long history (every earlier check's score is recomputed with the current weights), timed alone;
  4. the per-face training-loss bookkeeping (train/face_losses.py) per iteration, as a share of the
     step measured in the same run (target < 1 %): folding one step's per-face losses into the running
     losses, plus storing the snapshot of a 5000 + 5000-face model at every checkpoint, spread over
     the default checkpoint interval;
  5. letting go of the history file between writes (so `train status` and the reports read a model
     while it trains): one close and reopen of the session's own `model.duckdb`, times the opens a
     run makes at the default intervals (a history flush every 100 iterations, a preview, a
     checkpoint; counted as if they never coincide), as a share of the step.

    python tools/bench_merge.py [--frames 40] [--interval 2000] [--resolution 128] [--face-losses-only]
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


def time_face_loss_bookkeeping(session, batch, repeats: int = 2000, faces: int = 5000) -> dict[str, float]:
    """Seconds of per-face loss bookkeeping: one step's fold (the session's tracker, a real step's
    per-face losses) and one snapshot save of a `faces` + `faces`-face model (rows, store, prune)."""
    from train.face_losses import FaceLossTracker
    from train.history import ModelHistory

    result = session.trainer.train_step(batch.tensors(), session.iteration + 1, session.config.seed)
    tracker = session.face_losses
    started = time.perf_counter()
    for step in range(repeats):
        tracker.update(batch.src_indices, batch.dst_indices, result.src_sample_losses, result.dst_sample_losses,
                       step + 1)
    update_seconds = (time.perf_counter() - started) / repeats

    rng = np.random.default_rng(0)
    large = FaceLossTracker([f"s{i:06d}" for i in range(faces)], [f"d{i:06d}" for i in range(faces)])
    for step in range(faces // len(batch.src_indices) + 1):  # every face seen at least once
        rows = (np.arange(len(batch.src_indices)) + step * len(batch.src_indices)) % faces
        large.update(rows, rows, rng.random(len(rows)), rng.random(len(rows)), step + 1)
    folder = Path(tempfile.mkdtemp(prefix="bench_face_losses_"))
    saves = []
    try:
        with ModelHistory(folder) as history:
            for checkpoint in range(1, 6):
                started = time.perf_counter()
                history.save_face_losses(checkpoint * 500, large.rows())
                history.keep_face_losses([checkpoint * 500, (checkpoint - 1) * 500])
                saves.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"update_s": update_seconds, "save_s": float(np.median(saves)), "save_faces": 2 * faces}


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
    parser.add_argument("--face-losses-only", action="store_true", help="time the train step and the per-face "
                        "loss bookkeeping only (no merge run, no merge check)")
    args = parser.parse_args()

    from curate.faces.backends.embedded import EmbeddedFaceAnalyzer
    from merge.checks import MergeChecker
    from merge.runner import merge_frames
    from merge.settings import resolve_settings
    from train.config import TrainConfig
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

        src_sampler, dst_sampler = session.samplers()
        sample = make_batch(1, src_sampler, dst_sampler, session.sampler_settings())
        batch = sample.tensors()
        step_times = []
        for step in range(3, 8):
            started = time.perf_counter()
            session.trainer.train_step(batch, step, session.config.seed)
            step_times.append(time.perf_counter() - started)
        step_seconds = float(np.median(step_times[1:]))
        bookkeeping = time_face_loss_bookkeeping(session, sample)
        save_every = TrainConfig.__dataclass_fields__["save_every"].default  # the default interval, not this run's
        per_iteration = bookkeeping["update_s"] + bookkeeping["save_s"] / save_every
        face_figures = {"train_step_s": round(step_seconds, 3), "batch": args.batch,
                        "face_loss_update_us": round(bookkeeping["update_s"] * 1e6, 2),
                        "face_loss_save_ms": round(bookkeeping["save_s"] * 1000, 2),
                        "face_loss_save_faces": bookkeeping["save_faces"], "save_every": save_every,
                        "face_loss_share_of_step": round(per_iteration / step_seconds, 8)}
        face_line = (f"per-face loss bookkeeping: fold {bookkeeping['update_s'] * 1e6:.1f} us per iteration + "
                     f"snapshot of {bookkeeping['save_faces']} faces {bookkeeping['save_s'] * 1000:.1f} ms per "
                     f"checkpoint (every {save_every}) = {per_iteration / step_seconds:.4%} of a "
                     f"{step_seconds * 1000:.0f} ms step (target < 1%)")
        reopens = []
        for _ in range(20):
            started = time.perf_counter()
            session.history.release()
            session.history.connection.execute("SELECT count(*) FROM history").fetchone()
            reopens.append(time.perf_counter() - started)
        from train.loop import HISTORY_FLUSH_EVERY

        fields = TrainConfig.__dataclass_fields__
        opens_per_iteration = (1 / HISTORY_FLUSH_EVERY + 1 / fields["preview_every"].default
                               + 1 / save_every)
        reopen_seconds = float(np.median(reopens))
        face_figures.update({"history_reopen_ms": round(reopen_seconds * 1000, 2),
                             "history_opens_per_100_iterations": round(100 * opens_per_iteration, 2),
                             "history_release_share_of_step": round(reopen_seconds * opens_per_iteration
                                                                    / step_seconds, 8)})
        face_line += (f"\nhistory released between writes: reopen {reopen_seconds * 1000:.1f} ms x "
                      f"{100 * opens_per_iteration:.2f} per 100 iterations = "
                      f"{reopen_seconds * opens_per_iteration / step_seconds:.4%} of the step")
        if args.face_losses_only:
            close_session(session)
            print(json.dumps(face_figures, indent=2) if args.json else face_line)
            return

        settings = resolve_settings({"mode": "overlay", "color_transfer": "rct"})
        merge_frames(work / "model", frames, work / "warm", settings, analyzer=analyzer)  # load and trace
        shutil.rmtree(work / "warm")
        started = time.perf_counter()
        summary = merge_frames(work / "model", frames, work / "merged", settings, analyzer=analyzer)
        merge_seconds = time.perf_counter() - started
        frames_per_second = summary.merged / merge_seconds

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
               "quality_share_of_check": round(scoring_seconds / check_seconds, 6), "cores": os.cpu_count(),
               **face_figures}
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
    print(face_line)


if __name__ == "__main__":
    main()
