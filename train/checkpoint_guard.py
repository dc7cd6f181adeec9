"""Checks on what a model folder holds, before any of it is used: a tampered or damaged folder is an
error naming the file (or a fall-back to an older checkpoint), never a traceback and never code run.

Pure functions over bytes and parsed values, so checkpoint loading, `train status`, the predictor
and merge all apply the same rules whatever writes the files. A checkpoint's arrays must be plain
finite numbers of the shapes the model expects; its state.json a dict of the documented types;
LATEST a step name and nothing else; model.json a dict with the documented keys.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from curate.errors import FacesmithError

_STEP_NAME = re.compile(r"step-(\d{1,12})")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_POINTER_BYTES = 64  # LATEST holds 'step-NNNNNNNN\n'
MAX_JSON_BYTES = 16 * 2**20  # state.json and model.json: a few KiB when facesmith writes them


class CheckpointDamage(ValueError):
    """One checkpoint cannot be used (damaged, tampered, or not this model's): try an older one."""


class ModelFolderError(FacesmithError):
    """The model folder's model.json cannot be used; the message names the file and the problem."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_pointer(path: Path) -> int | None:
    """The step LATEST names; None when it is missing, unreadable or names anything but a step
    folder of this checkpoints folder (a path elsewhere, '..', a huge file)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POINTER_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_POINTER_BYTES:
        return None
    try:
        match = _STEP_NAME.fullmatch(raw.decode("ascii").strip())
    except UnicodeDecodeError:
        return None
    return int(match.group(1)) if match else None


def read_json(path: Path, what: str, error: type[Exception]) -> Any:
    """A JSON document of at most MAX_JSON_BYTES; `error` (naming `what`) for anything else."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_JSON_BYTES + 1)
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from problem
    if len(raw) > MAX_JSON_BYTES:
        raise error(f"{what} {path} is larger than {MAX_JSON_BYTES // 2**20} MiB")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as problem:
        raise error(f"{what} {path} is not valid JSON: {problem}") from problem


def check_state(state: Any, path: Path) -> dict[str, Any]:
    """state.json as the documented dict: schema_version, step, salt ints ≥ 0, arrays_sha256 hex,
    config a dict, phase a string; CheckpointDamage naming the first field that is wrong."""
    if not isinstance(state, dict):
        raise CheckpointDamage(f"{path}: state.json holds a {type(state).__name__}, not an object")
    for key in ("schema_version", "step"):
        if not _is_int(state.get(key)) or state[key] < 0:
            raise CheckpointDamage(f"{path}: state.json '{key}' is not a whole number ≥ 0")
    if "salt" in state and (not _is_int(state["salt"]) or not 0 <= state["salt"] < 2**31):
        raise CheckpointDamage(f"{path}: state.json 'salt' is not a whole number in 0..2**31")
    if not isinstance(state.get("arrays_sha256"), str) or not _SHA256.fullmatch(state["arrays_sha256"]):
        raise CheckpointDamage(f"{path}: state.json 'arrays_sha256' is not a SHA-256 digest")
    if not isinstance(state.get("config", {}), dict):
        raise CheckpointDamage(f"{path}: state.json 'config' is not an object")
    if "phase" in state and not isinstance(state["phase"], str):
        raise CheckpointDamage(f"{path}: state.json 'phase' is not a string")
    return state


def read_arrays(payload: bytes, path: Path) -> dict[str, np.ndarray]:
    """The arrays of an arrays.npz payload: numbers only (no pickled objects, strings or records),
    each finite; CheckpointDamage otherwise, however the archive is broken."""
    try:
        # allow_pickle=False: a model folder from elsewhere can never run code on load.
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except MemoryError:
        raise
    except Exception as error:  # BadZipFile, EOFError, zlib.error, ValueError (object arrays), …
        raise CheckpointDamage(f"{path}: arrays.npz cannot be read ({type(error).__name__}: {error})") from error
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise CheckpointDamage(f"{path}: array {name!r} holds {array.dtype} values, not numbers")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointDamage(f"{path}: array {name!r} holds NaN or infinite weights")
    return arrays


def check_shapes(arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], path: Path,
                 required_prefix: str = "model/") -> None:
    """Each array the model knows has the model's shape, and every weight (names under
    `required_prefix`) is there; CheckpointDamage otherwise (a checkpoint of another model)."""
    for name, shape in expected.items():
        if name not in arrays:
            if name.startswith(required_prefix):
                raise CheckpointDamage(f"{path}: arrays.npz lacks the weights {name!r}")
            continue
        if tuple(arrays[name].shape) != tuple(shape):
            raise CheckpointDamage(f"{path}: array {name!r} has shape {tuple(arrays[name].shape)}, the model "
                                   f"expects {tuple(shape)}")


def check_model_file(document: Any, path: Path) -> dict[str, Any]:
    """model.json as written by training: an object with 'requested' and 'structure' objects and
    'src'/'dst' paths as strings; ModelFolderError naming what is wrong."""
    if not isinstance(document, dict):
        raise ModelFolderError(f"{path} holds a {type(document).__name__}, not a model description")
    for key in ("requested", "structure"):
        if not isinstance(document.get(key), dict):
            raise ModelFolderError(f"{path}: '{key}' is missing or not an object; the model folder is damaged")
        if not all(isinstance(name, str) for name in document[key]):
            raise ModelFolderError(f"{path}: '{key}' has names that are not strings")
    for key in ("src", "dst"):
        if key in document and not isinstance(document[key], str):
            raise ModelFolderError(f"{path}: '{key}' is not a path")
    return document


def read_model_file(path: Path) -> dict[str, Any]:
    """model.json, checked (see check_model_file)."""
    return check_model_file(read_json(path, "model file", ModelFolderError), path)
