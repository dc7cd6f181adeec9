"""Each face's running training loss, kept from the losses every step already returns, and `--exclude-hardest`.

Every train step reports each face's own loss (`StepResult.src_sample_losses`, row i = batch row i)
and every batch says which faces it holds (`Batch.src_indices`, rows of the session's FaceArrays).
`FaceLossTracker` folds them into a running loss per face id — no extra pass over any face — and the
loop stores it in the model's history with every checkpoint (`ModelHistory.save_face_losses`), so a
resume or a rollback continues from exactly the state its checkpoint had.

Why a moving average rather than a sum and a count: the model changes through training, and a mean
over the whole run would be dominated by the early iterations, when every face was hard; and with
uniform-yaw sampling faces are seen at very different rates, so whole-run means would compare faces
at different stages of training. A moving average over each face's own steps (decay
`FACE_LOSS_DECAY`, 0.9: about the last ten times the face was in a batch) follows what the model
makes of the face now and smooths the noise of random warp, flips and colour jitter. It is bias
corrected as Adam's moments are (an average started at zero, divided by 1 - decay^seen): the stored
value is the weighted mean of the face's own losses with weights decay^age, so a face seen only a few
times is not dominated by its first, untrained loss (starting the average at the first loss gives that
loss weight 0.9^(seen-1): still 59 % after six sightings). The count of times seen is kept beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.decisions import Decision, record_decisions
from curate.faceset import FacesetReader
from curate.training_loss import FaceLoss, FaceLosses, history_path, read_face_losses
from train.errors import TrainingError

FACE_LOSS_DECAY = 0.9
EXCLUDE_WHO = "train --exclude-hardest"


def folded(mean: float, seen: int, value: float, decay: float = FACE_LOSS_DECAY) -> float:
    """The bias-corrected moving average after one more loss `value`, from the average `mean` of
    `seen` earlier ones. Computed from the stored (mean, seen) alone, so a resumed run folds
    exactly as an uninterrupted one does."""
    if seen == 0:
        return value
    kept = decay ** seen
    return (decay * mean * (1.0 - kept) + (1.0 - decay) * value) / (1.0 - kept * decay)


class SideLosses:
    """One side's running losses, by row of the session's FaceArrays; faces of earlier sessions that
    this session does not train (excluded since, say) are carried over unchanged."""

    def __init__(self, side: str, face_ids: Sequence[str], decay: float = FACE_LOSS_DECAY) -> None:
        self.side = side
        self.face_ids = list(face_ids)
        self.decay = decay
        self._row = {face_id: row for row, face_id in enumerate(self.face_ids)}
        count = len(self.face_ids)
        self.loss = np.zeros(count, np.float64)  # (N,) running loss, valid where seen > 0
        self.seen = np.zeros(count, np.int64)  # (N,)
        self.last_loss = np.zeros(count, np.float64)  # (N,)
        self.last_iteration = np.zeros(count, np.int64)  # (N,)
        self.carried: dict[str, FaceLoss] = {}

    def update(self, rows: np.ndarray, losses: np.ndarray, iteration: int) -> None:
        """Fold one step's losses in: `rows` (B,) FaceArrays rows, `losses` (B,) their losses.

        One face at a time: a batch that crosses an epoch boundary can hold a face twice, and each of
        its losses counts once, in batch order (a vectorised assignment would keep only one).
        """
        for row, value in zip(rows.tolist(), losses.tolist()):
            if not math.isfinite(value):
                continue
            self.loss[row] = folded(float(self.loss[row]), int(self.seen[row]), value, self.decay)
            self.seen[row] += 1
            self.last_loss[row] = value
            self.last_iteration[row] = iteration

    def rows(self) -> list[FaceLoss]:
        """Every face seen so far (this session's and carried ones), in face id order."""
        faces = dict(self.carried)
        for row in np.flatnonzero(self.seen):
            face_id = self.face_ids[row]
            faces[face_id] = FaceLoss(self.side, face_id, float(self.loss[row]), int(self.seen[row]),
                                      float(self.last_loss[row]), int(self.last_iteration[row]))
        return [faces[face_id] for face_id in sorted(faces)]

    def restore(self, stored: Sequence[FaceLoss]) -> None:
        """Back to a stored snapshot (this side's rows of it); faces it lacks start unseen."""
        self.loss[:] = 0.0
        self.seen[:] = 0
        self.last_loss[:] = 0.0
        self.last_iteration[:] = 0
        self.carried = {}
        for face in stored:
            row = self._row.get(face.face_id)
            if row is None:
                self.carried[face.face_id] = face
                continue
            self.loss[row], self.seen[row] = face.loss, face.seen
            self.last_loss[row], self.last_iteration[row] = face.last_loss, face.last_iteration


class FaceLossTracker:
    """The running loss of every src and dst face of a session."""

    def __init__(self, src_face_ids: Sequence[str], dst_face_ids: Sequence[str],
                 decay: float = FACE_LOSS_DECAY) -> None:
        self.src = SideLosses("src", src_face_ids, decay)
        self.dst = SideLosses("dst", dst_face_ids, decay)

    def update(self, src_rows: np.ndarray, dst_rows: np.ndarray, src_losses: np.ndarray | None,
               dst_losses: np.ndarray | None, iteration: int) -> None:
        """One accepted step: the batch's FaceArrays rows per side and the step's per-face losses."""
        if src_losses is not None:
            self.src.update(np.asarray(src_rows), np.asarray(src_losses), iteration)
        if dst_losses is not None:
            self.dst.update(np.asarray(dst_rows), np.asarray(dst_losses), iteration)

    def rows(self) -> list[FaceLoss]:
        return self.src.rows() + self.dst.rows()

    def restore(self, stored: Sequence[FaceLoss]) -> None:
        self.src.restore([face for face in stored if face.side == "src"])
        self.dst.restore([face for face in stored if face.side == "dst"])


# -- --exclude-hardest ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HardestExclusion:
    """One src face `--exclude-hardest` took out of training, and why."""

    face_id: str
    rank: int  # 1 = the highest running loss among the faces that trained
    loss: float
    ratio: float  # loss over the median of the side
    seen: int
    why: str  # recorded with the decision

    def to_dict(self) -> dict:
        return {"face_id": self.face_id, "rank": self.rank, "loss": self.loss, "ratio": self.ratio,
                "seen": self.seen, "why": self.why}


def hardest_to_exclude(losses: FaceLosses, trainable: Sequence[str], count: int) -> list[HardestExclusion]:
    """The `count` faces of `trainable` with the highest running loss, each with its reason."""
    wanted = set(trainable)
    candidates = [face for face in losses.ranked() if face.face_id in wanted]
    median = losses.median or 0.0
    chosen = []
    for rank, face in enumerate(candidates[:count], start=1):
        ratio = face.loss / median if median else math.nan
        why = (f"hardest training loss: {face.loss:.4f} ({ratio:.2f}x the median), rank {rank} of "
               f"{len(candidates)} faces that trained, seen {face.seen} times, at iteration {losses.iteration} "
               f"of {losses.model_dir}")
        chosen.append(HardestExclusion(face.face_id, rank, face.loss, ratio, face.seen, why))
    return chosen


def exclude_hardest(model_dir: Path, src_database: Path, count: int, use_selection: bool = True,
                    who: str = EXCLUDE_WHO) -> list[HardestExclusion]:
    """Exclude the `count` src faces with the highest running loss from the src faceset, as decisions.

    Decisions (`curate.decisions`), not a session setting: every stage then honours them through the
    faceset reader (training, selection, export, merge checks, reports), the review app shows who
    excluded a face and why, and one keystroke there (include, or reset) undoes it. Only faces that
    still train (and have a training loss) are candidates; at least one of them must be left.
    """
    if count < 1:
        raise TrainingError("--exclude-hardest takes a number of faces, at least 1")
    if not history_path(model_dir).is_file():
        raise TrainingError(f"--exclude-hardest needs a model that has trained: {model_dir} has no training "
                            "history yet")
    losses = read_face_losses(model_dir, "src")
    if not losses.losses:
        raise TrainingError(f"{model_dir} has no per-face losses yet (they are stored with every checkpoint): "
                            "train it first, then --exclude-hardest")
    with FacesetReader(src_database) as reader:
        trainable = [face_id for face_id in reader.trainable_ids(use_selection) if face_id in losses.losses]
    if not trainable:
        raise TrainingError(f"none of the faces of {src_database} that train has a training loss in {model_dir}: "
                            "was the model trained on another faceset? (give the --src it trained on)")
    if count >= len(trainable):
        raise TrainingError(f"--exclude-hardest {count} would leave no src face to train on: {len(trainable)} "
                            "faces with a training loss still train")
    chosen = hardest_to_exclude(losses, trainable, count)
    record_decisions(src_database, [Decision(face.face_id, "exclude", why=face.why) for face in chosen], who=who)
    return chosen


__all__ = ["EXCLUDE_WHO", "FACE_LOSS_DECAY", "FaceLossTracker", "HardestExclusion", "SideLosses",
           "exclude_hardest", "folded", "hardest_to_exclude"]
