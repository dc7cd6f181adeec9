"""The training loop: create or resume a model folder, step, log, preview, save, advise, roll back.

Reads top to bottom: `open_session` builds everything a run needs (config, faces, networks, the
restored checkpoint); `run_training` loops one compiled step at a time, with each periodic job
(history flush, preview, checkpoint, plateau check, evaluators) on its own named interval.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from train.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from train.collapse import CollapseVerdict, check_collapse
from train.config import PHASES, TrainConfig, resolve_config, structure_of
from train.device import TrainDevice, select_device
from train.distribute import WorkerRole, check_batch_split, workers_agree
from train.errors import TrainingError
from train.face_losses import FaceLossTracker
from train.faceset_data import (
    CuratedFace,
    FaceArrays,
    holdout_ids,
    load_face_arrays,
    read_curated_faces,
)
from train.history import HistoryRow, ModelHistory
from train.model_folder import (
    PREVIEW_DIR,
    TENSORBOARD_DIR,
    TrainingLock,
    lock_for_training,
    merge_requested,
    plan_session,
    write_model_file,
)
from train.plateau import PlateauVerdict, detect_plateau, next_phase
from train.preview import render_preview, write_png_atomically
from train.sampler import BatchStream, SamplerSettings, SideSampler

log = logging.getLogger(__name__)

HISTORY_FLUSH_EVERY = 100
RECENT_WINDOW = 200  # iterations of loss the collapse check compares against
MAX_ROLLBACKS_IN_A_ROW = 3


@dataclass(frozen=True)
class EvaluationOutcome:
    """What a periodic evaluator tells the loop."""

    summary: str  # one line for the log (and the terminal, through run_training's on_evaluation)
    best_iteration: int | None = None  # the best iteration so far: its checkpoint is kept
    flag: str | None = None  # a warning to record (e.g. overtraining), shown by `train status`
    scalars: dict[str, float] = field(default_factory=dict)  # TensorBoard scalars, by tag
    images: dict[str, Path] = field(default_factory=dict)  # TensorBoard images (PNG files), by tag


class Evaluator(Protocol):
    """A periodic job the loop runs (e.g. merge checks); the trainer knows nothing of what it does."""

    name: str
    every: int

    def __call__(self, session: TrainSession, iteration: int) -> EvaluationOutcome | None:
        """Run at `iteration` (the model as it is now) and report."""


@dataclass
class TrainSession:
    """Everything one run of the trainer holds; built by `open_session`."""

    model_dir: Path
    config: TrainConfig
    requested: dict[str, Any]  # options the user set explicitly (TOML and flags), across sessions
    device: TrainDevice
    trainer: Any  # train.step.SAEHDTrainer (imported lazily: it imports TensorFlow)
    history: ModelHistory
    src_faces: FaceArrays
    dst_faces: FaceArrays
    src_validation: list[str]
    dst_validation: list[str]
    iteration: int
    salt: int
    notes: list[str] = field(default_factory=list)
    src_database: Path | None = None
    dst_database: Path | None = None
    best_iteration: int | None = None
    scratch: bool = False  # a non-chief worker's temporary model_dir, deleted by close_session
    face_losses: FaceLossTracker | None = None  # each face's running loss; stored with every checkpoint
    lock: TrainingLock | None = None  # the folder's training lock (one session per folder), held until closed

    def sampler_settings(self) -> SamplerSettings:
        config = self.config
        return SamplerSettings(batch_size=config.batch_size, random_warp=bool(config.random_warp),
                               src_flip=config.random_src_flip, dst_flip=config.random_dst_flip,
                               hsv_power=config.random_hsv_power, ct_mode=config.ct_mode,
                               uniform_yaw=config.uniform_yaw, blur_out_mask=config.blur_out_mask,
                               seed=config.seed, salt=self.salt)

    def samplers(self) -> tuple[SideSampler, SideSampler]:
        return (SideSampler("src", self.src_faces, self.config.random_src_flip, self.config.uniform_yaw),
                SideSampler("dst", self.dst_faces, self.config.random_dst_flip, self.config.uniform_yaw))


@dataclass(frozen=True)
class TrainOutcome:
    """How a run ended."""

    iteration: int
    phase: str
    reason: str  # target-reached, stopped, iterations-done
    iterations_run: int
    seconds: float
    rollbacks: int
    last_src_loss: float
    last_dst_loss: float
    plateau: PlateauVerdict | None


# -- opening a model folder ------------------------------------------------------------------------

def _split_faces(history: ModelHistory, side: str, faces: list[CuratedFace], share: float,
                 seed: int) -> tuple[list[CuratedFace], list[str]]:
    """(training faces, validation ids) — recorded at creation, read back afterwards."""
    recorded = history.split(side)
    if recorded is None:
        held = holdout_ids([face.face_id for face in faces], share, seed)
        train_ids = [face.face_id for face in faces if face.face_id not in held]
        history.record_faces(side, train_ids, sorted(held))
        recorded = (train_ids, sorted(held))
    train_ids = set(recorded[0])
    training = [face for face in faces if face.face_id in train_ids]
    if not training:
        raise TrainingError(f"no {side} faces left to train on: the faceset's faces do not match the "
                            f"model's recorded split (was the faceset re-scanned into new face ids?)")
    return training, recorded[1]


def open_session(model_dir: Path, options: dict[str, Any], src_database: Path | None = None,
                 dst_database: Path | None = None) -> TrainSession:
    """Create a model folder, or resume the one at `model_dir` from its newest loadable checkpoint.

    Options, structure and facesets are validated first (`plan_session`, no framework import); a model
    folder this call creates is removed again if anything fails before the session is open.
    """
    plan = plan_session(Path(model_dir), options, src_database, dst_database)
    config, notes = plan.config, list(plan.notes)
    src_all = read_curated_faces(plan.src, config.use_selection)
    dst_all = read_curated_faces(plan.dst, config.use_selection, role="dst")
    device = select_device(config.backend, config.device, config.precision, config.strategy)
    from train.step import SAEHDTrainer

    model_dir = plan.folder.path
    check_batch_split(config.batch_size, device.replicas)
    notes.extend(_memory_preflight(config, device))
    if device.role.worker_count > 1 and not workers_agree(device, _lockstep_fingerprint(config)):
        raise TrainingError("the workers of this cluster resolved different training options: start every "
                            "worker with the same options (a worker that can read the model folder takes "
                            "the chief's model.json, one that cannot needs every option given again)")
    scratch = not device.role.is_chief
    if scratch:
        model_dir = _worker_scratch_folder(model_dir, device.role, notes)
    made = _make_folder(model_dir) if plan.creating and not scratch else None
    lock: TrainingLock | None = None
    history: ModelHistory | None = None
    try:
        lock = lock_for_training(model_dir)
        history = ModelHistory(model_dir)
        src_train, src_validation = _split_faces(history, "src", src_all, config.validation_share, config.seed)
        dst_train, dst_validation = _split_faces(history, "dst", dst_all, config.validation_share,
                                                 config.seed + 1)
        workers = config.sampler_workers or 2
        src_faces = load_face_arrays(src_train, config.face_type, config.resolution, workers)
        dst_faces = load_face_arrays(dst_train, config.face_type, config.resolution, workers)
        trainer = SAEHDTrainer(config, device.compute_dtype, device.strategy)
        iteration, salt = 0, 0
        if list_checkpoints(model_dir):
            checkpoint = restore_checkpoint(trainer, model_dir)
            iteration, salt = checkpoint.step, int(checkpoint.state.get("salt", 0))
            if checkpoint.state.get("config", {}).get("pretrain") and not config.pretrain:
                trainer.reinitialise_inters()
                archive = _archive_pretraining(model_dir, iteration)
                notes.append(f"pretraining ended at {iteration}: iterations reset to 0, the inter "
                             f"blocks re-initialised, pretraining checkpoints kept in {archive.name}")
                history.log_event(iteration, "phase", "pretrain off: iteration count reset")
                history.archive_history(f"pretrain_{iteration}")
                iteration = 0
            dropped = history.truncate_after(iteration)
            if dropped:
                notes.append(f"resumed from the checkpoint at {iteration}; {dropped} history rows after "
                             "it were dropped")
        elif plan.creating:
            notes.append("new model: a pretrained model (--pretrain on a generic faceset) converges faster")
        if device.role.worker_count > 1:
            iteration, salt = trainer.adopt_first_replica_state([iteration, salt])
        face_losses = FaceLossTracker(src_faces.face_ids, dst_faces.face_ids)
        face_losses.restore(history.face_losses(iteration))  # the snapshot of the checkpoint resumed from
        history.record_facesets(plan.src, plan.dst)
        session = TrainSession(model_dir=model_dir, config=config, requested=plan.requested, device=device,
                               trainer=trainer, history=history, src_faces=src_faces, dst_faces=dst_faces,
                               src_validation=src_validation, dst_validation=dst_validation,
                               iteration=iteration, salt=salt, notes=notes, src_database=plan.src,
                               dst_database=plan.dst, best_iteration=_stored_best(history), scratch=scratch,
                               face_losses=face_losses, lock=lock)
        _write_model_file(session)
    except BaseException:
        if history is not None:
            history.close()
        if lock is not None:
            lock.release()
        if scratch:
            shutil.rmtree(model_dir, ignore_errors=True)
        elif made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    history.release()  # opened again at the next write (see run_training)
    return session


def _memory_preflight(config: TrainConfig, device: TrainDevice) -> list[str]:
    """A warning when the plan says this batch will not fit the GPU (`facesmith train plan`)."""
    from train.device import device_memory
    from train.plan import check_fits, plan_memory

    memory = device_memory(device)
    if memory is None:
        return []
    share = config.batch_size // max(device.replicas, 1)
    warning = check_fits(plan_memory(config, device.backend, device.compute_dtype, "gpu", share), memory)
    return [f"memory plan: {warning} per device (facesmith train plan --memory-gib)"] if warning else []


def _make_folder(model_dir: Path) -> Path | None:
    """Create `model_dir` (and missing parents); returns the topmost folder created, None if it existed."""
    top = None
    for folder in [model_dir, *model_dir.parents]:
        if folder.exists():
            break
        top = folder
    model_dir.mkdir(parents=True, exist_ok=True)
    return top


def restore_checkpoint(trainer: Any, model_dir: Path, step: int | None = None) -> Checkpoint:
    """Load the newest (or `step`) checkpoint of `model_dir` into `trainer`: the one place a session's
    weights and optimiser state come from disk (resume and rollback), behind the checkpoint guard
    (train.checkpoint_guard: checksums, finite numbers, this model's names and shapes)."""
    checkpoint = load_checkpoint(model_dir, step, expected=_expected_shapes(trainer))
    trainer.load_arrays(checkpoint.arrays)
    return checkpoint


def _write_model_file(session: TrainSession) -> None:
    write_model_file(session.model_dir, session.src_database, session.dst_database, session.requested,
                     session.config)


def _expected_shapes(trainer: Any) -> dict[str, tuple[int, ...]]:
    """What a checkpoint of this model must hold: every array's name and shape."""
    return {name: tuple(variable.shape) for name, variable in trainer.named_state().items()}


def _lockstep_fingerprint(config: TrainConfig) -> int:
    """20 bits of the options every worker must share to build the same networks and steps."""
    shared = {name: value for name, value in config.option_values().items() if name != "sampler_workers"}
    return zlib.crc32(json.dumps(shared, sort_keys=True).encode()) & 0xFFFFF


def _worker_scratch_folder(model_dir: Path, role: WorkerRole, notes: list[str]) -> Path:
    """Where a non-chief worker of a multi-worker run writes: a temporary folder of its own.

    Only the chief writes the model folder. The other workers still run the whole loop (each step's
    collectives need every worker, in lock-step) and so still save checkpoints, previews and history,
    into a scratch folder deleted when the session closes: the pattern of TensorFlow's multi-worker
    guide. They read the chief's model.json (same options, same structure) and, once the networks
    exist, adopt the chief's weights, slots and iteration (`adopt_first_replica_state`).
    """
    scratch = Path(tempfile.mkdtemp(prefix=f"facesmith-{model_dir.name}-worker{role.task_index}-"))
    notes.append(f"worker {role.task_index} of {role.worker_count}: the chief writes {model_dir}; this "
                 f"worker writes a scratch folder, {scratch}, deleted at the end")
    return scratch


def _stored_best(history: ModelHistory) -> int | None:
    value = history.meta("best_iteration")
    return int(value) if value else None


def _archive_pretraining(model_dir: Path, iteration: int) -> Path:
    """Move the pretraining checkpoints aside (kept, never deleted) so the new count starts clean."""
    archive = model_dir / f"pretrain_{iteration}"
    archive.mkdir()
    (model_dir / CHECKPOINT_DIR).rename(archive / CHECKPOINT_DIR)
    return archive


# -- periodic jobs ------------------------------------------------------------------------------

def save(session: TrainSession, losses: tuple[float, float] | None = None) -> Path:
    """Checkpoint the session at its current iteration (history flushed by the caller first).

    The per-face losses go into the history first, as the snapshot of this iteration: if the process
    dies before the checkpoint is complete, the resume goes back to the previous checkpoint and its
    own snapshot (the newer one is dropped with the history past it).
    """
    if session.face_losses is not None:
        session.history.save_face_losses(session.iteration, session.face_losses.rows())
    state = {"config": session.config.option_values(), "salt": session.salt,
             "phase": session.config.phase, "saved_at": datetime.now(timezone.utc).isoformat(),
             "device": session.device.description,
             "losses": None if losses is None else {"src": losses[0], "dst": losses[1]}}
    pinned = frozenset({session.best_iteration}) if session.best_iteration else frozenset()
    path = save_checkpoint(session.model_dir, session.iteration, session.trainer.state_arrays(), state,
                           keep=session.config.backups_kept, pinned=pinned)
    session.history.keep_face_losses(list_checkpoints(session.model_dir))
    session.history.log_event(session.iteration, "checkpoint", path.name)
    _write_model_file(session)
    return path


def preview_faces(session: TrainSession, rows: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A fixed set of un-augmented src and dst faces (the same every session, chosen by the seed)."""
    count = min(rows, session.config.batch_size, 800 // session.config.resolution,
                len(session.src_faces), len(session.dst_faces))
    rng = np.random.default_rng([session.config.seed, 7])
    src_rows = np.sort(rng.choice(len(session.src_faces), count, replace=False))
    dst_rows = np.sort(rng.choice(len(session.dst_faces), count, replace=False))
    src, dst = session.samplers()
    return src.plain(src_rows)[0], dst.plain(dst_rows)[0]


def write_preview(session: TrainSession) -> Path:
    """previews/preview_NNNNNNN.png and previews/last.png: faces, reconstructions, swaps, loss graph."""
    src, dst = preview_faces(session)
    forward = session.trainer.predict(src, dst)
    iterations, losses, _ = session.history.losses()
    image = render_preview({"src": src, "src_src": forward.src_src, "dst": dst, "dst_dst": forward.dst_dst,
                            "src_dst": forward.src_dst}, iterations, losses, session.iteration)
    folder = session.model_dir / PREVIEW_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"preview_{session.iteration:07d}.png"
    write_png_atomically(path, image)
    write_png_atomically(folder / "last.png", image)
    return path


def plateau_verdict(session: TrainSession) -> PlateauVerdict:
    phase = session.config.phase
    iterations, losses, _ = session.history.losses(phase=phase)
    return detect_plateau(iterations, losses, phase, session.config.plateau_min_iterations,
                          threshold=session.config.plateau_threshold,
                          phase_start=session.history.phase_start(phase))


def change_phase(session: TrainSession, phase: str, reason: str) -> None:
    """Move to `phase` now: the phase's defaults apply unless the user set those options."""
    requested = merge_requested(session.requested, {"phase": phase})
    config, notes = resolve_config(requested, structure_of(session.config))
    session.requested, session.config = requested, config
    session.notes.extend(notes)
    session.trainer.reconfigure(config)
    session.history.log_event(session.iteration, "phase", f"{phase}: {reason}")


def rollback(session: TrainSession, verdict: CollapseVerdict, depth: int = 0) -> None:
    """Restore a recent checkpoint, note why, and continue on fresh batches (and clipgrad if set).

    `depth` 0 is the newest checkpoint; a collapse right after a rollback reaches one further back,
    in case the newest checkpoint already carried the seed of the collapse.
    """
    steps = list_checkpoints(session.model_dir)
    checkpoint = restore_checkpoint(session.trainer, session.model_dir,
                                    steps[min(depth, len(steps) - 1)] if steps else None)
    session.iteration = checkpoint.step
    if session.device.role.worker_count > 1:  # a scratch folder's checkpoints may differ: the chief's win
        session.iteration, session.salt = session.trainer.adopt_first_replica_state(
            [session.iteration, session.salt])
    session.history.truncate_after(session.iteration)
    if session.face_losses is not None:
        session.face_losses.restore(session.history.face_losses(session.iteration))
    session.salt += 1
    detail = f"{verdict.reason}: {verdict.detail}; rolled back to {session.iteration}"
    if session.config.clipgrad_on_collapse and not session.config.clipgrad:
        session.requested = dict(session.requested, clipgrad=True)
        session.config = dataclasses.replace(session.config, clipgrad=True)
        session.trainer.reconfigure(session.config)
        detail += ", clipgrad on"
    session.history.log_event(session.iteration, "rollback", detail)
    log.warning("collapse at %d (%s); %s", verdict.iteration, verdict.reason, detail)


# -- the loop ---------------------------------------------------------------------------------------

@dataclass
class _Tensorboard:
    """TensorBoard scalars and preview images, written with tensorboard's own event writer (no
    framework needed, so every backend logs the same files); off when tensorboard is not installed."""

    folder: Path
    writer: Any = None

    def _write(self, iteration: int, values: list[Any]) -> None:
        import sys
        import types

        if "tensorflow" not in sys.modules:
            # tensorboard's writer imports TensorFlow for its file I/O when it is installed, unless its
            # "notf" marker module exists: a JAX or torch run must not start TensorFlow for a log file.
            sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            return
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = EventFileWriter(str(self.folder))
        summary = summary_pb2.Summary(value=values)
        self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=iteration, summary=summary))

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        try:
            from tensorboard.compat.proto import summary_pb2
        except ImportError:
            return
        self._write(iteration, [summary_pb2.Summary.Value(tag=name, simple_value=float(value))
                                for name, value in values.items() if math.isfinite(value)])

    def image(self, iteration: int, name: str, png_path: Path) -> None:
        try:
            from tensorboard.compat.proto import summary_pb2
        except ImportError:
            return
        import cv2

        image = cv2.imread(str(png_path), cv2.IMREAD_COLOR)
        encoded = summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1], colorspace=3,
                                            encoded_image_string=png_path.read_bytes())
        self._write(iteration, [summary_pb2.Summary.Value(tag=name, image=encoded)])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


StepHook = Callable[[TrainSession, int], None]


def run_training(session: TrainSession, max_iterations: int | None = None,
                 evaluators: tuple[Evaluator, ...] = (), should_stop: Callable[[], bool] = lambda: False,
                 on_iteration: Callable[[TrainSession, HistoryRow], None] | None = None,
                 before_step: StepHook | None = None,
                 on_evaluation: Callable[[str, int, EvaluationOutcome], None] | None = None) -> TrainOutcome:
    """Train until target_iter, `max_iterations` more steps, or `should_stop()`; save on the way out.

    `before_step(session, iteration)` runs before each step (tests use it to inject faults);
    `on_evaluation(name, iteration, outcome)` after each evaluator's report (the CLI prints it).
    """
    config = session.config
    session_id = session.history.start_session(session.iteration, session.device.description,
                                               config.option_values())
    # Let go of the file before the first step, which builds and compiles (seconds, more on a busy
    # machine): held through it, `train status` run meanwhile waited out its 5 s and failed.
    session.history.release()
    tensorboard = _Tensorboard(session.model_dir / TENSORBOARD_DIR)
    started = time.perf_counter()
    first_iteration = session.iteration
    pending: list[HistoryRow] = []
    recent: deque[tuple[float, float]] = deque(maxlen=RECENT_WINDOW)
    rollbacks = rollbacks_in_a_row = 0
    last = (math.nan, math.nan)
    plateau: PlateauVerdict | None = None
    reason = "stopped"

    def flush() -> None:
        session.history.append(pending)
        pending.clear()
        session.history.release()  # before a preview or a check, not after it: readers get the file meanwhile

    def checkpoint() -> None:
        flush()
        save(session, last)
        session.history.release()  # save wrote the snapshot and the event: readers may open it again

    if not list_checkpoints(session.model_dir):
        checkpoint()  # iteration 0: there is always something to roll back to
    src_sampler, dst_sampler = session.samplers()
    stream = BatchStream(src_sampler, dst_sampler, session.sampler_settings(), session.iteration + 1,
                         workers=config.sampler_workers)
    try:
        while True:
            config = session.config
            if config.target_iter and session.iteration >= config.target_iter:
                reason = "target-reached"
                break
            if max_iterations is not None and session.iteration - first_iteration >= max_iterations:
                reason = "iterations-done"
                break
            if should_stop():
                break
            step_started = time.perf_counter()
            batch = next(stream)
            iteration = session.iteration + 1
            if before_step is not None:
                before_step(session, iteration)
            result = session.trainer.train_step(batch.tensors(), iteration, config.seed * 1000 + session.salt)
            milliseconds = (time.perf_counter() - step_started) * 1000.0
            verdict = check_collapse(iteration, result.src_loss, result.dst_loss,
                                     np.array(recent).reshape(-1, 2),
                                     result.output_std if len(recent) >= RECENT_WINDOW else None,
                                     spike_factor=config.spike_factor)
            if verdict is not None:
                rollbacks += 1
                rollbacks_in_a_row += 1
                if rollbacks_in_a_row > MAX_ROLLBACKS_IN_A_ROW:
                    raise TrainingError(f"training collapsed {rollbacks_in_a_row} times in a row "
                                        f"({verdict.detail}); lower the learning rate or the style/GAN "
                                        "powers, or check the faceset")
                pending.clear()
                rollback(session, verdict, depth=rollbacks_in_a_row - 1)
                session.history.release()  # as at the end of an iteration (this one is skipped)
                recent.clear()
                stream.close()
                src_sampler, dst_sampler = session.samplers()
                stream = BatchStream(src_sampler, dst_sampler, session.sampler_settings(),
                                     session.iteration + 1, workers=session.config.sampler_workers)
                continue
            session.iteration = iteration
            last = (result.src_loss, result.dst_loss)
            recent.append(last)
            if session.face_losses is not None:
                session.face_losses.update(batch.src_indices, batch.dst_indices, result.src_sample_losses,
                                           result.dst_sample_losses, iteration)
            if iteration % config.log_every == 0:
                row = HistoryRow(iteration=iteration, wall_time=datetime.now(timezone.utc), ms=milliseconds,
                                 src_loss=result.src_loss, dst_loss=result.dst_loss, phase=config.phase,
                                 learning_rate=result.learning_rate, session_id=session_id)
                pending.append(row)
                if on_iteration is not None:
                    on_iteration(session, row)
                tensorboard.scalars(iteration, {"loss/src": result.src_loss, "loss/dst": result.dst_loss,
                                                "ms_per_iteration": milliseconds,
                                                "learning_rate": result.learning_rate})
            if len(pending) >= HISTORY_FLUSH_EVERY:
                flush()
            if iteration % config.preview_every == 0:
                flush()
                tensorboard.image(iteration, "preview", write_preview(session))
            if iteration % config.save_every == 0:
                checkpoint()
                rollbacks_in_a_row = 0
                plateau = plateau_verdict(session)
                if plateau.plateaued:
                    session.history.log_event(iteration, "plateau", plateau.advice)
                    if config.auto_phases and plateau.next_phase:
                        change_phase(session, plateau.next_phase, plateau.advice)
                        stream.close()
                        src_sampler, dst_sampler = session.samplers()
                        stream = BatchStream(src_sampler, dst_sampler, session.sampler_settings(),
                                             session.iteration + 1, workers=session.config.sampler_workers)
            for evaluator in evaluators:
                if iteration % evaluator.every == 0:
                    flush()
                    evaluation = evaluator(session, iteration)
                    if evaluation is not None:
                        record_evaluation(session, evaluator.name, iteration, evaluation, checkpoint)
                        tensorboard.scalars(iteration, evaluation.scalars)
                        for tag, path in evaluation.images.items():
                            if Path(path).is_file():
                                tensorboard.image(iteration, tag, Path(path))
                        if on_evaluation is not None:
                            on_evaluation(evaluator.name, iteration, evaluation)
            # Let go of the history file between writes: `train status`, reports and the review app
            # read it while training goes on (a no-op when this iteration wrote nothing).
            session.history.release()
    finally:
        stream.close()
        try:
            if session.iteration != _latest_saved(session):
                checkpoint()
            else:
                flush()
        finally:
            tensorboard.close()
    return TrainOutcome(iteration=session.iteration, phase=session.config.phase, reason=reason,
                        iterations_run=session.iteration - first_iteration,
                        seconds=time.perf_counter() - started, rollbacks=rollbacks,
                        last_src_loss=last[0], last_dst_loss=last[1],
                        plateau=plateau if plateau is not None else plateau_verdict(session))


def record_evaluation(session: TrainSession, name: str, iteration: int, evaluation: EvaluationOutcome,
                       checkpoint: Callable[[], None]) -> None:
    """Log an evaluator's report; keep the best iteration's checkpoint; record a new flag once."""
    log.info("%s at %d: %s", name, iteration, evaluation.summary)
    session.history.log_event(iteration, "evaluation", f"{name}: {evaluation.summary}")
    best = evaluation.best_iteration
    if best is not None:
        if best == iteration and best not in list_checkpoints(session.model_dir):
            session.best_iteration = best
            checkpoint()
        session.best_iteration = best
        session.history.set_meta("best_iteration", str(best))
    if evaluation.flag and session.history.meta("flag") != evaluation.flag:
        session.history.set_meta("flag", evaluation.flag)
        session.history.log_event(iteration, "flag", evaluation.flag)
    elif not evaluation.flag and session.history.meta("flag"):
        session.history.set_meta("flag", "")


def _latest_saved(session: TrainSession) -> int:
    steps = list_checkpoints(session.model_dir)
    return steps[0] if steps else -1


def close_session(session: TrainSession) -> None:
    session.history.close()
    if session.lock is not None:
        session.lock.release()
    if session.scratch:
        shutil.rmtree(session.model_dir, ignore_errors=True)


__all__ = ["PHASES", "CheckpointError", "EvaluationOutcome", "Evaluator", "TrainOutcome", "TrainSession", "TrainingError",
           "change_phase", "close_session", "next_phase", "open_session", "record_evaluation", "rollback", "run_training",
           "save"]
