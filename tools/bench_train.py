"""Benchmark: SAEHD train step alone vs the whole training loop with the real sampler.

For one model (default liae-ud, 128 px, batch 8, default dims) it measures, in one run:
  (a) the bare compiled train step on a batch already in memory (ms/iteration),
  (b) the full loop — threads building batches from the faceset, the step, history rows,
      TensorBoard scalars — over the same number of iterations (ms/iteration), and
  (c) the sampler alone: batches/s its threads deliver while nothing else runs,
and prints (b)/(a) (target ≤ 1.2) and the sampler's rate over the step's consumption (target ≥ 3).

    python tools/bench_train.py [--resolution 128] [--batch 8] [--iterations 10] [--archi liae-ud]
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.scan.pipeline import ScanSettings, scan_folder  # noqa: E402
from tools.bench_scan import build_photos  # noqa: E402
from tools.fetch_samples import fetch_samples  # noqa: E402


def build_facesets(out: Path, samples: Path) -> tuple[Path, Path]:
    """Two facesets scanned from generated photos (reused when present)."""
    databases = []
    for side, seed in (("src", 1), ("dst", 2)):
        database = out / side / "faceset.duckdb"
        if not database.is_file():
            photos = build_photos(samples, out / f"{side}_photos", 48, seed=seed)
            scan_folder(photos[0].parent, database, ScanSettings(resolution=256, batch_size=16))
        databases.append(database)
    return databases[0], databases[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--archi", default="liae-ud")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="sampler threads (0: one per core)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "train")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    import tensorflow as tf

    from train.loop import close_session, open_session, run_training
    from train.sampler import BatchStream, make_batch

    samples = REPO / "samples"
    fetch_samples(samples, quiet=True)
    src, dst = build_facesets(args.out, samples)
    model_dir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    options = {"resolution": args.resolution, "batch_size": args.batch, "archi": args.archi,
               "save_every": 10**9, "preview_every": 10**9, "sampler_workers": args.workers,
               "validation_share": 0.0}
    try:
        session = open_session(model_dir, options, src, dst)
        src_sampler, dst_sampler = session.samplers()
        settings = session.sampler_settings()
        trainer, seed = session.trainer, session.config.seed

        # (a) the bare step on one batch held in memory
        batch = make_batch(1, src_sampler, dst_sampler, settings).tensors()
        for step in range(1, args.warmup + 1):
            trainer.train_step(batch, step, seed)
        started = time.perf_counter()
        for step in range(args.warmup + 1, args.warmup + args.iterations + 1):
            trainer.train_step(batch, step, seed)
        bare_ms = (time.perf_counter() - started) * 1000 / args.iterations

        # (b) the full loop with the real sampler, timed between iteration callbacks
        stamps: list[float] = []
        run_training(session, max_iterations=args.warmup + args.iterations + 1,
                     on_iteration=lambda _session, _row: stamps.append(time.perf_counter()))
        timed = stamps[args.warmup:]
        loop_ms = (timed[-1] - timed[0]) * 1000 / (len(timed) - 1)

        # (c) the sampler alone, with the loop's thread count
        with BatchStream(src_sampler, dst_sampler, settings, start_step=1,
                         workers=session.config.sampler_workers) as stream:
            next(stream)
            started = time.perf_counter()
            count = 4 * max(2, args.iterations)
            for _ in range(count):
                next(stream)
            sampler_per_second = count / (time.perf_counter() - started)
        close_session(session)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)

    consumption = 1000.0 / bare_ms
    figures = {
        "model": f"{args.archi} {args.resolution} px, batch {args.batch}, dims "
                 f"{session.config.ae_dims}/{session.config.e_dims}/{session.config.d_dims}/"
                 f"{session.config.effective_d_mask_dims}",
        "device": session.device.description, "tensorflow": tf.__version__, "cores": os.cpu_count(),
        "faces": {"src": len(session.src_faces), "dst": len(session.dst_faces)},
        "bare_step_ms": round(bare_ms, 1), "full_loop_ms": round(loop_ms, 1),
        "loop_over_step": round(loop_ms / bare_ms, 3),
        "sampler_batches_per_s": round(sampler_per_second, 2),
        "step_batches_per_s": round(consumption, 2),
        "sampler_over_step": round(sampler_per_second / consumption, 2),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"model             {figures['model']}")
    print(f"device            {figures['device']} (TensorFlow {figures['tensorflow']}, {figures['cores']} cores)")
    print(f"faces             src {figures['faces']['src']}, dst {figures['faces']['dst']}")
    print(f"(a) bare step     {bare_ms:8.1f} ms/iteration")
    print(f"(b) full loop     {loop_ms:8.1f} ms/iteration")
    print(f"    loop / step   {loop_ms / bare_ms:8.3f}   (target <= 1.2)")
    print(f"(c) sampler alone {sampler_per_second:8.2f} batches/s vs the step's {consumption:.2f} batches/s: "
          f"{sampler_per_second / consumption:.1f}x   (target >= 3)")


if __name__ == "__main__":
    main()
