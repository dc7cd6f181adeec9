"""Run in a fresh process by test_distributed.py: one replica against two, on the backend KERAS_BACKEND names.

tensorflow: MirroredStrategy over two logical CPU devices (TensorFlow splits the CPU only before it
initialises, hence a fresh process). jax: keras.distribution.DataParallel over two host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2, read when JAX starts). torch: two processes
started by torchrun, the gradients averaged over a gloo process group (DDP's all-reduce); rank 0
writes the result.

Usage: python replicas_check.py BATCHES.npz CASES.json RESULT.json
BATCHES.npz holds `step{n}_{i}` arrays (the i-th tensor of step n's batch, Batch.tensors() order);
CASES.json is a list of {"name", "options", "compute_dtype"}; RESULT.json receives one record per case.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def _split_cpu() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def _batches(path: Path) -> list[tuple[np.ndarray, ...]]:
    with np.load(path) as archive:
        steps = sorted({int(key.split("_")[0][4:]) for key in archive.files})
        return [tuple(archive[f"step{step}_{i}"] for i in range(8)) for step in steps]


def _replica_spread(trainer) -> float:
    """The largest difference between two replicas' copies of any variable (0 when they agree bitwise)."""
    spread = 0.0
    for variable in trainer.named_state().values():
        if BACKEND == "tensorflow":
            copies = [np.asarray(v.numpy()) for v in variable.value.values]
        elif BACKEND == "jax":
            copies = [np.asarray(shard.data) for shard in variable.value.addressable_shards]
        else:
            import torch
            import torch.distributed as dist

            local = torch.as_tensor(np.asarray(variable.numpy()))
            parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, local)
            copies = [p.numpy() for p in parts]
        spread = max(spread, max(float(np.max(np.abs(c - copies[0]))) for c in copies))
    return spread


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


def _share_apart(a: dict[str, np.ndarray], b: dict[str, np.ndarray], distance: float) -> float:
    """The share of all values of all variables that differ by more than `distance`."""
    differences = np.concatenate([np.abs(a[name] - b[name]).ravel() for name in a])
    return float(np.mean(differences > distance))


def run_case(case: dict, batches: list[tuple[np.ndarray, ...]], strategy) -> dict:
    """Train one replica and two replicas on the same batches; report how far apart they end."""
    from train.config import resolve_config
    from train.step import SAEHDTrainer

    config, _ = resolve_config(case["options"])
    dtype = case.get("compute_dtype", "float32")
    single = SAEHDTrainer(config, dtype)
    replicated = SAEHDTrainer(config, dtype, strategy=strategy)
    initial = single.state_arrays()
    same_start = all(np.array_equal(value, replicated.state_arrays()[name]) for name, value in initial.items())
    losses, samples = [], []
    for step, batch in enumerate(batches, start=1):
        a = single.train_step(batch, step, 5)
        b = replicated.train_step(batch, step, 5)
        losses.append([[a.src_loss, a.dst_loss, a.output_std], [b.src_loss, b.dst_loss, b.output_std]])
        samples.append([a.src_sample_losses.tolist(), b.src_sample_losses.tolist()])
    after_single, after_replicated = single.state_arrays(), replicated.state_arrays()
    model = [name for name in after_single if name.startswith("model/")]
    record = {"name": case["name"], "replicas": replicated.replicas, "same_start": same_start, "losses": losses,
              "samples": samples, "model_weights": len(model),
              "moved": sum(not np.array_equal(after_single[k], initial[k]) for k in model),
              "max_movement": max(float(np.max(np.abs(after_single[k] - initial[k]))) for k in model),
              # the weights themselves (the slots hold sums of squares, whose float16 batch sums on two
              # devices may round apart by far more than a step without moving any weight by one)
              "max_weight_diff": _max_difference(*({k: d[k] for k in d if not k.split("/")[0].endswith("_opt")}
                                                   for d in (after_single, after_replicated))),
              "max_state_diff": _max_difference(after_single, after_replicated),
              "share_half_step_apart": _share_apart(after_single, after_replicated, config.learning_rate / 2),
              "bitwise_equal": all(np.array_equal(after_single[k], after_replicated[k]) for k in after_single),
              "replica_spread": _replica_spread(replicated), "state_names": sorted(after_single)}
    # Checkpoints move between strategies: the replicated state into the single trainer and back.
    single.load_arrays(after_replicated)
    replicated.load_arrays(after_single)
    record["reload_exact"] = _max_difference(after_replicated, single.state_arrays()) == 0.0 and \
        _max_difference(after_single, replicated.state_arrays()) == 0.0 and _replica_spread(replicated) == 0.0
    forward = replicated.predict(batches[0][1], batches[0][5])  # previews and checks run on replica 0
    record["predict_finite"] = bool(np.all(np.isfinite(forward.src_dst)))
    return record


def odd_batch_error(strategy) -> str:
    from train.config import ConfigError, resolve_config
    from train.step import SAEHDTrainer

    config, _ = resolve_config({"resolution": 64, "archi": "liae-ud", "ae_dims": 32, "e_dims": 16, "d_dims": 16,
                                "d_mask_dims": 16, "batch_size": 3})
    try:
        SAEHDTrainer(config, strategy=strategy)
    except ConfigError as error:
        return str(error)
    return ""


def main(batches_path: str, cases_path: str, result_path: str) -> None:
    if BACKEND == "tensorflow":
        _split_cpu()
    from train.distribute import describe_strategy, make_replication

    strategy = make_replication(BACKEND, "mirrored" if BACKEND != "torch" else "multiworker", "cpu")
    batches = _batches(Path(batches_path))
    cases = json.loads(Path(cases_path).read_text())
    result = {"description": describe_strategy(strategy), "odd_batch_error": odd_batch_error(strategy),
              "cases": [run_case(case, batches, strategy) for case in cases]}
    if BACKEND != "torch" or strategy.rank == 0:
        Path(result_path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
