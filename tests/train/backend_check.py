"""Run in a fresh process per Keras backend by test_backends.py (a process never mixes backends).

Usage: KERAS_BACKEND=B python backend_check.py WORK MODE [SRC_DB DST_DB]

WORK/batches.npz holds `step{n}_{i}` arrays (the i-th tensor of step n's batch); WORK/cases.json is a
list of {"name", "options", "legacy"}. MODE:

- "legacy" (TensorFlow): the TensorFlow-only trainer as it was before the Keras 3 port
  (tests/train/legacy_tf) builds each case, writes its initial weights and slots as a real checkpoint
  (WORK/checkpoints/<case>/, the files old facesmith wrote), trains the steps and records its losses
  and its state after step 1 and whether the later steps moved each tensor (WORK/legacy/<case>.npz).
- "keras": today's trainer on this process's backend loads each case's old checkpoint through
  `train.checkpoint.load_checkpoint`, trains the same steps and compares its record with the
  reference's (the old code's for TensorFlow, TensorFlow's for the others): the figures go into
  WORK/summary_<backend>.json, the record into WORK/<backend>/<case>.npz (TensorFlow's whole, as the
  reference; the others' losses only); then, with SRC_DB and DST_DB, trains through the real loop for exact
  resume (2 straight against 1 + resume + 1) and continues the chain folder WORK/chain, which every
  backend in turn resumes for 2 iterations.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# One checkpoint kept per loop folder: resume needs only the newest, and the folders are many.
LOOP_OPTIONS = {"ct_mode": "rct", "random_hsv_power": 0.05, "seed": 3, "backups_kept": 1}
# A weight is "beyond" when it differs by more than this share of the reference (plus 1e-6).
WEIGHT_RTOL = 1e-4
WEIGHT_PREFIXES = ("model/", "gan/", "code_d/")


def compare_records(got: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """How a record agrees with its reference (same checkpoint, same batches), as figures for the
    test to judge: worked out here, in the process that made `got`, so that the whole state of every
    case on every backend is never on disk at once (only the reference's is)."""
    state = sorted(name for name in reference if name.startswith("step1/"))
    weights = [n for n in state if n[len("step1/"):].startswith(WEIGHT_PREFIXES)]
    slots = [n for n in state if n not in weights]
    present = [n for n in weights if n in got]
    beyond = np.concatenate([(np.abs(got[n] - reference[n]) > WEIGHT_RTOL * np.abs(reference[n]) + 1e-6).ravel()
                             for n in present]) if present else np.ones(1, bool)
    relative = sorted(float(np.linalg.norm(got[n] - reference[n]) / np.linalg.norm(reference[n]))
                      for n in slots if n in got and np.linalg.norm(reference[n]) > 0)
    loss_reference = reference["losses"][:, :3]
    return {
        "state": len(state), "missing": [n for n in state if n not in got],
        "loss_largest_relative": float(np.max(np.abs(got["losses"][:, :3] - loss_reference)
                                              / np.maximum(np.abs(loss_reference), 1e-30))),
        "weight_largest": max((float(np.max(np.abs(got[n] - reference[n]))) for n in present), default=float("inf")),
        "weight_share_beyond": float(beyond.mean()),
        "slot_relative_median": relative[len(relative) // 2] if relative else float("inf"),
        "slot_relative_largest": relative[-1] if relative else float("inf"),
        # the weights really train (step 2 moves them again), so agreeing means something
        "weights": len(weights), "reference_weights_moved": sum(bool(reference[f"moved/{n[6:]}"]) for n in weights),
    }


def _batches(path: Path) -> list[tuple[np.ndarray, ...]]:
    with np.load(path) as archive:
        steps = sorted({int(key.split("_")[0][4:]) for key in archive.files})
        return [tuple(archive[f"step{step}_{i}"] for i in range(8)) for step in steps]


def _record(trainer, batches, step_seed: int) -> dict[str, np.ndarray]:
    record: dict[str, np.ndarray] = {}
    losses = []
    for step, batch in enumerate(batches, start=1):
        result = trainer.train_step(batch, step, step_seed)
        losses.append([result.src_loss, result.dst_loss, result.output_std, result.learning_rate])
        if getattr(result, "src_sample_losses", None) is not None:
            record[f"samples/{step}/src"] = result.src_sample_losses
            record[f"samples/{step}/dst"] = result.dst_sample_losses
        if step == 1:
            record.update({f"step1/{k}": v for k, v in trainer.state_arrays().items()})
    # Whether the later steps moved each tensor again, not the tensors: the records of five cases on
    # four backends are compared in one module, and whole copies doubled what it kept on disk.
    record.update({f"moved/{k}": np.asarray(not np.array_equal(v, record[f"step1/{k}"]))
                   for k, v in trainer.state_arrays().items()})
    record["losses"] = np.asarray(losses, np.float64)
    return record


def run_legacy(work: Path, cases: list[dict], batches) -> None:
    from tests.train.legacy_tf.step import SAEHDTrainer
    from train.checkpoint import save_checkpoint
    from train.config import resolve_config

    (work / "legacy").mkdir(exist_ok=True)
    for case in cases:
        config, _ = resolve_config(case["options"])
        trainer = SAEHDTrainer(config)
        save_checkpoint(work / "checkpoints" / case["name"], 0, trainer.state_arrays(),
                        {"config": config.option_values(), "salt": 0, "phase": config.phase}, keep=1)
        if case.get("legacy", True):  # lr-dropout masks changed by design: no step to compare with
            np.savez(work / "legacy" / f"{case['name']}.npz", **_record(trainer, batches, 5))


def run_keras(work: Path, cases: list[dict], batches, facesets: list[str]) -> dict:
    import keras

    from train.checkpoint import load_checkpoint
    from train.config import resolve_config
    from train.step import SAEHDTrainer

    backend = keras.backend.backend()
    out = work / backend
    out.mkdir(exist_ok=True)
    summary: dict = {"backend": backend, "cases": {}}
    for case in cases:
        config, _ = resolve_config(case["options"])
        trainer = SAEHDTrainer(config)
        missing = trainer.load_arrays(load_checkpoint(work / "checkpoints" / case["name"]).arrays)
        record = _record(trainer, batches, 5)
        # TensorFlow is judged against the old code, every other backend against TensorFlow
        reference = work / ("legacy" if backend == "tensorflow" else "tensorflow") / f"{case['name']}.npz"
        against = None
        if reference.is_file():
            with np.load(reference) as archive:
                against = compare_records(record, {name: archive[name] for name in archive.files})
        summary["cases"][case["name"]] = {"missing": missing, "against": against}
        if backend != "tensorflow":  # the losses and per-face losses only: nobody compares with these
            record = {k: v for k, v in record.items() if not k.startswith(("step1/", "moved/"))}
        np.savez(out / f"{case['name']}.npz", **record)
    if backend == "tensorflow":
        shutil.rmtree(work / "legacy", ignore_errors=True)  # judged above, and read by no one else
    if backend == "jax":
        summary["memory"] = _memory_against_xla(cases[0])
    if facesets:
        summary["loop"] = _loop_checks(work, backend, Path(facesets[0]), Path(facesets[1]))
    return summary


def _memory_against_xla(case: dict) -> dict:
    """`train plan`'s estimate and XLA's buffer assignment of the compiled step at two batch sizes."""
    from train.config import resolve_config
    from train.plan import measure_jax_step, plan_memory
    from train.step import SAEHDTrainer

    config, _ = resolve_config(case["options"])
    trainer = SAEHDTrainer(config)
    side = config.resolution
    figures = {}
    for batch in (2, 8):
        arrays = tuple(np.zeros((batch, side, side, channels), np.float32) for channels in (3, 3, 1, 1, 3, 3, 1, 1))
        xla = measure_jax_step(trainer, arrays)
        plan = plan_memory(config, "jax", "float32", "cpu", batch)
        figures[batch] = {"xla": xla["argument"] + xla["output"] + xla["temp"] - xla["alias"], "plan": plan.total,
                          "plan_per_sample": plan.activations_per_sample, "plan_fixed": plan.fixed}
    return figures


def _train(model_dir: Path, src: Path, dst: Path, iterations: int, **options) -> tuple[int, str]:
    from tests.train.conftest import TINY_OPTIONS
    from train.loop import close_session, open_session, run_training

    session = open_session(model_dir, dict(TINY_OPTIONS, **options), src, dst)
    try:
        outcome = run_training(session, max_iterations=iterations)
    finally:
        close_session(session)
    return outcome.iteration, session.device.description


def _loop_checks(work: Path, backend: str, src: Path, dst: Path) -> dict:
    """Exact resume on this backend, and this backend's turn in the cross-backend chain."""
    from train.checkpoint import load_checkpoint

    loop = work / f"loop_{backend}"
    _train(loop / "straight", src, dst, 2, **LOOP_OPTIONS)
    _train(loop / "resumed", src, dst, 1, **LOOP_OPTIONS)
    iteration, device = _train(loop / "resumed", src, dst, 1, **LOOP_OPTIONS)
    straight, resumed = load_checkpoint(loop / "straight").arrays, load_checkpoint(loop / "resumed").arrays
    largest = max(float(np.max(np.abs(straight[k] - resumed[k]))) for k in straight)
    face_losses = _face_loss_difference(loop / "straight", loop / "resumed")
    shutil.rmtree(loop)  # its figures are all in the summary; the chain below is kept for the test
    chain_start = load_checkpoint(work / "chain").step if (work / "chain" / "model.json").is_file() else 0
    chain_iteration, _ = _train(work / "chain", src, dst, 2, **LOOP_OPTIONS)
    return {"resumed_iteration": iteration, "device": device, "same_names": sorted(straight) == sorted(resumed),
            "resume_largest_difference": largest, "chain_from": chain_start, "chain_to": chain_iteration,
            **face_losses}


def _face_loss_difference(straight: Path, resumed: Path) -> dict:
    """How the per-face running losses of the straight and the resumed run compare: the same faces
    seen the same number of times, and the largest relative difference of their losses."""
    from curate.training_loss import read_face_losses

    same, largest, faces = True, 0.0, 0
    for side in ("src", "dst"):
        a, b = read_face_losses(straight, side).losses, read_face_losses(resumed, side).losses
        same = same and a.keys() == b.keys() and all(a[k].seen == b[k].seen for k in a if k in b)
        faces += len(a)
        for key in a.keys() & b.keys():
            for x, y in ((a[key].loss, b[key].loss), (a[key].last_loss, b[key].last_loss)):
                largest = max(largest, abs(x - y) / max(abs(x), 1e-12))
    return {"face_losses_same_faces": same, "face_losses_faces": faces, "face_losses_largest_relative": largest}


def main() -> None:
    work, mode = Path(sys.argv[1]), sys.argv[2]
    cases = json.loads((work / "cases.json").read_text())
    batches = _batches(work / "batches.npz")
    if mode == "legacy":
        run_legacy(work, cases, batches)
        return
    summary = run_keras(work, cases, batches, sys.argv[3:5])
    (work / f"summary_{summary['backend']}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
