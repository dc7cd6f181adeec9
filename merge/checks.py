"""Merge checks: merge held-out dst frames with the model as it is now, score them, flag overtraining.

A check scores the model on faces it never trained on:
- the generalisation gap: reconstruction loss of held-out src faces minus that of training faces;
- identity: cosine similarity of each merged face's embedding (curate's embedder) to the src identity;
- expression fidelity: eye and mouth landmarks found on the merged frame against the dst's own,
  as a normalised mean error (lower is better);
- sharpness of the merged face relative to the src training faces;
- a simple artefact score: the share of face pixels the model drove to pure black or white.
These are normalised and combined into one merge-quality score (merge/quality.py), which decides the
best iteration and the overtraining flag (or, with the heldout-loss rule, the held-out src loss
alone). Every check is a row of `merge_checks` in the model's DuckDB, with a contact sheet PNG.
"""

from __future__ import annotations

import json
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
from merge.quality import (
    CheckSettings,
    best_loss,
    combine,
    components,
    quality_scores,
    resolve_check_settings,
)
from train.faceset_data import FaceArrays, load_face_arrays, read_curated_faces
from train.sampler import landmark_masks

log = logging.getLogger(__name__)

CHECK_DIR = "merge_checks"
MAX_FRAMES = 8  # held-out dst frames merged per check; every one is on the contact sheet
PATIENCE = CheckSettings().check_patience
WORSE_MARGIN = CheckSettings().check_loss_margin
SHEET_LABEL_WIDTH = 132  # the contact sheet's left strip holding each row's frame name
SHEET_HEADER_HEIGHT = 18
SHEET_FONT_SCALE = 0.35

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
# Columns added after the first release: an older model's table gains them (NULL in its old rows).
_ADDED_COLUMNS = (
    ("src_identity_similarity", "DOUBLE"),   # held-out src faces vs the src identity (the identity scale's top)
    ("quality_score", "DOUBLE"),             # the merge-quality score, 0..1 (merge/quality.py)
    ("identity_component", "DOUBLE"),        # its normalised components, 0..1, higher is better
    ("expression_component", "DOUBLE"),
    ("sharpness_component", "DOUBLE"),
    ("artefact_component", "DOUBLE"),
    ("loss_component", "DOUBLE"),
    ("rule", "VARCHAR"),                     # what decided best_iteration and overtraining
    ("frame_names", "VARCHAR"),              # the contact sheet's rows, top to bottom, one per line
)


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
    src_identity_similarity: float = math.nan
    quality_score: float = math.nan
    identity_component: float = math.nan
    expression_component: float = math.nan
    sharpness_component: float = math.nan
    artefact_component: float = math.nan
    loss_component: float = math.nan
    rule: str = "quality"
    frame_names: str = ""
    change_since_best: float = math.nan  # score (or held-out loss, by rule) minus the best check's; not stored

    def to_row(self) -> tuple:
        return tuple(None if isinstance(v, float) and math.isnan(v) else v
                     for v in (getattr(self, name) for name in STORED_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STORED_COLUMNS = tuple(f.name for f in fields(MergeCheckResult) if f.name != "change_since_best")


@dataclass(frozen=True)
class OvertrainingVerdict:
    flagged: bool
    best_iteration: int | None
    detail: str
    change_since_best: float = math.nan  # the newest check's value minus the best one's (score or loss)


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
    change = validation_losses[-1] - best_value
    if worse and falling:
        return OvertrainingVerdict(True, best, (
            f"overtraining: held-out src loss has been {min(window) / best_value - 1:.0%} or more above its "
            f"best ({best_value:.4f} at iteration {best}) for {patience} checks while training loss fell "
            f"{training_at_best:.4f} -> {training_now:.4f}; best so far at iteration {best}"), change)
    return OvertrainingVerdict(False, best, f"held-out loss {'worse than' if worse else 'near'} its best "
                               f"({best_value:.4f} at iteration {best}), training loss "
                               f"{'falling' if falling else 'not falling'}", change)


def quality_verdict(iterations: list[int], scores: list[float], training_losses: list[float],
                    patience: int = PATIENCE, margin: float = CheckSettings().check_quality_margin) -> OvertrainingVerdict:
    """Flag when the last `patience` checks all scored at least `margin` below the best merge-quality
    score, while training loss kept falling (lower now than at the best check and at the window's start).

    iterations, scores (0..1, higher is better), training_losses: one entry per check, oldest first.
    The same shape of rule as the held-out loss one: the merged frames got worse for several checks
    in a row while the model kept fitting its training faces better.
    """
    finite = [(index, value) for index, value in enumerate(scores) if math.isfinite(value)]
    if not finite:
        return OvertrainingVerdict(False, None, "no quality score yet")
    best_index, best_value = max(finite, key=lambda pair: pair[1])
    best = iterations[best_index]
    change = scores[-1] - best_value if math.isfinite(scores[-1]) else math.nan
    since_best = len(scores) - 1 - best_index
    if since_best < patience:
        return OvertrainingVerdict(False, best, f"best quality {best_value:.3f} at iteration {best}", change)
    window = scores[-patience:]
    worse = all(math.isfinite(v) and v < best_value - margin for v in window)
    training_now, training_at_best = training_losses[-1], training_losses[best_index]
    falling = training_now < training_at_best and training_now < training_losses[-patience]
    if worse and falling:
        return OvertrainingVerdict(True, best, (
            f"overtraining: merge quality has been {best_value - max(window):.3f} or more below its best "
            f"({best_value:.3f} at iteration {best}) for {patience} checks while training loss fell "
            f"{training_at_best:.4f} -> {training_now:.4f}; best so far at iteration {best}"), change)
    return OvertrainingVerdict(False, best, f"quality {'below' if worse else 'near'} its best ({best_value:.3f} at "
                               f"iteration {best}), training loss {'falling' if falling else 'not falling'}", change)


def judge(checks: list[dict[str, Any]], settings: CheckSettings) -> OvertrainingVerdict:
    """The verdict on a model's checks (merge_checks rows as dicts, oldest first) under the chosen rule."""
    iterations = [int(check["iteration"]) for check in checks]
    training = [_float(check.get("training_loss")) for check in checks]
    if settings.check_rule == "heldout-loss":
        return overtraining_verdict(iterations, [_float(check.get("validation_src_loss")) for check in checks],
                                    training, settings.check_patience, settings.check_loss_margin)
    return quality_verdict(iterations, quality_scores(checks, settings), training, settings.check_patience,
                           settings.check_quality_margin)


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


def _embeddings(database: Path, face_ids: list[str]) -> np.ndarray:
    """(N, D) float64 stored embeddings of the given faces (N = 0 when there are none)."""
    if not face_ids:
        return np.zeros((0, 0), np.float64)
    with FacesetReader(database) as reader:
        return np.asarray(reader.embeddings(face_ids), dtype=np.float64)


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

NO_HELD_OUT = {"src": "the model holds out no src faces (validation_share 0 or too few faces): merge checks "
                      "need held-out faces",
               "dst": "the model holds out no dst faces: merge checks need held-out dst frames"}


def _check_held_out(model_dir: Path) -> None:
    """MergeChecker's refusal of a model that holds out no faces on a side, from the recorded split,
    before a framework loads (a model without a history yet is left to open_session)."""
    from train.history import HISTORY_FILE, ModelHistory

    if not (model_dir / HISTORY_FILE).is_file():
        return
    with ModelHistory(model_dir, read_only=True) as history:
        for side in ("src", "dst"):
            recorded = history.split(side)
            if recorded is not None and not recorded[1]:
                raise MergeCheckError(NO_HELD_OUT[side])


class MergeChecker:
    """Runs merge checks for one model: loads its held-out faces and frames once, then scores on demand."""

    name = "merge check"

    def __init__(self, session: Any, every: int = 0, analyzer: Any = None, settings: CheckSettings | None = None):
        from merge.settings import resolve_settings

        self.every = every
        self.check_settings = settings or model_check_settings(session.history)
        self.session = session
        config = session.config
        if not session.src_validation:
            raise MergeCheckError(NO_HELD_OUT["src"])
        if not session.dst_validation:
            raise MergeCheckError(NO_HELD_OUT["dst"])
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
        # The top of the identity scale: how like the src identity a real, unseen src photo is.
        held_out = _embeddings(session.src_database, list(session.src_validation))
        self.src_reference = float(np.mean(held_out @ self.src_identity)) if len(held_out) else float("nan")
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
        """Every merged frame as a row (its name, dst crop, swapped face, merged crop), under a header."""
        from train.preview import write_png_atomically

        resolution = merged[0]["dst_face"].shape[0]
        rows = []
        for item, name in zip(merged, sheet_names(merged), strict=True):
            faces = np.concatenate([item["dst_face"], item["predicted"], item["merged_face"]], axis=1)
            label = np.full((resolution, SHEET_LABEL_WIDTH, 3), 32, np.uint8)
            _put_text(label, _fit(name, SHEET_LABEL_WIDTH - 8), (4, resolution // 2 + 4))
            rows.append(np.concatenate([label, np.clip(faces * 255 + 0.5, 0, 255).astype(np.uint8)], axis=1))
        sheet = np.concatenate(rows, axis=0)
        header = np.zeros((SHEET_HEADER_HEIGHT, sheet.shape[1], 3), np.uint8)
        _put_text(header, f"iteration {iteration}", (4, 13))
        for column, title in enumerate(("dst", "swapped", "merged")):
            width = _text_width(title)
            _put_text(header, title, (SHEET_LABEL_WIDTH + column * resolution + max(2, (resolution - width) // 2), 13))
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
        _ensure_table(connection)
        previous = _rows(connection, "WHERE iteration < ? ORDER BY iteration", [iteration])
        for row in previous:  # checks stored before the quality score lack the identity scale's top: it is fixed
            if row.get("src_identity_similarity") is None:
                row["src_identity_similarity"] = self.src_reference
        last_iteration = previous[-1]["iteration"] if previous else 0
        training_row = connection.execute(
            "SELECT avg(src_loss + dst_loss) FROM history WHERE iteration > ? AND iteration <= ?",
            [max(last_iteration, iteration - max(1, self.every or 100)), iteration]).fetchone()
        training_loss = float(training_row[0]) if training_row and training_row[0] is not None else float("nan")
        measures = {"iteration": iteration, "validation_src_loss": validation_src, "identity_similarity": identity,
                    "dst_identity_similarity": dst_identity, "src_identity_similarity": self.src_reference,
                    "expression_error": expression,
                    "sharpness_ratio": sharpness / self.src_sharpness if self.src_sharpness > 0 else float("nan"),
                    "artefact_score": artefacts, "training_loss": training_loss}
        settings = self.check_settings
        parts = components(measures, best_loss([*previous, measures]), settings)
        score = combine(parts, settings.weights)
        verdict = judge([*previous, measures], settings)
        sheet = self._contact_sheet(iteration, merged)
        result = MergeCheckResult(
            iteration=iteration, checked_at=datetime.now(timezone.utc), train_src_loss=train_src,
            validation_src_loss=validation_src, train_dst_loss=train_dst, validation_dst_loss=validation_dst,
            generalisation_gap=validation_src - train_src, identity_similarity=identity,
            dst_identity_similarity=dst_identity, expression_error=expression,
            sharpness_ratio=measures["sharpness_ratio"], artefact_score=artefacts, frames=len(merged),
            training_loss=training_loss, overtraining=verdict.flagged, best_iteration=verdict.best_iteration,
            detail=verdict.detail, contact_sheet=str(sheet.relative_to(session.model_dir)),
            src_identity_similarity=self.src_reference, quality_score=score,
            identity_component=parts.identity, expression_component=parts.expression,
            sharpness_component=parts.sharpness, artefact_component=parts.artefacts,
            loss_component=parts.heldout_loss, rule=settings.check_rule,
            frame_names="\n".join(sheet_names(merged)),
            change_since_best=verdict.change_since_best)
        columns = ", ".join(STORED_COLUMNS)
        placeholders = ", ".join("?" for _ in STORED_COLUMNS)
        connection.execute(f"INSERT OR REPLACE INTO merge_checks ({columns}) VALUES ({placeholders})",
                           list(result.to_row()))
        return result

    def __call__(self, session: Any, iteration: int):
        """The trainer's periodic hook: check, and tell the loop the best iteration, any flag, one line
        for the terminal and the TensorBoard scalars and contact sheet."""
        from train.loop import EvaluationOutcome

        result = self.run(iteration)
        self.last_result = result
        scalars = {f"merge_check/{name}": _float(getattr(result, name)) for name in TENSORBOARD_SCALARS}
        return EvaluationOutcome(summary=check_line(result), best_iteration=result.best_iteration,
                                 flag=result.detail if result.overtraining else None, scalars=scalars,
                                 images={"merge_check/contact_sheet": session.model_dir / result.contact_sheet})


# Every score a check stores, as TensorBoard scalars (the combined score, its components, the raw measures).
TENSORBOARD_SCALARS = ("quality_score", "identity_component", "expression_component", "sharpness_component",
                       "artefact_component", "loss_component", "validation_src_loss", "train_src_loss",
                       "generalisation_gap", "validation_dst_loss", "identity_similarity", "dst_identity_similarity",
                       "expression_error", "sharpness_ratio", "artefact_score")


def check_line(result: MergeCheckResult) -> str:
    """A check in one line: score, change since the best check, components, verdict (the terminal
    prints it after 'merge check N:', the event log beside the iteration)."""
    def number(value: float, digits: int, signed: bool = False) -> str:
        return "-" if not math.isfinite(value) else f"{value:{'+' if signed else ''}.{digits}f}"

    if result.rule == "heldout-loss":
        decided = f"held-out loss {number(result.validation_src_loss, 4)} ({number(result.change_since_best, 4, True)} vs best"
    else:
        decided = f"quality {number(result.quality_score, 3)} ({number(result.change_since_best, 3, True)} vs best"
    best = "-" if result.best_iteration is None else str(result.best_iteration)
    verdict = "OVERTRAINING" if result.overtraining else "ok"
    return (f"{decided} {best}), identity {number(result.identity_component, 2)}, "
            f"expression {number(result.expression_component, 2)}, sharpness {number(result.sharpness_component, 2)}, "
            f"artefacts {number(result.artefact_component, 2)}, held-out loss {number(result.validation_src_loss, 4)}"
            f" [{verdict}]")


def sheet_names(merged: list[dict[str, Any]]) -> list[str]:
    """Each merged frame's file name; a frame holding several held-out faces gets '#2', '#3' on its later rows."""
    names, seen = [], {}
    for item in merged:
        name = item["frame"].frame_path.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return names


def _put_text(image: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, SHEET_FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, SHEET_FONT_SCALE, 1)[0][0]


def _fit(text: str, width: int) -> str:
    """`text`, shortened in the middle with '..' until it is at most `width` pixels wide on the sheet."""
    if _text_width(text) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        candidate = text[:(keep + 1) // 2] + ".." + text[len(text) - keep // 2:]
        if _text_width(candidate) <= width:
            return candidate
    return text[:1]


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
    for name, kind in _ADDED_COLUMNS:
        connection.execute(f"ALTER TABLE merge_checks ADD COLUMN IF NOT EXISTS {name} {kind}")


def _rows(connection: duckdb.DuckDBPyConnection, where: str = "ORDER BY iteration",
          parameters: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = connection.execute(f"SELECT * FROM merge_checks {where}", parameters or [])
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def read_checks(model_dir: Path) -> list[dict[str, Any]]:
    """Every stored merge check of a model, oldest first (empty when none ran)."""
    from train.history import ModelHistory

    with ModelHistory(model_dir, read_only=True) as history:
        exists = history.connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'merge_checks'").fetchone()[0]
        if not exists:
            return []
        return _rows(history.connection)


SETTINGS_META_KEY = "merge_check_options"


def model_check_settings(history: Any, options: dict[str, Any] | None = None) -> CheckSettings:
    """The model's merge-check settings: the options stored with it, updated by `options` (which are
    then stored, so training and later on-demand checks judge alike). Raises CheckSettingsError."""
    stored = json.loads(history.meta(SETTINGS_META_KEY) or "{}")
    merged = {**stored, **(options or {})}
    settings = resolve_check_settings(merged)
    if options:
        history.set_meta(SETTINGS_META_KEY, json.dumps(merged, sort_keys=True))
    return settings


def check_model(model_dir: Path, analyzer: Any = None, options: dict[str, Any] | None = None) -> MergeCheckResult:
    """An on-demand check of a model folder's newest checkpoint (`facesmith merge check`), judged with
    the model's stored check options updated by `options`."""
    from train.loop import (
        close_session,
        list_checkpoints,
        open_session,
        record_evaluation,
        save,
    )

    _check_held_out(Path(model_dir))
    session = open_session(Path(model_dir), {})
    try:
        checker = MergeChecker(session, analyzer=analyzer, settings=model_check_settings(session.history, options))
        outcome = checker(session, session.iteration)
        # As in training: the best iteration is remembered (and kept) and a flag is shown by `train status`.
        record_evaluation(session, checker.name, session.iteration, outcome,
                          lambda: None if session.iteration in list_checkpoints(session.model_dir) else save(session))
        return checker.last_result
    finally:
        close_session(session)


__all__ = ["MergeCheckError", "MergeCheckResult", "MergeChecker", "OvertrainingVerdict", "check_line", "check_model",
           "heldout_frames", "judge", "overtraining_verdict", "quality_verdict", "read_checks"]
