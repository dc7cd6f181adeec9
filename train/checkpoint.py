"""Atomic, verified, rotating checkpoints: weights and optimiser state as .npz, state as JSON — no pickle.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` with `arrays.npz` and `state.json`. It is
written under a temporary name, flushed to disk, then renamed; `LATEST` (itself replaced
atomically) names the newest one. A kill at any moment leaves the previous checkpoint intact and
named, so a model folder is always loadable once it has been saved once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from curate.errors import FacesmithError
from curate.fileio import write_atomically
from train.checkpoint_guard import CheckpointDamage, check_shapes, check_state, read_arrays, read_json, read_pointer

log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 1
CHECKPOINT_DIR = "checkpoints"
_LATEST = "LATEST"
_ARRAYS = "arrays.npz"
_STATE = "state.json"


class CheckpointError(FacesmithError):
    """No loadable checkpoint, or one written by a newer facesmith."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: named arrays (weights, optimiser slots) and the JSON state."""

    step: int
    path: Path
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def save_checkpoint(model_dir: Path, step: int, arrays: dict[str, np.ndarray], state: dict[str, Any],
                    keep: int, pinned: frozenset[int] = frozenset()) -> Path:
    """Write a checkpoint for `step`, point LATEST at it, then prune to the `keep` newest (+ pinned)."""
    root = Path(model_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    full_state = dict(state, step=step, schema_version=CHECKPOINT_SCHEMA,
                      arrays_sha256=hashlib.sha256(payload).hexdigest())
    final = root / _step_name(step)
    partial = root / f".{_step_name(step)}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    _write_file(partial / _ARRAYS, payload)
    _write_file(partial / _STATE, json.dumps(full_state, indent=1, sort_keys=True).encode())
    _fsync_dir(partial)
    if final.exists():  # a rollback re-saves a step it already passed once
        stale = root / f".{_step_name(step)}.stale-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(partial, final)
    _fsync_dir(root)
    write_atomically(root / _LATEST, _step_name(step) + "\n", durable=True)
    _prune(root, keep, pinned | {step})
    return final


def _prune(root: Path, keep: int, pinned: frozenset[int]) -> None:
    steps = list_checkpoints(root.parent)
    for index, step in enumerate(steps):
        if index >= keep and step not in pinned:
            shutil.rmtree(root / _step_name(step), ignore_errors=True)
    for leftover in root.glob(".step-*"):  # partial folders of writers that were killed
        shutil.rmtree(leftover, ignore_errors=True)


def list_checkpoints(model_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in a model folder, most recently written first.

    Write order, not step order: after a rollback or the end of pretraining the newest
    checkpoint can carry a lower step than older ones, and it is the one to keep and resume.
    """
    root = Path(model_dir) / CHECKPOINT_DIR
    found = []
    for entry in root.glob("step-*") if root.is_dir() else []:
        state, arrays = entry / _STATE, entry / _ARRAYS
        # A link could point a checkpoint anywhere on the machine: only real folders count.
        if any(path.is_symlink() for path in (entry, state, arrays)):
            log.warning("ignoring %s: checkpoints are never read through symbolic links", entry)
            continue
        if state.is_file() and arrays.is_file():
            try:
                found.append((state.stat().st_mtime_ns, int(entry.name.split("-", 1)[1])))
            except (ValueError, OSError):
                continue
    return [step for _, step in sorted(found, reverse=True)]


def _read(path: Path, step: int, expected: Mapping[str, tuple[int, ...]] | None = None) -> Checkpoint:
    state = check_state(read_json(path / _STATE, "checkpoint state", CheckpointDamage), path)
    if state["schema_version"] > CHECKPOINT_SCHEMA:
        raise CheckpointError(f"{path} was written by a newer facesmith (checkpoint schema "
                              f"{state['schema_version']}): upgrade facesmith to load it")
    payload = (path / _ARRAYS).read_bytes()
    if hashlib.sha256(payload).hexdigest() != state["arrays_sha256"]:
        raise CheckpointDamage("arrays.npz does not match the checksum in state.json")
    arrays = read_arrays(payload, path)
    if expected is not None:
        check_shapes(arrays, expected, path)
    return Checkpoint(step=step, path=path, arrays=arrays, state=state)


def load_checkpoint(model_dir: Path, step: int | None = None,
                    expected: Mapping[str, tuple[int, ...]] | None = None) -> Checkpoint:
    """The checkpoint at `step`, or the newest loadable one (LATEST first, then older ones).

    Every candidate is checked (train.checkpoint_guard): state.json's fields, the checksum, arrays
    that are finite numbers and, given `expected` (array name -> shape, the model's own), their
    shapes. A candidate that fails is skipped with a warning and an older one tried.
    """
    root = Path(model_dir) / CHECKPOINT_DIR
    if step is not None:
        candidates = [step]
    else:
        candidates = list_checkpoints(model_dir)
        latest = read_pointer(root / _LATEST)
        if latest is not None and latest in candidates:
            candidates.remove(latest)
            candidates.insert(0, latest)
    problems = []
    for candidate in candidates:
        path = root / _step_name(candidate)
        try:
            return _read(path, candidate, expected)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError) as error:
            log.warning("skipping unreadable checkpoint %s: %s", path, error)
            problems.append(f"{path.name}: {error}")
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise CheckpointError(f"no loadable checkpoint in {root}{detail}")
