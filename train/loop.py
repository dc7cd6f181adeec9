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

from curate.errors import FacesmithError
from curate.fileio import write_atomically
from train.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from train.checkpoint_guard import read_model_file
from train.collapse import CollapseVerdict, check_collapse
from train.config import (
    PHASES,
    TrainConfig,
    config_to_toml,
    phase_defaults,
    resolve_config,
    structure_of,
)
from train.device import TrainDevice, select_device
from train.distribute import WorkerRole, check_batch_split, workers_agree
from train.faceset_data import (
    CuratedFace,
    FaceArrays,
    holdout_ids,
    load_face_arrays,
    read_curated_faces,
)
from train.history import HistoryRow, ModelHistory
from train.plateau import PlateauVerdict, detect_plateau, next_phase
from train.preview import render_preview, write_png_atomically
from train.sampler import BatchStream, SamplerSettings, SideSampler

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"  # where the faceset paths and requested options of a model live
PREVIEW_DIR = "previews"
TENSORBOARD_DIR = "tensorboard"
HISTORY_FLUSH_EVERY = 100
RECENT_WINDOW = 200  # iterations of loss the collapse check compares against
MAX_ROLLBACKS_IN_A_ROW = 3
# Options that describe this run's machines rather than the model: model.json never carries them over
# (a later one-process command such as `merge check` must not try to join a multi-worker cluster).
SESSION_OPTIONS = ("strategy",)


class TrainingError(FacesmithError):
    """Training cannot start or cannot go on (no faces, repeated collapse, a mismatched model)."""


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

def _read_model_file(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / MODEL_FILE
    if not path.is_file():
        return None
    return read_model_file(path)


def _write_model_file(session: TrainSession) -> None:
    requested = {name: value for name, value in session.requested.items() if name not in SESSION_OPTIONS}
    document = {"src": str(session.src_database), "dst": str(session.dst_database),
                "requested": requested, "structure": structure_of(session.config)}
    write_atomically(session.model_dir / MODEL_FILE, json.dumps(document, indent=1, sort_keys=True),
                     durable=True)
    write_atomically(session.model_dir / "config.toml", config_to_toml(session.config))


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


def merge_requested(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Options asked for across sessions: new ones win; a phase change drops the old phase's implied ones."""
    merged = dict(stored)
    if "phase" in new and new["phase"] != stored.get("phase"):
        for name in phase_defaults(new["phase"]):
            merged.pop(name, None)
    merged.update(new)
    return merged


def open_session(model_dir: Path, options: dict[str, Any], src_database: Path | None = None,
                 dst_database: Path | None = None) -> TrainSession:
    """Create a model folder, or resume the one at `model_dir` from its newest loadable checkpoint."""
    from train.step import SAEHDTrainer

    model_dir = Path(model_dir)
    stored = _read_model_file(model_dir)
    if stored is None and (src_database is None or dst_database is None):
        raise TrainingError(f"{model_dir} is not a model folder yet: give --src and --dst facesets to "
                            "create it")
    requested = merge_requested(stored["requested"] if stored else {}, options)
    config, notes = resolve_config(requested, stored["structure"] if stored else None)
    src_database = Path(src_database or stored["src"])
    dst_database = Path(dst_database or stored["dst"])
    device = select_device(config.device, config.mixed_precision, config.strategy)
    check_batch_split(config.batch_size, device.replicas)
    if device.role.worker_count > 1 and not workers_agree(device.strategy, _lockstep_fingerprint(config)):
        raise TrainingError("the workers of this cluster resolved different training options: start every "
                            "worker with the same options (a worker that can read the model folder takes "
                            "the chief's model.json, one that cannot needs every option given again)")
    scratch = not device.role.is_chief
    if scratch:
        model_dir = _worker_scratch_folder(model_dir, device.role, notes)
    model_dir.mkdir(parents=True, exist_ok=True)
    history = ModelHistory(model_dir)
    try:
        src_all = read_curated_faces(src_database, config.use_selection)
        dst_all = read_curated_faces(dst_database, config.use_selection, role="dst")
        src_train, src_validation = _split_faces(history, "src", src_all, config.validation_share, config.seed)
        dst_train, dst_validation = _split_faces(history, "dst", dst_all, config.validation_share,
                                                 config.seed + 1)
        workers = config.sampler_workers or 2
        src_faces = load_face_arrays(src_train, config.face_type, config.resolution, workers)
        dst_faces = load_face_arrays(dst_train, config.face_type, config.resolution, workers)
        trainer = SAEHDTrainer(config, device.compute_dtype, device.strategy)
        iteration, salt = 0, 0
        if list_checkpoints(model_dir):
            checkpoint = load_checkpoint(model_dir, expected=_expected_shapes(trainer))
            trainer.load_arrays(checkpoint.arrays)
            iteration, salt = checkpoint.step, int(checkpoint.state.get("salt", 0))
            if checkpoint.state.get("config", {}).get("pretrain") and not config.pretrain:
                trainer.model.reinitialise_inters()
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
        elif stored is None:
            notes.append("new model: a pretrained model (--pretrain on a generic faceset) converges faster")
        if device.role.worker_count > 1:
            iteration, salt = trainer.adopt_first_replica_state([iteration, salt])
    except BaseException:
        history.close()
        if scratch:
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    session = TrainSession(model_dir=model_dir, config=config, requested=requested, device=device,
                           trainer=trainer, history=history, src_faces=src_faces, dst_faces=dst_faces,
                           src_validation=src_validation, dst_validation=dst_validation, iteration=iteration,
                           salt=salt, notes=notes, src_database=src_database, dst_database=dst_database,
                           best_iteration=_stored_best(history), scratch=scratch)
    _write_model_file(session)
    return session


def _expected_shapes(trainer: Any) -> dict[str, tuple[int, ...]]:
    """What a checkpoint of this model must hold: every array's name and shape."""
    return {name: tuple(array.shape) for name, array in trainer.state_arrays().items()}


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
    """Checkpoint the session at its current iteration (history flushed by the caller first)."""
    state = {"config": session.config.option_values(), "salt": session.salt,
             "phase": session.config.phase, "saved_at": datetime.now(timezone.utc).isoformat(),
             "device": session.device.description,
             "losses": None if losses is None else {"src": losses[0], "dst": losses[1]}}
    pinned = frozenset({session.best_iteration}) if session.best_iteration else frozenset()
    path = save_checkpoint(session.model_dir, session.iteration, session.trainer.state_arrays(), state,
                           keep=session.config.backups_kept, pinned=pinned)
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
    checkpoint = load_checkpoint(session.model_dir, steps[min(depth, len(steps) - 1)] if steps else None,
                                 expected=_expected_shapes(session.trainer))
    session.trainer.load_arrays(checkpoint.arrays)
    session.iteration = checkpoint.step
    if session.device.role.worker_count > 1:  # a scratch folder's checkpoints may differ: the chief's win
        session.iteration, session.salt = session.trainer.adopt_first_replica_state(
            [session.iteration, session.salt])
    session.history.truncate_after(session.iteration)
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
    """TensorBoard scalars and preview images (created lazily; TensorFlow is already imported)."""

    folder: Path
    writer: Any = None

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        import tensorflow as tf

        if self.writer is None:
            self.writer = tf.summary.create_file_writer(str(self.folder))
        with self.writer.as_default(step=iteration):
            for name, value in values.items():
                if math.isfinite(value):
                    tf.summary.scalar(name, value)

    def image(self, iteration: int, name: str, image_bgr: np.ndarray) -> None:
        import tensorflow as tf

        if self.writer is None:
            self.writer = tf.summary.create_file_writer(str(self.folder))
        with self.writer.as_default(step=iteration):
            tf.summary.image(name, image_bgr[None, :, :, ::-1].astype(np.float32) / 255.0)

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

    def checkpoint() -> None:
        flush()
        save(session, last)

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
                recent.clear()
                stream.close()
                src_sampler, dst_sampler = session.samplers()
                stream = BatchStream(src_sampler, dst_sampler, session.sampler_settings(),
                                     session.iteration + 1, workers=session.config.sampler_workers)
                continue
            session.iteration = iteration
            last = (result.src_loss, result.dst_loss)
            recent.append(last)
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
                tensorboard.image(iteration, "preview", _read_png(write_preview(session)))
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
                            image = _read_png(path)
                            if image is not None:
                                tensorboard.image(iteration, tag, image)
                        if on_evaluation is not None:
                            on_evaluation(evaluator.name, iteration, evaluation)
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


def _read_png(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def close_session(session: TrainSession) -> None:
    session.history.close()
    if session.scratch:
        shutil.rmtree(session.model_dir, ignore_errors=True)


__all__ = ["PHASES", "CheckpointError", "EvaluationOutcome", "Evaluator", "TrainOutcome", "TrainSession", "TrainingError",
           "change_phase", "close_session", "next_phase", "open_session", "record_evaluation", "rollback", "run_training",
           "save"]
