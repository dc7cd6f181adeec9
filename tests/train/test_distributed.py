"""Multi-replica training on each backend against one replica — TensorFlow's MirroredStrategy over two
logical CPU devices, JAX's keras.distribution DataParallel over two host devices, torch DDP over two
gloo processes (torchrun) — the batch split, the worker roles of a multi-worker cluster, and
`strategy mirrored` through the loop."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.train.conftest import TINY_OPTIONS, tiny_batches
from train.config import STRUCTURAL_OPTIONS, ConfigError, option_specs, resolve_config
from train.distribute import check_batch_split, worker_role

CHECK_SCRIPT = Path(__file__).with_name("replicas_check.py")
BACKENDS = [name for name in ("tensorflow", "jax", "torch") if importlib.util.find_spec(name) is not None]
DESCRIPTIONS = {"tensorflow": "MirroredStrategy over 2 replicas (CPU:0, CPU:1)",
                "jax": "keras DataParallel over 2 devices",
                "torch": "DDP over 2 processes (gloo, rank 0, chief)"}
EXAMPLE = Path(__file__).resolve().parents[2] / "tools" / "multiworker_example.py"
STEPS = 3
TINY_STRUCTURE = {"resolution": 64, "archi": "liae-ud", "ae_dims": 32, "e_dims": 16, "d_dims": 16,
                  "d_mask_dims": 16, "batch_size": 4, "seed": 0}
CASES = [
    # Warp trains inter_ab too; lr dropout draws the stateless masks; clipgrad clips the averaged gradients.
    {"name": "warp+lr_dropout", "options": dict(TINY_STRUCTURE, random_warp=True, lr_dropout=True, clipgrad=True)},
    # The GAN's own optimiser, a frozen inter_ab (None gradients), RMSprop, and the float16 path's
    # loss scaling with its skip flag (float16 compute is allowed on the CPU below the loop).
    {"name": "gan+float16", "compute_dtype": "float16",
     "options": dict(TINY_STRUCTURE, phase="gan", optimizer="rmsprop")},
]


# -- options and roles (no TensorFlow) -----------------------------------------------------------------

def test_strategy_is_a_declared_option_that_a_resumed_model_may_change():
    spec = {s.name: s for s in option_specs()}["strategy"]
    assert spec.default == "default" and spec.choices == ("default", "mirrored", "multiworker")
    assert "strategy" not in STRUCTURAL_OPTIONS
    assert "batch_size / replicas" in spec.help
    assert resolve_config({"strategy": "mirrored"})[0].strategy == "mirrored"
    with pytest.raises(ConfigError, match="strategy"):
        resolve_config({"strategy": "nccl"})
    with pytest.raises(ConfigError, match="auto_phases does not work with strategy multiworker"):
        resolve_config({"strategy": "multiworker", "auto_phases": True})


def test_batch_split_names_both_numbers():
    assert check_batch_split(8, 2) == 4 and check_batch_split(3, 1) == 3
    with pytest.raises(ConfigError, match=r"batch_size 3 does not split evenly over 2 replicas"):
        check_batch_split(3, 2)


@pytest.mark.parametrize("tf_config, chief, index, count", [
    (None, True, 0, 1),
    ("", True, 0, 1),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}', True, 0, 2),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}', False, 1, 2),
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', False, 0, 2),
    ('{"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', True, 0, 2),
])
def test_worker_role_follows_tensorflows_chief_rule(tf_config, chief, index, count):
    role = worker_role(tf_config)
    assert (role.is_chief, role.task_index, role.worker_count) == (chief, index, count)


def test_a_malformed_tf_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        worker_role("{not json")


# -- two replicas against one (a subprocess: devices are split, and processes started, only at start-up) --

def _batches(training_facesets) -> dict[str, np.ndarray]:
    from train.sampler import make_batch

    src, dst, settings = tiny_batches(training_facesets)
    return {f"step{step}_{index}": array for step in range(1, STEPS + 1)
            for index, array in enumerate(make_batch(step, src, dst, settings).tensors())}


@pytest.fixture(scope="module")
def replica_runs(module_dirs, training_facesets) -> dict:
    folder = module_dirs("replicas")
    np.savez(folder / "batches.npz", **_batches(training_facesets))
    (folder / "cases.json").write_text(json.dumps(CASES))
    return {"folder": folder}


def _replica_run(replica_runs: dict, backend: str) -> dict:
    if backend in replica_runs:
        return replica_runs[backend]
    folder = replica_runs["folder"]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="",
                       JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
                       OMP_NUM_THREADS="1")
    environment.pop("TF_CONFIG", None)
    arguments = [str(CHECK_SCRIPT), str(folder / "batches.npz"), str(folder / "cases.json"),
                 str(folder / f"result_{backend}.json")]
    if backend == "torch":
        arguments = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *arguments]
    completed = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, env=environment,
                               timeout=900, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    replica_runs[backend] = json.loads((folder / f"result_{backend}.json").read_text())
    return replica_runs[backend]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [case["name"] for case in CASES])
def test_two_replicas_train_like_one(replica_runs, backend, case):
    """Same faces, same seed: the losses and every weight and slot agree up to float reassociation."""
    run = _replica_run(replica_runs, backend)
    assert run["description"].startswith(DESCRIPTIONS[backend])
    record = next(r for r in run["cases"] if r["name"] == case)
    assert record["replicas"] == 2 and record["same_start"]
    # The per-face losses of the whole batch come back from both replicas, in batch order.
    for single, replicated in record["samples"]:
        np.testing.assert_allclose(replicated, single, rtol=2e-3 if "float16" in case else 1e-4)
    assert any(name.startswith("gan/") for name in record["state_names"]) == case.startswith("gan")
    # The weights moved (so agreement means something), by far more than the two runs differ.
    assert record["moved"] > record["model_weights"] // 2 and record["max_movement"] > 1e-4
    # float16 compute carries ~3 significant digits; float32 about 7.
    loss_rtol = 2e-3 if "float16" in case else 1e-4
    for single, mirrored in record["losses"]:
        np.testing.assert_allclose(mirrored, single, rtol=loss_rtol, err_msg=f"{case}: losses per step")
    # Not bitwise: each replica runs every convolution on half the batch (other kernel blocking, other
    # rounding) and the halves are summed in another order. (One replica on reordered rows is no
    # yardstick: it only reassociates the batch sum, and its largest single difference swings 2-6×
    # with the faces.) AdaBelief and RMSprop scale each step to ~lr, so a rounding difference
    # that flips the sign of a near-zero gradient moves that weight by up to ~2 lr; a real divergence
    # (other dropout masks, unaveraged gradients) moves most weights by a whole step. So: almost no
    # value may end half a step apart, and none by more than a few steps.
    if backend != "jax":  # XLA on two host devices may split the work exactly as on one
        assert not record["bitwise_equal"]
    assert record["share_half_step_apart"] <= (1e-2 if "float16" in case else 1e-4), record
    # A flipped sign costs up to ~2 lr a step, and early bias-corrected steps run a little over lr:
    # 3 lr a step over STEPS steps bounds it (CI's CPU measured 5.2 lr after 3 steps on torch).
    lr = resolve_config({})[0].learning_rate
    assert record["max_weight_diff"] < (1e-3 if "float16" in case else 3 * STEPS * lr)
    # Every replica applied the identical update: their copies agree bitwise.
    assert record["replica_spread"] == 0.0
    assert record["reload_exact"] and record["predict_finite"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_that_does_not_split_over_the_replicas_is_refused(replica_runs, backend):
    run = _replica_run(replica_runs, backend)
    assert run["odd_batch_error"].startswith("batch_size 3 does not split evenly over 2 replicas")


# -- the loop ------------------------------------------------------------------------------------------

def test_strategy_mirrored_trains_through_the_loop_and_its_checkpoint_loads_without_it(tmp_path,
                                                                                       training_facesets):
    """Here TensorFlow sees one CPU device, so mirrored means one replica: the same loop, reported."""
    from train.checkpoint import load_checkpoint
    from train.loop import close_session, open_session, run_training
    from train.status import training_status

    model_dir = tmp_path / "model"
    session = open_session(model_dir, dict(TINY_OPTIONS, strategy="mirrored"), *training_facesets)
    try:
        assert session.trainer.strategy is session.device.strategy is not None
        assert session.device.replicas == 1 and session.trainer.replicas == 1
        assert session.device.description.endswith("; MirroredStrategy over 1 replica (CPU:0)")
        assert session.device.description.startswith("tensorflow on CPU")
        outcome = run_training(session, max_iterations=3)
    finally:
        close_session(session)
    assert outcome.iteration == 3 and np.isfinite(outcome.last_src_loss)
    assert "MirroredStrategy over 1 replica" in training_status(model_dir).device
    saved = load_checkpoint(model_dir)
    assert "MirroredStrategy" in saved.state["device"]
    session = open_session(model_dir, {"strategy": "default"})
    try:
        assert session.device.strategy is None and session.iteration == 3
        restored = session.trainer.state_arrays()
        assert all(np.array_equal(restored[name], saved.arrays[name]) for name in saved.arrays)
    finally:
        close_session(session)


# -- several workers ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_multiworker_example_trains_two_workers_in_lock_step(tmp_path, samples_dir):
    """Two processes, one cluster on localhost, two sessions (the second resumes): every worker ends
    with the chief's weights bitwise, close to one process training the same batches."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_CONFIG", None)
    completed = subprocess.run([sys.executable, str(EXAMPLE), "--iterations", "2", "--samples", str(samples_dir),
                                "--work", str(tmp_path), "--model-dir", str(tmp_path / "model")],
                               capture_output=True, text=True, env=environment, timeout=500, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    output = completed.stdout
    assert output.count("weights and slots of every worker agree: yes (largest difference 0 ") == 2
    assert "MultiWorkerMirroredStrategy over 2 replicas (CPU:0 on worker 1 of 2, writes a scratch folder)" in output
    assert "session 2: 2 workers" in output and "iteration 4" in output
    reference = float(output.split("largest difference to the chief's weights and slots ")[1].split()[0])
    assert reference < 1e-3
    model = json.loads((tmp_path / "model" / "model.json").read_text())
    assert "strategy" not in model["requested"]  # a session option: a later command runs on one device
    assert sorted(path.name for path in (tmp_path / "model" / "checkpoints").glob("step-*")) == \
        ["step-00000000", "step-00000002", "step-00000004"]
