"""A model folder: its model.json (facesets, options asked for, structure), its paths and its resolved config.

Everything here is plain Python (no framework import), so a command can refuse a bad option or a missing
faceset in milliseconds, before TensorFlow, JAX or torch starts, and without creating anything.

model.json holds `src` and `dst` (absolute paths to the facesets; folders written before this module
may hold paths relative to wherever training started, which are looked for there and beside the model
folder), `requested` (the options the user set, across sessions, minus session-only ones) and
`structure` (the structural options fixed at creation).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.fileio import write_atomically
from train.checkpoint import CHECKPOINT_DIR
from train.checkpoint_guard import ModelFolderError as DamagedModelFile
from train.checkpoint_guard import read_model_file
from train.config import (
    TrainConfig,
    config_to_toml,
    phase_defaults,
    resolve_config,
    structure_of,
)
from train.errors import TrainingError
from train.history import HISTORY_FILE

MODEL_FILE = "model.json"
CONFIG_FILE = "config.toml"
PREVIEW_DIR = "previews"
TENSORBOARD_DIR = "tensorboard"
# Options that describe this run's machines rather than the model: model.json never carries them over
# (a later one-process command such as `merge check` must not try to join a multi-worker cluster).
SESSION_OPTIONS = ("strategy",)


class ModelFolderError(TrainingError, DamagedModelFile):
    """Not a model folder, or a faceset its model.json names cannot be found (a damaged model.json is the
    checkpoint guard's DamagedModelFile, which this also is, so one `except` catches both)."""


@dataclass(frozen=True)
class ModelFolder:
    """The paths of one model folder; `stored` is its model.json (None before the first run)."""

    path: Path
    stored: dict[str, Any] | None = None

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def previews(self) -> Path:
        return self.path / PREVIEW_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def exists(self) -> bool:
        return self.stored is not None

    @property
    def requested(self) -> dict[str, Any]:
        return dict(self.stored["requested"]) if self.stored else {}

    @property
    def structure(self) -> dict[str, Any] | None:
        return dict(self.stored["structure"]) if self.stored else None

    def config(self) -> TrainConfig:
        """The model's config as its stored options resolve today."""
        if self.stored is None:
            raise ModelFolderError(f"{self.path} is not a model folder: train one with 'facesmith train run'")
        return resolve_config(self.requested, self.structure)[0]

    def faceset(self, side: str) -> Path:
        """The absolute path of the `side` ("src" or "dst") faceset, found as model.json names it."""
        if self.stored is None or not self.stored.get(side):
            raise ModelFolderError(f"{self.model_file} names no {side} faceset: give --{side}")
        return _find_faceset(Path(self.stored[side]), side, self.path)


def open_model_folder(path: Path) -> ModelFolder:
    """The folder at `path` with its model.json read (stored None when there is none yet)."""
    path = Path(path)
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        return ModelFolder(path)
    # the checkpoint guard's checks (size, JSON, the documented keys and types) apply to every reader
    return ModelFolder(path, read_model_file(model_file))


def read_model_folder(path: Path) -> ModelFolder:
    """Like `open_model_folder`, but a folder without model.json is an error."""
    folder = open_model_folder(path)
    if not folder.exists:
        raise ModelFolderError(f"{path} is not a model folder: train one with 'facesmith train run'")
    return folder


def is_model_folder(path: Path) -> bool:
    return (Path(path) / MODEL_FILE).is_file()


def _find_faceset(recorded: Path, side: str, model_dir: Path) -> Path:
    if recorded.is_absolute():
        if recorded.is_file():
            return recorded
        raise ModelFolderError(f"the {side} faceset {recorded} named in {model_dir / MODEL_FILE} is gone: "
                               f"give --{side} with its new place")
    # Older folders stored the path as typed, relative to wherever training started.
    for candidate in (Path.cwd() / recorded, model_dir.parent / recorded, model_dir / recorded):
        if candidate.is_file():
            return candidate.resolve()
    raise ModelFolderError(f"the {side} faceset {recorded} named in {model_dir / MODEL_FILE} was recorded "
                           f"relative to the folder training started from and is not found from here: give "
                           f"--{side} (it is stored as an absolute path from then on)")


@dataclass(frozen=True)
class SessionPlan:
    """What a training session will use, decided before anything is built or written."""

    folder: ModelFolder
    config: TrainConfig
    requested: dict[str, Any]
    src: Path
    dst: Path
    creating: bool  # no model.json yet: the run creates the folder
    notes: list[str] = field(default_factory=list)


def merge_requested(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Options asked for across sessions: new ones win; a phase change drops the old phase's implied ones."""
    merged = dict(stored)
    if "phase" in new and new["phase"] != stored.get("phase"):
        for name in phase_defaults(new["phase"]):
            merged.pop(name, None)
    merged.update(new)
    return merged


def plan_session(path: Path, options: dict[str, Any], src: Path | None = None,
                 dst: Path | None = None) -> SessionPlan:
    """Validate a run's options and facesets against the folder at `path` (ConfigError or
    ModelFolderError on a problem); creates and imports nothing."""
    folder = open_model_folder(path)
    if not folder.exists and (src is None or dst is None):
        raise ModelFolderError(f"{path} is not a model folder yet: give --src and --dst facesets to create it")
    requested = merge_requested(folder.requested, options)
    config, notes = resolve_config(requested, folder.structure)
    facesets = []
    for side, given in (("src", src), ("dst", dst)):
        if given is not None:
            given = Path(given)
            if not given.is_file():
                raise ModelFolderError(f"no faceset at {given} (--{side}): give the .duckdb file 'curate scan' wrote")
            facesets.append(given.resolve())
        else:
            facesets.append(folder.faceset(side))
    return SessionPlan(folder=folder, config=config, requested=requested, src=facesets[0], dst=facesets[1],
                       creating=not folder.exists, notes=notes)


def write_model_file(path: Path, src: Path, dst: Path, requested: dict[str, Any], config: TrainConfig) -> None:
    """model.json (absolute faceset paths, options asked for, structure) and config.toml, atomically."""
    path = Path(path)
    kept = {name: value for name, value in requested.items() if name not in SESSION_OPTIONS}
    document = {"src": str(Path(src).resolve()), "dst": str(Path(dst).resolve()), "requested": kept,
                "structure": structure_of(config)}
    write_atomically(path / MODEL_FILE, json.dumps(document, indent=1, sort_keys=True), durable=True)
    write_atomically(path / CONFIG_FILE, config_to_toml(config))


# -- one training session per folder -----------------------------------------------------------

TRAINING_LOCK = ".training.lock"


@dataclass
class TrainingLock:
    """A model folder's exclusive training lock, held for a session's life. The operating system lets
    it go when the process ends however it ends, so a killed run never leaves a stale lock."""

    path: Path
    handle: Any

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file drops the lock
            self.handle = None


def lock_for_training(model_dir: Path) -> TrainingLock:
    """Take `model_dir`'s training lock, or say which process trains it. The trainer opens its history
    file only while it writes (so others can read a model while it trains), so DuckDB's own lock no
    longer keeps a second trainer out: this does."""
    path = Path(model_dir) / TRAINING_LOCK
    handle = open(path, "a+", encoding="utf-8")  # never truncated before the lock is ours: the holder's pid stays
    try:
        _lock_exclusively(handle)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise ModelFolderError(f"{model_dir} is being trained by {who}: one training session per model folder; "
                               "stop it (Ctrl-C saves first) or wait for it, then run this again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return TrainingLock(path, handle)


def _lock_exclusively(handle: Any) -> None:
    """A non-blocking exclusive lock on an open file; OSError when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
