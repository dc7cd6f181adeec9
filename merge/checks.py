"""Merge checks: merge held-out dst frames with the model as it is now, score them, flag overtraining.

A check scores the model on faces it never trained on:
- the generalisation gap: reconstruction loss of held-out src faces minus that of training faces;
- identity: cosine similarity of each merged face's embedding (curate's embedder) to the src identity;
- expression fidelity: eye and mouth landmarks found on the merged frame against the dst's own,
  as a normalised mean error (lower is better);
- sharpness of the merged face relative to the src training faces;
- a simple artefact score: the share of face pixels the model drove to pure black or white.
Every check is a row of `merge_checks` in the model's DuckDB, with a contact sheet PNG.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import duckdb
import numpy as np

from curate.faces.align import arcface_crop, warp_face
from curate.errors import FacesmithError
from curate.faceset import FacesetReader
from train.faceset_data import FaceArrays, load_face_arrays, read_curated_faces
from train.sampler import landmark_masks

log = logging.getLogger(__name__)

CHECK_DIR = "merge_checks"
MAX_FRAMES = 8  # held-out dst frames merged per check
MAX_SHEET_ROWS = 4
PATIENCE = 3  # checks in a row with held-out loss worse than its best (training loss falling) raise the flag
WORSE_MARGIN = 0.05  # "worse" means this share above the best held-out loss; smaller moves are noise

_TABLE = """CREATE TABLE IF NOT EXISTS merge_checks (
    iteration BIGINT PRIMARY KEY,
    checked_at TIMESTAMPTZ NOT NULL,
    train_src_loss DOUBLE, validation_src_loss DOUBLE,
    train_dst_loss DOUBLE, validation_dst_loss DOUBLE,
    generalisation_gap DOUBLE,            -- validation_src_loss - train_src_loss
    identity_similarity DOUBLE,           -- merged faces vs the src identity (cosine, mean)
    dst_identity_similarity DOUBLE,       -- the same held-out dst faces before merging (baseline)
    expression_error DOUBLE,              -- eye+mouth landmark error / inter-ocular distance
    sharpness_ratio DOUBLE,               -- merged face sharpness / median src training face
    artefact_score DOUBLE,                -- share of face pixels clipped to black or white
    frames INTEGER NOT NULL,
    training_loss DOUBLE,                 -- mean src+dst training loss over the interval before
    overtraining BOOLEAN NOT NULL,
    best_iteration BIGINT,
    detail VARCHAR NOT NULL,
    contact_sheet VARCHAR
)"""


class MergeCheckError(FacesmithError):
    """A merge check cannot run: no held-out faces, missing frames, or no model folder."""


@dataclass(frozen=True)
class MergeCheckResult:
    """One check's scores (NaN where a measure could not be taken)."""

    iteration: int
    checked_at: datetime
    train_src_loss: float
    validation_src_loss: float
    train_dst_loss: float
    validation_dst_loss: float
    generalisation_gap: float
    identity_similarity: float
    dst_identity_similarity: float
    expression_error: float
    sharpness_ratio: float
    artefact_score: float
    frames: int
    training_loss: float
    overtraining: bool
    best_iteration: int | None
    detail: str
    contact_sheet: str | None

    def to_row(self) -> tuple:
        return tuple(None if isinstance(v, float) and math.isnan(v) else v
                     for v in (getattr(self, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OvertrainingVerdict:
    flagged: bool
    best_iteration: int | None
    detail: str


def overtraining_verdict(iterations: list[int], validation_losses: list[float], training_losses: list[float],
                         patience: int = PATIENCE, margin: float = WORSE_MARGIN) -> OvertrainingVerdict:
    """Flag when the last `patience` checks all scored held-out loss `margin` worse than the best
    check, while training loss kept falling (lower now than at the best check and at the window's start).

    iterations, validation_losses, training_losses: one entry per check, oldest first. Held-out loss
    is noisy from check to check (a few per cent on small sets), so the rule compares against the
    best so far rather than asking for a strict rise at every check.
    """
    finite = [(index, value) for index, value in enumerate(validation_losses) if math.isfinite(value)]
    if not finite:
        return OvertrainingVerdict(False, None, "no held-out loss yet")
    best_index, best_value = min(finite, key=lambda pair: pair[1])
    best = iterations[best_index]
    since_best = len(validation_losses) - 1 - best_index
    if since_best < patience:
        return OvertrainingVerdict(False, best, f"best held-out loss {best_value:.4f} at iteration {best}")
    window = validation_losses[-patience:]
    worse = all(math.isfinite(v) and v > best_value * (1 + margin) for v in window)
    training_now, training_at_best = training_losses[-1], training_losses[best_index]
    falling = training_now < training_at_best and training_now < training_losses[-patience]
    if worse and falling:
        return OvertrainingVerdict(True, best, (
            f"overtraining: held-out src loss has been {min(window) / best_value - 1:.0%} or more above its "
            f"best ({best_value:.4f} at iteration {best}) for {patience} checks while training loss fell "
            f"{training_at_best:.4f} -> {training_now:.4f}; best so far at iteration {best}"))
    return OvertrainingVerdict(False, best, f"held-out loss {'worse than' if worse else 'near'} its best "
                               f"({best_value:.4f} at iteration {best}), training loss "
                               f"{'falling' if falling else 'not falling'}")


# -- inputs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeldOutFrame:
    """A held-out dst face and the frame it came from."""

    face_id: str
    frame_path: Path
    landmarks68: np.ndarray  # (68, 2) float64, frame px
    landmarks5: np.ndarray  # (5, 2) float64, frame px
    bbox: np.ndarray  # (4,) float64, frame px


def heldout_frames(dst_database: Path, face_ids: list[str], limit: int = MAX_FRAMES) -> list[HeldOutFrame]:
    """The frames of held-out dst faces (the first `limit` by face id), read from the dst faceset."""
    with FacesetReader(dst_database) as reader:
        known = set(reader.faces().face_ids)
        faces = reader.training_faces(face_ids=sorted(set(face_ids) & known)[:limit])
    if any(face.source_path is None for face in faces):
        raise MergeCheckError(f"{dst_database} records no scan")
    return [HeldOutFrame(face_id=face.face_id, frame_path=face.source_path, landmarks68=face.landmarks68,
                         landmarks5=face.landmarks5, bbox=face.bbox) for face in faces]


def _src_identity(src_database: Path, face_ids: list[str]) -> np.ndarray:
    """The normalised mean embedding of the src training faces."""
    with FacesetReader(src_database) as reader:
        embeddings = reader.embeddings(face_ids)
    centre = np.mean(np.asarray(embeddings, dtype=np.float64), axis=0)
    return centre / max(np.linalg.norm(centre), 1e-12)


def _laplacian_variance(face: np.ndarray, mask: np.ndarray) -> float:
    grey = cv2.cvtColor(np.clip(face * 255, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    laplacian = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F)
    inside = mask.reshape(grey.shape) > 0.5
    return float(laplacian[inside].var()) if inside.sum() > 16 else float("nan")


def _plain_batch(faces: FaceArrays, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = faces.images[rows].astype(np.float32) / 255.0
    masks = [landmark_masks(faces.landmarks[row], faces.resolution) for row in rows]
    return images, np.stack([m for m, _ in masks]), np.stack([e for _, e in masks])


# -- the check -----------------------------------------------------------------------------------

class MergeChecker:
    """Runs merge checks for one model: loads its held-out faces and frames once, then scores on demand."""

    name = "merge check"

    def __init__(self, session: Any, every: int = 0, analyzer: Any = None):
        from merge.settings import resolve_settings

        self.every = every
        self.session = session
        config = session.config
        if not session.src_validation:
            raise MergeCheckError("the model holds out no src faces (validation_share 0 or too few faces): "
                                  "merge checks need held-out faces")
        if not session.dst_validation:
            raise MergeCheckError("the model holds out no dst faces: merge checks need held-out dst frames")
        src_faces = [f for f in read_curated_faces(session.src_database, config.use_selection)
                     if f.face_id in set(session.src_validation)]
        dst_faces = [f for f in read_curated_faces(session.dst_database, config.use_selection, role="dst")
                     if f.face_id in set(session.dst_validation)]
        self.validation_src = load_face_arrays(src_faces, config.face_type, config.resolution)
        self.validation_dst = load_face_arrays(dst_faces, config.face_type, config.resolution)
        self.frames = [frame for frame in heldout_frames(session.dst_database, session.dst_validation)
                       if frame.frame_path.is_file()]
        self.frame_images = {frame.face_id: cv2.imread(str(frame.frame_path), cv2.IMREAD_COLOR)
                             for frame in self.frames}  # read once: every check merges the same frames
        self.frames = [frame for frame in self.frames if self.frame_images[frame.face_id] is not None]
        if not self.frames:
            raise MergeCheckError(f"none of the held-out dst frames can be read under the dst faceset's "
                                  f"scanned folder ({session.dst_database})")
        count = max(4, len(self.validation_src))
        rng = np.random.default_rng([config.seed, 11])
        self.train_src_rows = rng.choice(len(session.src_faces), min(count, len(session.src_faces)), replace=False)
        self.train_dst_rows = rng.choice(len(session.dst_faces), min(count, len(session.dst_faces)), replace=False)
        self.src_identity = _src_identity(session.src_database, list(session.src_faces.face_ids))
        src_images, src_masks, _ = _plain_batch(session.src_faces, self.train_src_rows)
        sharpness = np.array([_laplacian_variance(i, m) for i, m in zip(src_images, src_masks, strict=True)])
        finite = sharpness[np.isfinite(sharpness)]
        self.src_sharpness = float(np.median(finite)) if finite.size else float("nan")
        if analyzer is None:
            from curate.scan.pipeline import analyzer_for_faceset

            # The src faceset's own backend: its embeddings are what identity is measured against.
            analyzer = analyzer_for_faceset(session.src_database)
        self.analyzer = analyzer
        self.settings = resolve_settings({})
        self.folder = session.model_dir / CHECK_DIR
        _ensure_table(session.history.connection)

    # -- scores ----------------------------------------------------------------------------
    def _losses(self) -> tuple[float, float, float, float]:
        trainer = self.session.trainer

        def side_losses(src_batch, dst_batch) -> tuple[float, float]:
            size = max(len(src_batch[0]), len(dst_batch[0]))
            pad = [tuple(np.resize(a, (size, *a.shape[1:])) for a in batch) for batch in (src_batch, dst_batch)]
            src_loss, dst_loss = trainer.reconstruction_losses(*pad[0], *pad[1])
            return float(np.mean(src_loss[:len(src_batch[0])])), float(np.mean(dst_loss[:len(dst_batch[0])]))

        all_src = np.arange(len(self.validation_src))
        all_dst = np.arange(len(self.validation_dst))
        validation = side_losses(_plain_batch(self.validation_src, all_src),
                                 _plain_batch(self.validation_dst, all_dst))
        training = side_losses(_plain_batch(self.session.src_faces, self.train_src_rows),
                               _plain_batch(self.session.dst_faces, self.train_dst_rows))
        return training[0], validation[0], training[1], validation[1]

    def _merge_frames(self, predictor) -> list[dict[str, Any]]:
        """Each held-out frame merged as `merge run` would, with the crops its scores need."""
        from merge.runner import merge_frame

        results = []
        for frame_info in self.frames:
            merged, (face,) = merge_frame(self.frame_images[frame_info.face_id], [frame_info], predictor,
                                          self.settings)
            merged_face = warp_face(merged, face.frame_to_face, predictor.resolution).astype(np.float32) / 255.0
            results.append({"frame": frame_info, "merged": merged, "dst_face": face.dst_face,
                            "predicted": face.predicted, "merged_face": merged_face, "mask": face.mask})
        return results

    def _identity(self, merged: list[dict[str, Any]]) -> tuple[float, float]:
        crops = [arcface_crop(item["merged"], item["frame"].landmarks5) for item in merged]
        originals = [arcface_crop(self.frame_images[item["frame"].face_id], item["frame"].landmarks5)
                     for item in merged]
        embeddings = self.analyzer.embed(crops + originals)
        similarity = embeddings @ self.src_identity.astype(np.float32)
        return float(np.mean(similarity[:len(crops)])), float(np.mean(similarity[len(crops):]))

    def _expression_error(self, item: dict[str, Any]) -> float:
        found = self.analyzer.locate(item["merged"])
        if not found:
            return float("nan")
        dst = item["frame"]
        centre = dst.bbox.reshape(2, 2).mean(axis=0)
        face = min(found, key=lambda f: float(np.linalg.norm(np.asarray(f.bbox).reshape(2, 2).mean(axis=0) - centre)))
        interocular = float(np.linalg.norm(dst.landmarks68[36] - dst.landmarks68[45]))
        if interocular <= 0:
            return float("nan")
        points = np.r_[36:68]
        error = np.linalg.norm(np.asarray(face.landmarks68, np.float64)[points] - dst.landmarks68[points], axis=1)
        return float(error.mean() / interocular)

    def _contact_sheet(self, iteration: int, merged: list[dict[str, Any]]) -> Path:
        from train.preview import write_png_atomically

        rows = []
        for item in merged[:MAX_SHEET_ROWS]:
            row = np.concatenate([item["dst_face"], item["predicted"], item["merged_face"]], axis=1)
            rows.append(np.clip(row * 255 + 0.5, 0, 255).astype(np.uint8))
        sheet = np.concatenate(rows, axis=0)
        header = np.zeros((18, sheet.shape[1], 3), np.uint8)
        cv2.putText(header, f"iter {iteration}: dst | swapped | merged", (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        path = self.folder / f"check_{iteration:07d}.png"
        self.folder.mkdir(exist_ok=True)
        write_png_atomically(path, np.concatenate([header, sheet], axis=0))
        return path

    def run(self, iteration: int) -> MergeCheckResult:
        """Score the model as it is now and store the row (the overtraining verdict included)."""
        from train.predictor import Predictor

        session = self.session
        if getattr(self, "_predictor", None) is None:
            # One predictor for every check: it wraps the live model, so it sees the current weights,
            # and its compiled swap is traced once rather than at every check.
            self._predictor = Predictor(session.model_dir, model=session.trainer.model, config=session.config,
                                        iteration=iteration)
        predictor = self._predictor
        predictor.iteration = iteration
        train_src, validation_src, train_dst, validation_dst = self._losses()
        merged = self._merge_frames(predictor)
        if not merged:
            raise MergeCheckError("no held-out frame could be merged")
        identity, dst_identity = self._identity(merged)
        expression = _finite_mean([self._expression_error(item) for item in merged])
        sharpness = _finite_mean([_laplacian_variance(item["merged_face"], item["mask"]) for item in merged])
        artefacts = _finite_mean([_clipped_share(item["predicted"], item["mask"]) for item in merged])
        connection = session.history.connection
        previous = connection.execute("SELECT iteration, validation_src_loss, training_loss FROM merge_checks "
                                      "WHERE iteration < ? ORDER BY iteration", [iteration]).fetchall()
        last_iteration = previous[-1][0] if previous else 0
        training_row = connection.execute(
            "SELECT avg(src_loss + dst_loss) FROM history WHERE iteration > ? AND iteration <= ?",
            [max(last_iteration, iteration - max(1, self.every or 100)), iteration]).fetchone()
        training_loss = float(training_row[0]) if training_row and training_row[0] is not None else float("nan")
        verdict = overtraining_verdict([row[0] for row in previous] + [iteration],
                                       [_float(row[1]) for row in previous] + [validation_src],
                                       [_float(row[2]) for row in previous] + [training_loss])
        sheet = self._contact_sheet(iteration, merged)
        result = MergeCheckResult(
            iteration=iteration, checked_at=datetime.now(timezone.utc), train_src_loss=train_src,
            validation_src_loss=validation_src, train_dst_loss=train_dst, validation_dst_loss=validation_dst,
            generalisation_gap=validation_src - train_src, identity_similarity=identity,
            dst_identity_similarity=dst_identity,
            expression_error=expression,
            sharpness_ratio=sharpness / self.src_sharpness if self.src_sharpness > 0 else float("nan"),
            artefact_score=artefacts, frames=len(merged), training_loss=training_loss,
            overtraining=verdict.flagged, best_iteration=verdict.best_iteration, detail=verdict.detail,
            contact_sheet=str(sheet.relative_to(session.model_dir)))
        placeholders = ", ".join("?" for _ in fields(MergeCheckResult))
        connection.execute(f"INSERT OR REPLACE INTO merge_checks VALUES ({placeholders})", list(result.to_row()))
        return result

    def __call__(self, session: Any, iteration: int):
        """The trainer's periodic hook: check, and tell the loop the best iteration and any flag."""
        from train.loop import EvaluationOutcome

        result = self.run(iteration)
        self.last_result = result
        summary = (f"held-out src loss {result.validation_src_loss:.4f} (gap {result.generalisation_gap:+.4f}), "
                   f"identity {result.identity_similarity:.3f}, expression error {result.expression_error:.3f}")
        return EvaluationOutcome(summary=summary, best_iteration=result.best_iteration,
                                 flag=result.detail if result.overtraining else None)


def _clipped_share(face: np.ndarray, mask: np.ndarray) -> float:
    """Share of the face pixels (mask > 0.5) driven to pure black or white in any channel; NaN without any."""
    inside = mask[..., 0] > 0.5
    if not inside.any():
        return float("nan")
    clipped = ((face < 0.02) | (face > 0.98)).any(axis=-1)
    return float(clipped[inside].mean())


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values; NaN when there are none (a measure no frame allowed)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _ensure_table(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(_TABLE)


def read_checks(model_dir: Path) -> list[dict[str, Any]]:
    """Every stored merge check of a model, oldest first (empty when none ran)."""
    from train.history import ModelHistory

    with ModelHistory(model_dir, read_only=True) as history:
        exists = history.connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'merge_checks'").fetchone()[0]
        if not exists:
            return []
        cursor = history.connection.execute("SELECT * FROM merge_checks ORDER BY iteration")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def check_model(model_dir: Path, analyzer: Any = None) -> MergeCheckResult:
    """An on-demand check of a model folder's newest checkpoint (`facesmith merge check`)."""
    from train.loop import (
        close_session,
        list_checkpoints,
        open_session,
        record_evaluation,
        save,
    )

    session = open_session(Path(model_dir), {})
    try:
        checker = MergeChecker(session, analyzer=analyzer)
        outcome = checker(session, session.iteration)
        # As in training: the best iteration is remembered (and kept) and a flag is shown by `train status`.
        record_evaluation(session, checker.name, session.iteration, outcome,
                          lambda: None if session.iteration in list_checkpoints(session.model_dir) else save(session))
        return checker.last_result
    finally:
        close_session(session)


__all__ = ["MergeCheckError", "MergeCheckResult", "MergeChecker", "OvertrainingVerdict", "check_model",
           "heldout_frames", "overtraining_verdict", "read_checks"]
