"""One Keras 3 model on TensorFlow, JAX and torch, each backend in its own process (backend_check.py).

From a checkpoint written by the TensorFlow-only trainer as it was before the port: every backend
loads it, every option set trains on every backend, the losses and the weights after one step agree
with TensorFlow's (and Keras-on-TensorFlow agrees with the old code) to 1e-4, each step reports
per-face losses, exact resume holds per backend, and one model folder is resumed by each backend in
turn.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.train.conftest import tiny_batches

SCRIPT = Path(__file__).with_name("backend_check.py")
BACKENDS = [name for name in ("tensorflow", "jax", "torch") if importlib.util.find_spec(name) is not None]
TINY = {"resolution": 64, "archi": "liae-ud", "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16,
        "batch_size": 4, "seed": 0}
# Every loss and optimiser option that trains today (the sampler-only options — flips, HSV, colour
# transfer, uniform yaw, blur-out-mask — act on the numpy batch, before any backend sees it).
CASES = [
    {"name": "rw", "options": dict(TINY)},
    {"name": "gan-rmsprop-clipgrad", "options": dict(TINY, phase="gan", gan_patch_size=8, gan_dims=4,
                                                     lr_dropout=False, optimizer="rmsprop", clipgrad=True)},
    {"name": "df-true-face-styles-priority", "options": dict(TINY, archi="df-ud", true_face_power=0.01,
                                                             face_style_power=0.1, bg_style_power=2.0,
                                                             eyes_mouth_prio=True)},
    {"name": "liae-udtc-unmasked-frozen", "options": dict(TINY, archi="liae-udtc", masked_training=False,
                                                          random_warp=False)},
    # Learning-rate dropout draws its masks from a backend-independent hash now (TensorFlow's stateless
    # Philox before), so this one compares the backends with each other only.
    {"name": "lrd-dropout", "options": dict(TINY, phase="lrd"), "legacy": False},
]
STEPS = 2
LOSS_RTOL = 1e-4
# AdaBelief's and RMSprop's first steps move each weight by about ±3.5·lr (lr 5e-5) whatever the
# gradient's size, so a weight whose gradient is within rounding of zero may step the other way on
# another backend; those few may differ by a step, no weight by more than 4·lr = 2e-4.
WEIGHT_ATOL = 2e-4
SHARE_BEYOND_RTOL = 0.01  # share of weights beyond backend_check.WEIGHT_RTOL (1e-4) of the reference
# XLA:CPU's XNNPACK/YNNPACK fusions compute convolutions with less precision than TensorFlow, torch or
# XLA's own emitters (the first layers' gradients ~1 % off); switched off for the comparison.
JAX_EXACT_CPU = "--xla_cpu_experimental_xnn_fusion_type= --xla_cpu_experimental_ynn_fusion_type="

# Four backend processes, each building five models and training through the loop: minutes on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _environment(backend: str, work: Path) -> dict[str, str]:
    # One XLA compilation cache for the JAX process: the loop's sessions reuse the case's compiled step.
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                       JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(work / "jax_cache"))
    environment["XLA_FLAGS"] = JAX_EXACT_CPU
    return environment


def _run(work: Path, backend: str, mode: str, *extra: str) -> None:
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, str(SCRIPT), str(work), mode, *extra], capture_output=True,
                               text=True, env=_environment(backend, work), timeout=1200, check=False)
    assert completed.returncode == 0, f"{backend} {mode}:\n{completed.stderr[-5000:]}"
    with open(work / "durations.txt", "a", encoding="utf-8") as log:
        log.write(f"{backend} {mode}: {time.perf_counter() - started:.1f} s\n")


@pytest.fixture(scope="module")
def work(module_dirs, training_facesets) -> Path:
    from train.sampler import make_batch

    if "tensorflow" not in BACKENDS:
        pytest.skip("TensorFlow is the reference backend and is not installed")
    work = module_dirs("backends")
    src, dst, settings = tiny_batches(training_facesets)
    np.savez(work / "batches.npz", **{f"step{step}_{index}": array for step in range(1, STEPS + 1)
                                      for index, array in enumerate(make_batch(step, src, dst, settings).tensors())})
    (work / "cases.json").write_text(json.dumps(CASES))
    _run(work, "tensorflow", "legacy")
    for backend in BACKENDS:  # in this order: the chain folder goes tensorflow -> jax -> torch
        _run(work, backend, "keras", *map(str, training_facesets))
    shutil.rmtree(work / "checkpoints")  # the old trainer's start points, loaded by every run above
    return work


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _summary(work: Path, backend: str) -> dict:
    return json.loads((work / f"summary_{backend}.json").read_text())


def _check(figures: dict | None, label: str) -> None:
    """The figures backend_check.compare_records worked out for one case against its reference."""
    assert figures is not None, f"{label}: no reference record to compare with"
    assert figures["state"] and figures["missing"] == [], (label, figures["missing"])
    assert figures["loss_largest_relative"] <= LOSS_RTOL, (label, "losses per step", figures)
    assert figures["weight_largest"] <= WEIGHT_ATOL and figures["weight_share_beyond"] <= SHARE_BEYOND_RTOL, \
        (label, figures)
    # the optimiser state (first moments, accumulators) by the size of each tensor's difference
    assert figures["slot_relative_median"] < 1e-4 and figures["slot_relative_largest"] < 2e-2, (label, figures)
    # the weights really train (step 2 moves them again), so agreeing means something
    assert figures["reference_weights_moved"] > figures["weights"] // 2, (label, figures)


@pytest.mark.parametrize("case", [c["name"] for c in CASES if c.get("legacy", True)])
def test_keras_on_tensorflow_matches_the_old_tensorflow_code(work, case):
    _check(_summary(work, "tensorflow")["cases"][case]["against"], f"keras-tf {case}")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "tensorflow"])
@pytest.mark.parametrize("case", [c["name"] for c in CASES])
def test_each_backend_matches_tensorflow(work, backend, case):
    """Same old checkpoint, same batches: losses and the weights and slots after one step agree."""
    _check(_summary(work, backend)["cases"][case]["against"], f"{backend} {case}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_old_checkpoint_loads_whole_on_every_backend(work, backend):
    summary = _summary(work, backend)
    assert summary["backend"] == backend
    assert all(record["missing"] == [] for record in summary["cases"].values()), summary["cases"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_report_per_face_losses(work, backend):
    record = _load(work / backend / "rw.npz")
    for step in range(1, STEPS + 1):
        src, dst = record[f"samples/{step}/src"], record[f"samples/{step}/dst"]
        assert src.shape == dst.shape == (TINY["batch_size"],)
        assert np.all(src > 0) and np.ptp(src) > 0  # four faces, four different losses
        np.testing.assert_allclose([src.mean(), dst.mean()], record["losses"][step - 1, :2], rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_resume_through_the_loop_on_each_backend(work, backend):
    loop = _summary(work, backend)["loop"]
    assert loop["resumed_iteration"] == 2 and loop["same_names"]
    assert loop["device"].startswith(f"{backend} on CPU")
    assert loop["resume_largest_difference"] < 1e-6
    # the per-face running losses resume as exactly (the same faces, seen as often, the same losses)
    assert loop["face_losses_same_faces"] and loop["face_losses_faces"] > 2
    assert loop["face_losses_largest_relative"] < 1e-5


@pytest.mark.skipif("jax" not in BACKENDS, reason="XLA's memory analysis needs JAX")
def test_the_memory_plan_against_xla_s_buffer_assignment(work):
    """The plan's fixed part (weights, gradients, slots) within 15 % of XLA's, its per-face activations
    at least XLA's (which fuses activations into convolutions) and at most twice them."""
    memory = {int(k): v for k, v in _summary(work, "jax")["memory"].items()}
    xla_per_sample = (memory[8]["xla"] - memory[2]["xla"]) / 6
    xla_fixed = memory[2]["xla"] - 2 * xla_per_sample
    assert abs(memory[2]["plan_fixed"] / xla_fixed - 1) < 0.15, (memory, xla_fixed)
    assert 1.0 <= memory[2]["plan_per_sample"] / xla_per_sample <= 2.0, (memory, xla_per_sample)


def test_one_model_folder_resumed_by_each_backend_in_turn(work):
    chain = [(_summary(work, b)["loop"]["chain_from"], _summary(work, b)["loop"]["chain_to"]) for b in BACKENDS]
    assert chain == [(2 * i, 2 * i + 2) for i in range(len(BACKENDS))]
    from train.history import ModelHistory

    with ModelHistory(work / "chain", read_only=True) as history:
        devices = [row[0] for row in history.connection.execute(
            "SELECT device FROM sessions ORDER BY session_id").fetchall()]
        iterations, losses, _ = history.losses()
    assert [d.split(" on ")[0] for d in devices] == BACKENDS  # the choice is stored per session
    assert list(iterations) == list(range(1, 2 * len(BACKENDS) + 1)) and np.all(np.isfinite(losses))
