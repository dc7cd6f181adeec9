"""Benchmark: the SAEHD train step alone vs the whole training loop, on one Keras backend and precision.

For one model (default liae-ud, 128 px, batch 8, default dims) it measures, in one run:
  (a) the bare compiled train step on a batch already on the device (ms/iteration),
  (b) the full loop — threads building batches from the faceset, the step, history rows, TensorBoard
      scalars, previews at their interval — over the same number of iterations (ms/iteration),
  (c) the sampler alone: batches/s its threads deliver while nothing else runs,
  (d) peak memory: the GPU's peak as the backend reports it (torch max_memory_allocated, JAX
      peak_bytes_in_use, TensorFlow's peak), or on a CPU the process's resident high-water mark, beside
      `facesmith train plan`'s estimate for the same config (and XLA's own figure on JAX),
  (e) model FLOPs utilisation: training FLOPs counted from the layers (train/plan.py) ÷ step time ÷ the
      device's matrix rate in the compute precision, measured in the same run with a large matrix
      product (or --peak-tflops),
and prints (b)/(a) (target ≤ 1.1 on a GPU) and the sampler's rate over the step's consumption.

    python tools/bench_train.py --backend jax --precision bfloat16 --resolution 256 [--batch 8]
        [--archi liae-ud] [--dims 256/64/64/22] [--iterations 10] [--json] [--out-json FILE]

Each backend needs its own process (Keras picks the backend once): run the tool once per backend.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_facesets(out: Path, samples: Path) -> tuple[Path, Path]:
    """Two facesets scanned from generated photos (reused when present: the device script carries them)."""
    databases = [out / side / "faceset.duckdb" for side in ("src", "dst")]
    if all(database.is_file() for database in databases):
        return databases[0], databases[1]
    from curate.scan.pipeline import ScanSettings, scan_folder
    from tools.bench_scan import build_photos
    from tools.fetch_samples import fetch_samples

    fetch_samples(samples, quiet=True)
    for (side, seed), database in zip((("src", 1), ("dst", 2)), databases):
        if not database.is_file():
            photos = build_photos(samples, out / f"{side}_photos", 48, seed=seed)
            scan_folder(photos[0].parent, database, ScanSettings(resolution=256, batch_size=16))
    return databases[0], databases[1]


def matrix_rate(backend: str, precision: str, gpu: bool) -> float:
    """FLOP/s of a large square matrix product in `precision` on the training device (best of a few)."""
    import numpy as np

    size = 8192 if gpu else 1024
    repeats = 10 if gpu else 3
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    if backend == "torch":
        import torch

        device = "cuda" if gpu else "cpu"
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
        x = torch.as_tensor(a, device=device).to(dtype)
        sync = torch.cuda.synchronize if gpu else (lambda: None)
        for _ in range(2):
            (x @ x).sum().item()
        sync()
        started = time.perf_counter()
        for _ in range(repeats):
            y = x @ x
        sync()
        y.sum().item()
        seconds = (time.perf_counter() - started) / repeats
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        x = jnp.asarray(a).astype(precision)
        product = jax.jit(lambda m: m @ m)
        product(x).block_until_ready()
        started = time.perf_counter()
        for _ in range(repeats):
            y = product(x)
        y.block_until_ready()
        seconds = (time.perf_counter() - started) / repeats
    else:
        import tensorflow as tf

        x = tf.cast(tf.constant(a), precision)
        product = tf.function(lambda m: tf.matmul(m, m))
        product(x).numpy()
        started = time.perf_counter()
        for _ in range(repeats):
            y = product(x)
        y.numpy()
        seconds = (time.perf_counter() - started) / repeats
    return 2.0 * size ** 3 / seconds


def peak_memory(backend: str, gpu: bool) -> tuple[int | None, str]:
    """(bytes, what was read): the GPU peak the backend reports, or the process's resident high-water mark."""
    if gpu:
        try:
            if backend == "torch":
                import torch

                return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
            if backend == "jax":
                import jax

                stats = jax.devices()[0].memory_stats() or {}
                return int(stats.get("peak_bytes_in_use", 0)) or None, "jax peak_bytes_in_use"
            import tensorflow as tf

            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"]), "tf get_memory_info peak"
        except Exception as error:  # noqa: BLE001 - a missing reading is reported, not fatal
            return None, f"unreadable ({error})"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS (CPU; includes the runtime)"


def parse_dims(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    ae, e, d, m = (int(x) for x in text.split("/"))
    return {"ae_dims": ae, "e_dims": e, "d_dims": d, "d_mask_dims": m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "tensorflow", "jax", "torch"))
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--archi", default="liae-ud")
    parser.add_argument("--face-type", default="whole_face")
    parser.add_argument("--dims", help="ae/e/d/mask dims, e.g. 256/74/74/32 (default: the option defaults)")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="sampler threads (0: one per core)")
    parser.add_argument("--peak-tflops", type=float, help="the device's matrix rate (default: measured)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "train", help="facesets folder")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--out-json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    from train.backend import choose_backend

    backend = choose_backend(args.backend)  # before anything imports keras
    from train.loop import close_session, open_session, run_training
    from train.plan import plan_memory, training_flops_per_sample
    from train.sampler import BatchStream, make_batch

    src, dst = build_facesets(args.out, REPO / "samples")
    model_dir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    options = {"resolution": args.resolution, "batch_size": args.batch, "archi": args.archi,
               "face_type": args.face_type, "backend": backend, "precision": args.precision,
               "save_every": 10**9, "preview_every": 10**9, "sampler_workers": args.workers,
               "validation_share": 0.0, **parse_dims(args.dims)}
    try:
        session = open_session(model_dir, options, src, dst)
        config, device = session.config, session.device
        gpu = device.kind == "gpu"
        src_sampler, dst_sampler = session.samplers()
        settings = session.sampler_settings()
        trainer, seed = session.trainer, config.seed

        # (a) the bare step on one batch held in memory (the step returns host scalars, so it has finished)
        batch = make_batch(1, src_sampler, dst_sampler, settings).tensors()
        compile_started = time.perf_counter()
        trainer.train_step(batch, 1, seed)
        first_step_s = time.perf_counter() - compile_started
        for step in range(2, args.warmup + 1):
            trainer.train_step(batch, step, seed)
        started = time.perf_counter()
        for step in range(args.warmup + 1, args.warmup + args.iterations + 1):
            trainer.train_step(batch, step, seed)
        bare_ms = (time.perf_counter() - started) * 1000 / args.iterations
        measured_peak, peak_source = peak_memory(backend, gpu)

        # (b) the full loop with the real sampler, timed between iteration callbacks
        stamps: list[float] = []
        run_training(session, max_iterations=args.warmup + args.iterations + 1,
                     on_iteration=lambda _session, _row: stamps.append(time.perf_counter()))
        timed = stamps[args.warmup:]
        loop_ms = (timed[-1] - timed[0]) * 1000 / (len(timed) - 1)

        # (c) the sampler alone, with the loop's thread count
        with BatchStream(src_sampler, dst_sampler, settings, start_step=1, workers=config.sampler_workers) as stream:
            next(stream)
            started = time.perf_counter()
            count = 4 * max(2, args.iterations)
            for _ in range(count):
                next(stream)
            sampler_per_second = count / (time.perf_counter() - started)
        xla = None
        if backend == "jax":
            from train.plan import measure_jax_step

            xla = measure_jax_step(trainer, batch)
        close_session(session)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)

    rate = args.peak_tflops * 1e12 if args.peak_tflops else matrix_rate(backend, args.precision, gpu)
    flops = training_flops_per_sample(config) * args.batch
    plan = plan_memory(config, backend, args.precision, "gpu" if gpu else "cpu", args.batch)
    consumption = 1000.0 / bare_ms
    figures = {
        "model": f"{args.archi} {config.resolution} px {config.face_type}, batch {args.batch}, dims "
                 f"{config.ae_dims}/{config.e_dims}/{config.d_dims}/{config.effective_d_mask_dims}",
        "backend": backend, "precision": args.precision, "device": device.description, "cores": os.cpu_count(),
        "faces": {"src": len(session.src_faces), "dst": len(session.dst_faces)},
        "first_step_s": round(first_step_s, 2),
        "bare_step_ms": round(bare_ms, 2), "full_loop_ms": round(loop_ms, 2),
        "loop_over_step": round(loop_ms / bare_ms, 3),
        "sampler_batches_per_s": round(sampler_per_second, 2), "step_batches_per_s": round(consumption, 2),
        "sampler_over_step": round(sampler_per_second / consumption, 2),
        "training_tflop_per_step": round(flops / 1e12, 4),
        "matrix_tflops": round(rate / 1e12, 2), "matrix_rate_source": "given" if args.peak_tflops else "measured",
        "mfu": round(flops / (bare_ms / 1000.0) / rate, 4),
        "peak_memory_gib": None if measured_peak is None else round(measured_peak / 2**30, 3),
        "peak_memory_source": peak_source,
        "plan_total_gib": round(plan.total / 2**30, 3),
        "plan_over_measured": None if not measured_peak else round(plan.total / measured_peak, 3),
        "xla_memory_gib": None if xla is None else round((xla["argument"] + xla["output"] + xla["temp"]
                                                          - xla["alias"]) / 2**30, 3),
    }
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(figures, indent=2))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"model             {figures['model']}")
    print(f"device            {figures['device']} ({figures['cores']} cores)")
    print(f"faces             src {figures['faces']['src']}, dst {figures['faces']['dst']}")
    print(f"first step        {first_step_s:8.2f} s (compilation included)")
    print(f"(a) bare step     {bare_ms:8.1f} ms/iteration")
    print(f"(b) full loop     {loop_ms:8.1f} ms/iteration")
    print(f"    loop / step   {loop_ms / bare_ms:8.3f}   (target <= 1.1 on a GPU)")
    print(f"(c) sampler alone {sampler_per_second:8.2f} batches/s vs the step's {consumption:.2f} batches/s: "
          f"{sampler_per_second / consumption:.1f}x")
    print(f"(d) peak memory   {figures['peak_memory_gib']} GiB ({peak_source}); plan {figures['plan_total_gib']} GiB"
          + (f"; XLA {figures['xla_memory_gib']} GiB" if xla else ""))
    print(f"(e) MFU           {figures['mfu'] * 100:.1f} % ({figures['training_tflop_per_step']} TFLOP a step at "
          f"{figures['matrix_tflops']} TFLOP/s {args.precision} matrix rate, {figures['matrix_rate_source']})")


if __name__ == "__main__":
    main()
