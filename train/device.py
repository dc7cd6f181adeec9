"""Choose the backend and where it trains (GPU when it sees one, else CPU; one device or several) and describe it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

from train.backend import choose_backend, quiet_framework_startup
from train.config import ConfigError
from train.distribute import (
    ONE_PROCESS,
    TorchGroup,
    WorkerRole,
    describe_strategy,
    make_replication,
    replica_count,
    worker_role,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainDevice:
    """Where the train step runs; `description` is what the CLI reports at start and history stores."""

    kind: str  # "gpu" | "cpu"
    name: str  # the backend's device name, e.g. "/GPU:0", "cuda:0", "cpu"
    description: str
    compute_dtype: str  # "float32" | "bfloat16" | "float16"
    gpu_count: int
    strategy: Any = None  # tf.distribute.Strategy, keras.distribution.DataParallel or TorchGroup; None: one device
    replicas: int = 1  # devices sharing each step (across every worker)
    role: WorkerRole = ONE_PROCESS
    backend: str = "tensorflow"


def select_device(backend: str = "auto", requested: str = "auto", precision: str = "float32",
                  strategy: str = "default") -> TrainDevice:
    """The backend (`choose_backend`), the device for `requested` ("auto", "cpu", "gpu") and the
    `strategy` option's replicas on it. A clear error when a GPU is asked and absent."""
    chosen = choose_backend(backend)
    with quiet_framework_startup():  # usually the framework's first import in the process
        if chosen == "tensorflow":
            device = _tensorflow_device(requested, precision)
        elif chosen == "jax":
            device = _jax_device(requested, precision)
        else:
            device = _torch_device(requested, precision)
    if strategy == "default":
        return device
    if chosen == "tensorflow" and strategy == "multiworker":
        role = worker_role(os.environ.get("TF_CONFIG"))
    else:
        role = ONE_PROCESS
    built = make_replication(chosen, strategy, device.kind)
    if isinstance(built, TorchGroup):
        role = WorkerRole("worker", built.rank, built.world_size, built.rank == 0)
    return replace(device, strategy=built, replicas=replica_count(built), role=role,
                   description=f"{device.description}; {describe_strategy(built, role)}")


def device_memory(device: TrainDevice) -> int | None:
    """Bytes of memory on the training GPU as the backend reports it (None on a CPU or when unknown)."""
    if device.kind != "gpu":
        return None
    try:
        if device.backend == "torch":
            import torch

            return int(torch.cuda.get_device_properties(0).total_memory)
        if device.backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return int(stats["bytes_limit"]) if "bytes_limit" in stats else None
    except Exception as error:  # noqa: BLE001 - the preflight is advice; training goes on without it
        log.warning("cannot read the GPU's memory size: %s", error)
    return None


def _precision_text(precision: str) -> str:
    return {"float32": "float32", "bfloat16": "mixed bfloat16", "float16": "mixed float16"}[precision]


def _check_gpu(requested: str, gpus: int, precision: str, backend: str) -> bool:
    if requested == "gpu" and not gpus:
        raise ConfigError(f"--device gpu: {backend} sees no GPU (check the driver and that the GPU build of "
                          f"{backend} is installed)")
    use_gpu = bool(gpus) and requested in ("auto", "gpu")
    if precision == "float16" and not use_gpu:
        raise ConfigError(f"precision float16 needs a GPU; {backend} sees none (bfloat16 works on the CPU)")
    return use_gpu


def _tensorflow_device(requested: str, precision: str) -> TrainDevice:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    # Grappler's remapper aborts on the SAEHD gradient graph (TF 2.21: "Mutation::Apply error ...
    # LeakyReluGrad") and logs an error each time a step is traced; the pass then does nothing,
    # so switching it off only silences the message.
    tf.config.optimizer.set_experimental_options({"remapping": False})
    use_gpu = _check_gpu(requested, len(gpus), precision, "TensorFlow")
    if use_gpu:
        for gpu in gpus:  # grow on demand so a merge check or a second process can share the card
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass
        details = tf.config.experimental.get_device_details(gpus[0])
        card = details.get("device_name", gpus[0].name)
        description = f"tensorflow on GPU: {card}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
        return TrainDevice("gpu", "/GPU:0", f"{description}, {_precision_text(precision)}", precision, len(gpus),
                           backend="tensorflow")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or "all"
    return TrainDevice("cpu", "/CPU:0", f"tensorflow on CPU ({threads} threads), {_precision_text(precision)}",
                       precision, 0, backend="tensorflow")


def _jax_device(requested: str, precision: str) -> TrainDevice:
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    use_gpu = _check_gpu(requested, len(gpus), precision, "JAX")
    if use_gpu:
        card = getattr(gpus[0], "device_kind", str(gpus[0]))
        description = f"jax on GPU: {card}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
        return TrainDevice("gpu", str(gpus[0]), f"{description}, {_precision_text(precision)}", precision,
                           len(gpus), backend="jax")
    if requested == "cpu" and gpus:
        raise ConfigError("--device cpu with a GPU JAX: set JAX_PLATFORMS=cpu before starting (JAX picks its "
                          "platform at start-up)")
    count = len(jax.devices("cpu"))
    return TrainDevice("cpu", "cpu", f"jax on CPU ({count} device{'s' if count > 1 else ''}), "
                       f"{_precision_text(precision)}", precision, 0, backend="jax")


def _torch_device(requested: str, precision: str) -> TrainDevice:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    use_gpu = _check_gpu(requested, gpus, precision, "torch")
    if use_gpu:
        card = torch.cuda.get_device_name(0)
        description = f"torch on GPU: {card}" + (f" (+{gpus - 1} more)" if gpus > 1 else "")
        return TrainDevice("gpu", "cuda:0", f"{description}, {_precision_text(precision)}", precision, gpus,
                           backend="torch")
    if requested == "cpu" and gpus:
        raise ConfigError("--device cpu with a CUDA torch: set CUDA_VISIBLE_DEVICES= before starting (Keras "
                          "places torch tensors on the GPU whenever one is visible)")
    return TrainDevice("cpu", "cpu", f"torch on CPU ({torch.get_num_threads()} threads), "
                       f"{_precision_text(precision)}", precision, 0, backend="torch")
