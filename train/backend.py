"""Choose the Keras 3 backend (tensorflow, jax or torch) once per process, before keras is first imported.

Keras reads KERAS_BACKEND when it is imported and keeps that backend for the life of the process, so a
process never mixes backends: asking for another one after keras loaded is a ConfigError, and tests run
each backend in its own subprocess.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from train.config import BACKEND_CHOICES, ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("tensorflow", "jax", "torch")
# `auto` on a machine with a GPU tries these in order: torch and JAX ship CUDA 12/13 wheels that run on
# current drivers, while TensorFlow's GPU build needs its own CUDA 12 libraries (absent on many images).
GPU_PREFERENCE = ("torch", "jax", "tensorflow")
_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def installed_backends() -> list[str]:
    """The backends whose framework is importable here, in BACKENDS order (nothing is imported)."""
    return [name for name in BACKENDS if importlib.util.find_spec(_MODULES[name]) is not None]


def loaded_backend() -> str | None:
    """The backend keras runs on in this process, None while keras is not imported."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def nvidia_gpu_present() -> bool:
    """A cheap look for an NVIDIA GPU (driver files or nvidia-smi) that imports no framework."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()) \
        or shutil.which("nvidia-smi") is not None


def backend_sees_gpu(name: str) -> bool:
    """Whether `name`'s framework sees a GPU (imports that framework, its start-up chatter filtered)."""
    try:
        with quiet_framework_startup():
            if name == "torch":
                import torch

                return bool(torch.cuda.is_available())
            if name == "jax":
                import jax

                return any(device.platform == "gpu" for device in jax.devices())
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
    except Exception as error:  # noqa: BLE001 - a broken GPU stack means "no GPU here", said in the log
        log.warning("%s cannot use the GPU: %s", name, error)
        return False


def quiet_framework_logs() -> None:
    """Keep the frameworks' C++ start-up chatter (CPU features, oneDNN, absl) off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def choose_backend(requested: str = "auto") -> str:
    """The backend for `requested` ("auto", "tensorflow", "jax", "torch"), set as KERAS_BACKEND.

    auto: the backend keras already runs on in this process, else KERAS_BACKEND when set, else the
    first installed backend (torch, jax, tensorflow) that sees a GPU, else TensorFlow on the CPU (or
    whichever backend is installed).
    """
    if requested not in BACKEND_CHOICES:
        raise ConfigError(f"unknown backend {requested!r}: choose one of {', '.join(BACKEND_CHOICES)}")
    installed = installed_backends()
    loaded = loaded_backend()
    if loaded is not None:
        if requested not in ("auto", loaded):
            raise ConfigError(f"this process already runs Keras on {loaded}; a process never mixes backends: "
                              f"run --backend {requested} in a new process")
        return loaded
    if requested != "auto":
        if requested not in installed:
            raise ConfigError(f"backend {requested} is not installed: pip install 'facesmith[{requested}]'")
        chosen = requested
    elif os.environ.get("KERAS_BACKEND") in installed:
        chosen = os.environ["KERAS_BACKEND"]
    elif not installed:
        raise ConfigError("no training backend is installed: pip install 'facesmith[tensorflow]' (or "
                          "[jax] or [torch])")
    else:
        chosen = next((name for name in GPU_PREFERENCE if name in installed and nvidia_gpu_present()
                       and backend_sees_gpu(name)), None)
        chosen = chosen or ("tensorflow" if "tensorflow" in installed else installed[0])
    os.environ["KERAS_BACKEND"] = chosen
    if chosen == "jax":
        # XLA compiles the step anew in every process (tens of seconds for a large model); its
        # persistent cache makes a resumed run, a merge check or a second session start at once.
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "facesmith" / "jax"))
    quiet_framework_logs()
    return chosen


# What TensorFlow, JAX and XLA print from C++ while they start (CPU features, oneDNN, absl's early-log
# notice): not for users, and TF_CPP_MIN_LOG_LEVEL does not reach all of it.
_STARTUP_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
                  "cpu_feature_guard", "To enable the following instructions", "rebuild TensorFlow with the",
                  "An NVIDIA GPU may be present on this machine", "Unable to register cuDNN factory",
                  "Unable to register cuBLAS factory", "Unable to register cuFFT factory",
                  "computation placer already registered", "TF-TRT Warning")


def _is_noise(line: str) -> bool:
    stripped = line.strip()
    return not stripped or any(mark in stripped for mark in _STARTUP_NOISE) or (
        stripped[:1] in "IW" and stripped[1:5].isdigit() and " port.cc:" in stripped)


@contextmanager
def quiet_framework_startup() -> Iterator[None]:
    """Run a block with the process's stderr (file descriptor 2) captured, then write back what it
    wrote minus the frameworks' start-up chatter: their C++ messages bypass Python's logging, and
    TensorFlow 2.21's absl logger prints its oneDNN notice whatever TF_CPP_MIN_LOG_LEVEL says."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if not _is_noise(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def import_keras(requested: str = "auto"):
    """keras, imported on the backend `choose_backend(requested)` picks (its first import with the
    framework's start-up chatter filtered out, whichever command or tool loads it)."""
    choose_backend(requested)
    if "keras" not in sys.modules:
        with quiet_framework_startup():
            import keras
    import keras

    return keras
