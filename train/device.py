"""Choose where TensorFlow trains (GPU when it sees one, else CPU; one device or several) and describe it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

from train.config import ConfigError
from train.distribute import (
    ONE_PROCESS,
    WorkerRole,
    describe_strategy,
    make_strategy,
    worker_role,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainDevice:
    """Where the train step runs; `description` is what the CLI reports at start."""

    kind: str  # "gpu" | "cpu"
    name: str  # TensorFlow device string, e.g. "/GPU:0"
    description: str
    compute_dtype: str  # "float32" | "float16"
    gpu_count: int
    strategy: Any = None  # tf.distribute.Strategy, None for one device
    replicas: int = 1  # devices sharing each step (across every worker)
    role: WorkerRole = ONE_PROCESS


def select_device(requested: str = "auto", mixed_precision: bool = False,
                  strategy: str = "default") -> TrainDevice:
    """The device for `requested` ("auto", "cpu", "gpu") and the `strategy` option's replicas on it.

    A clear error when a GPU is asked and absent. mirrored spreads over every GPU, or over every
    logical CPU device when training on the CPU.
    """
    device = _select_single(requested, mixed_precision)
    if strategy == "default":
        return device
    role = worker_role(os.environ.get("TF_CONFIG") if strategy == "multiworker" else None)
    built = make_strategy(strategy, device.kind)
    return replace(device, strategy=built, replicas=built.num_replicas_in_sync, role=role,
                   description=f"{device.description}; {describe_strategy(built, role)}")


def _select_single(requested: str, mixed_precision: bool) -> TrainDevice:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    # Grappler's remapper aborts on the SAEHD gradient graph (TF 2.21: "Mutation::Apply error ...
    # LeakyReluGrad") and logs an error each time a step is traced; the pass then does nothing,
    # so switching it off only silences the message.
    tf.config.optimizer.set_experimental_options({"remapping": False})
    if requested == "gpu" and not gpus:
        raise ConfigError("--device gpu: TensorFlow sees no GPU (check the driver and that the GPU build "
                          "of TensorFlow is installed: make install picks it where nvidia-smi exists)")
    use_gpu = bool(gpus) and requested in ("auto", "gpu")
    if mixed_precision and not use_gpu:
        raise ConfigError("mixed_precision needs a GPU; TensorFlow sees none")
    if use_gpu:
        for gpu in gpus:  # grow on demand so a merge check or a second process can share the card
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass
        details = tf.config.experimental.get_device_details(gpus[0])
        card = details.get("device_name", gpus[0].name)
        description = f"GPU: {card}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
        description += ", mixed float16" if mixed_precision else ", float32"
        return TrainDevice("gpu", "/GPU:0", description, "float16" if mixed_precision else "float32",
                           len(gpus))
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    return TrainDevice("cpu", "/CPU:0", f"CPU ({threads} threads), float32", "float32", 0)
