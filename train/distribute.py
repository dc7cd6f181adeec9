"""Multi-replica training on each backend: build the replication, describe it, split batches, find the chief.

TensorFlow: tf.distribute (MirroredStrategy over this machine's GPUs or logical CPUs,
MultiWorkerMirroredStrategy over the TF_CONFIG cluster). JAX: keras.distribution.DataParallel over
every local device (on a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=N` makes N). torch:
one process per device started by torchrun, gradients averaged over a torch.distributed process group
(DDP's all-reduce; gloo on CPUs, NCCL on GPUs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from train.config import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a multi-worker cluster, as TF_CONFIG states it."""

    task_type: str  # "worker" or "chief" ("worker" without TF_CONFIG)
    task_index: int
    worker_count: int  # processes in the cluster (1 without TF_CONFIG)
    is_chief: bool  # the one process that writes the model folder


ONE_PROCESS = WorkerRole("worker", 0, 1, True)


def worker_role(tf_config: str | None) -> WorkerRole:
    """Parse the TF_CONFIG text (None or empty: a single process, which is the chief).

    The chief follows TensorFlow's rule: the task of type "chief" if the cluster has one, else worker 0.
    """
    if not tf_config:
        return ONE_PROCESS
    try:
        document = json.loads(tf_config)
        cluster: dict[str, list[str]] = document.get("cluster", {})
        task = document.get("task", {})
        task_type, task_index = str(task.get("type", "worker")), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as error:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description ({error}); see "
                          "tools/multiworker_example.py for one") from error
    count = sum(len(cluster.get(job, [])) for job in ("chief", "worker")) or 1
    chief = task_type == "chief" or (task_type == "worker" and task_index == 0 and not cluster.get("chief"))
    return WorkerRole(task_type, task_index, count, chief)


def check_batch_split(batch_size: int, replicas: int) -> int:
    """Faces per side each replica trains on; a clear error unless the batch divides evenly."""
    if replicas < 1 or batch_size % replicas:
        raise ConfigError(f"batch_size {batch_size} does not split evenly over {replicas} replicas: "
                          f"use a multiple of {replicas} (batch_size is the global batch, each replica "
                          "trains on batch_size / replicas faces per side)")
    return batch_size // replicas


@dataclass(frozen=True)
class TorchGroup:
    """A torch.distributed process group this process belongs to (started by torchrun)."""

    rank: int
    world_size: int
    backend: str  # "gloo" or "nccl"

    @property
    def num_replicas_in_sync(self) -> int:
        return self.world_size

    def local_rows(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """This process's consecutive share of each (B, ...) global-batch array."""
        share = check_batch_split(int(arrays[0].shape[0]), self.world_size)
        return tuple(array[self.rank * share:(self.rank + 1) * share] for array in arrays)

    def gather_reported(self, reported: dict[str, Any]) -> dict[str, Any]:
        """Scalars averaged and per-face vectors concatenated over every process (rank order)."""
        import torch
        import torch.distributed as dist

        result = {}
        for name, value in reported.items():
            if name.endswith("sample_losses"):
                parts = [torch.empty_like(value) for _ in range(self.world_size)]
                dist.all_gather(parts, value.contiguous())
                result[name] = torch.cat(parts)
            else:
                total = value.clone()
                dist.all_reduce(total, op=dist.ReduceOp.SUM)
                result[name] = total / self.world_size
        return result


def torch_group_from_environment() -> TorchGroup:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    import torch
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise ConfigError("strategy multiworker with --backend torch runs under torchrun, e.g. "
                          "torchrun --nproc-per-node 2 -m facesmith train run ... --strategy multiworker")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return TorchGroup(dist.get_rank(), dist.get_world_size(), backend)


def replica_count(strategy: Any) -> int:
    """How many replicas share each step (1 for None)."""
    if strategy is None:
        return 1
    if _is_keras_distribution(strategy):
        return int(np.prod(strategy.device_mesh.shape))
    return int(strategy.num_replicas_in_sync)


def _is_keras_distribution(strategy: Any) -> bool:
    return type(strategy).__module__.startswith("keras")


def variable_scope(strategy: Any):
    """The context in which variables must be created for `strategy` (mirrored or replicated)."""
    if strategy is None or isinstance(strategy, TorchGroup):
        return contextlib.nullcontext()
    return strategy.scope()


def make_replication(backend: str, kind: str, device_kind: str) -> Any:
    """The backend's replication for the `strategy` option: None for "default" (one device)."""
    if kind == "default":
        return None
    if backend == "tensorflow":
        return make_strategy(kind, device_kind)
    if backend == "jax":
        if kind == "multiworker":
            raise ConfigError("strategy multiworker is not available with --backend jax: use mirrored (every "
                              "device of this machine), or tensorflow/torch for several machines")
        import keras

        return keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    if kind == "mirrored":
        raise ConfigError("--backend torch trains on several devices as several processes: start it with "
                          "torchrun --nproc-per-node N ... --strategy multiworker")
    return torch_group_from_environment()


def make_strategy(kind: str, device_kind: str = "gpu") -> Any:
    """The tf.distribute.Strategy for the `strategy` option, or None for "default" (one device).

    mirrored: every logical GPU, or every logical CPU device when `device_kind` is "cpu" (one, unless
    the process split the CPU with tf.config.set_logical_device_configuration). multiworker: the
    cluster of the TF_CONFIG variable, each worker with its local GPUs (or its CPU). Create it before
    any other TensorFlow work in the process: multiworker starts the collective server.
    """
    if kind == "default":
        return None
    import tensorflow as tf

    if kind == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] if device_kind == "gpu" else []
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {kind!r}: choose default, mirrored or multiworker")


def _short_device(name: str) -> str:
    """'/job:localhost/replica:0/task:0/device:CPU:1' -> 'CPU:1'."""
    return name.rsplit("device:", 1)[-1]


def describe_strategy(strategy: Any, role: WorkerRole | None = None) -> str:
    """One line for the start-up message, e.g. 'MirroredStrategy over 2 replicas (CPU:0, CPU:1)'."""
    if strategy is None:
        return "one replica"
    if isinstance(strategy, TorchGroup):
        return (f"DDP over {strategy.world_size} processes ({strategy.backend}, rank {strategy.rank}"
                + (", chief)" if strategy.rank == 0 else ", writes a scratch folder)"))
    if _is_keras_distribution(strategy):
        devices = [str(d) for d in np.asarray(strategy.device_mesh.devices).ravel()]
        return f"keras DataParallel over {len(devices)} devices ({', '.join(devices)})"
    replicas = strategy.num_replicas_in_sync
    devices = ", ".join(_short_device(d) for d in strategy.extended.worker_devices)
    # tf.distribute.MultiWorkerMirroredStrategy is the class CollectiveAllReduceStrategy.
    name = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}.get(type(strategy).__name__,
                                                                             type(strategy).__name__)
    text = f"{name} over {replicas} replica{'s' if replicas != 1 else ''} ({devices}"
    if role is not None and role.worker_count > 1:
        text += f" on worker {role.task_index} of {role.worker_count}"
        text += ", chief" if role.is_chief else ", writes a scratch folder"
    return text + ")"


def split_batch(strategy: Any, arrays: Sequence[Any]) -> tuple[Any, ...]:
    """Each (B, ...) array cut into equal consecutive shares, one per replica, as PerReplica values.

    Replica r (numbered across the whole cluster) gets rows r·B/R .. (r+1)·B/R - 1, placed on its
    device. Every worker passes the same global batch and keeps only its replicas' rows.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    size = int(arrays[0].shape[0])
    share = check_batch_split(size, replicas)
    devices = strategy.extended.worker_devices

    def local_share(context: Any) -> tuple[Any, ...]:
        replica = context.replica_id_in_sync_group
        # A worker's replicas are numbered consecutively, so the remainder is the local device.
        with tf.device(devices[replica % len(devices)]):
            return tuple(tf.convert_to_tensor(array[replica * share:(replica + 1) * share]) for array in arrays)

    return strategy.experimental_distribute_values_from_function(local_share)


def broadcast_from_chief(strategy: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`arrays` as the chief holds them, on every process (unchanged in a single process)."""
    if isinstance(strategy, TorchGroup):
        import torch
        import torch.distributed as dist

        result = []
        for array in arrays:
            tensor = torch.as_tensor(np.ascontiguousarray(array))
            dist.broadcast(tensor, src=0)
            result.append(tensor.numpy())
        return result
    if _is_keras_distribution(strategy):
        return [np.asarray(a) for a in arrays]
    return [np.asarray(v) for v in broadcast_from_first_replica(strategy, arrays)]


def broadcast_from_first_replica(strategy: Any, values: Sequence[Any]) -> list[Any]:
    """`values` as replica 0 (the chief's first device) holds them, returned on every worker.

    A SUM all-reduce in which every other replica contributes zeros: x + 0 is exact, so each worker
    ends up with a bitwise copy. Used when workers opened different folders (the chief's checkpoint,
    a non-chief's empty scratch folder) and must start from one state.
    """
    import tensorflow as tf

    def replica_values(tensors: list[Any]) -> list[Any]:
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        kept = [tf.where(first, tensor, tf.zeros_like(tensor)) for tensor in tensors]
        summed: list[Any] = list(kept)
        # One all-reduce per dtype (the collective packs its tensors together, so they must match),
        # in a fixed order: every worker must issue the same collectives in the same sequence.
        for dtype in sorted({tensor.dtype for tensor in kept}, key=lambda d: d.name):
            indices = [i for i, tensor in enumerate(kept) if tensor.dtype == dtype]
            reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, [kept[i] for i in indices])
            for index, value in zip(indices, reduced):
                summed[index] = value
        return summed

    @tf.function
    def broadcast(tensors: list[Any]) -> list[Any]:
        summed = strategy.run(replica_values, args=(tensors,))
        return [strategy.experimental_local_results(value)[0] for value in summed]

    return broadcast([tf.convert_to_tensor(value) for value in values])


def workers_agree(strategy: Any, value: int) -> bool:
    """Whether every worker of the cluster passed the same `value` (0 <= value < 2**20).

    Every worker gets the same answer, so all of them stop (rather than some waiting forever in a
    collective the others never reach): with n replicas, n·Σv² = (Σv)² exactly when all v are equal.
    """
    strategy = getattr(strategy, "strategy", strategy)  # a TrainDevice is accepted too
    if not 0 <= value < 2 ** 20:
        raise ValueError(f"value must be in [0, 2**20), got {value}")
    if isinstance(strategy, TorchGroup):
        import torch
        import torch.distributed as dist

        sums = torch.tensor([value, value * value, 1], dtype=torch.int64)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        total, squares, count = (int(x) for x in sums)
        return count * squares == total * total
    import tensorflow as tf

    def replica_sums() -> Any:
        number = tf.constant(value, tf.int64)
        return tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.stack([number, number * number, tf.constant(1, tf.int64)]))

    @tf.function
    def sums() -> Any:
        return strategy.experimental_local_results(strategy.run(replica_sums))[0]

    total, squares, count = (int(x) for x in sums().numpy())
    return count * squares == total * total
