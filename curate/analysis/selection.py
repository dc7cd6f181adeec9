"""Choose the training subset: the faces that best cover pose × expression × lighting, then the sharpest, under a budget.

DeepFaceLab's "best faces" sort cuts yaw into a fixed 128 bins, ignores lighting and expression
and keeps duplicates and other people. Here the cells are yaw × pitch × lighting-direction ×
expression bins (curate.faces.expression: neutral, mouth open, smile, eyes closed), the faces
that may be chosen are those curate.faceset.FacesetReader calls eligible (main identity, not a
dropped duplicate, no 'bad' quality-gate verdict, not excluded by hand), and every face gets a
reason for its fate.

The greedy rule: repeatedly take the sharpest remaining face of the cell with the fewest picks so
far (round-robin over cells); among cells with equally few picks prefer the one whose pose
(yaw × pitch, all lighting and expression bins together) has fewer picks, then the sharper
candidate, then the smaller face_id. So with a budget of at least the number of occupied cells,
every cell gets its sharpest face first; a smaller budget spreads over poses before lighting and
expression variants; a budget larger than the cells keeps taking faces until it is filled or no
eligible face is left (then a warning says what kept the others out and how to loosen it); and
the order is fully deterministic for the same faces.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from curate import __version__
from curate.analysis.coverage import DEFAULT_LIGHT_THRESHOLD, degrees, light_bins, pose_bin
from curate.errors import FacesmithError, StoreError
from curate.faces.expression import expression_bin, expression_features
from curate.faceset import QUALITY_GATES, QUALITY_WORDS, FaceStatus, FaceTable, FacesetReader
from curate.fileio import write_atomically
from curate.progress import ProgressCallback
from curate.store import FacesetStore

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"

# Quality measures whose 'bad' verdict keeps a face out by default: exposure, clipping, sharpness,
# size, a face cut by the frame edge and misaligned landmarks (curate.faceset.QUALITY_GATES).
DEFAULT_EXCLUDE_BAD = QUALITY_GATES


class SelectionError(FacesmithError):
    """Selection settings or an output folder that cannot be used."""


@dataclass(frozen=True)
class SelectionSettings:
    """What a selection optimises and what it leaves out; stored with the result."""

    budget: int | None = None  # faces to select; None: every eligible face, in pick order
    yaw_bin: int = 15  # degrees
    pitch_bin: int = 15  # degrees
    lighting: bool = True  # count the lighting direction in the cells
    light_threshold: float = DEFAULT_LIGHT_THRESHOLD  # see curate.analysis.coverage.light_bins
    exclude_bad: tuple[str, ...] = DEFAULT_EXCLUDE_BAD  # measures whose 'bad' verdict excludes
    expression: bool = True  # count the expression (neutral, mouth open, smile, eyes closed) in the cells

    def __post_init__(self) -> None:
        if self.budget is not None and (int(self.budget) != self.budget or self.budget < 1):
            raise SelectionError(f"budget must be a whole number of faces >= 1, got {self.budget}")
        for name in ("yaw_bin", "pitch_bin"):
            width = getattr(self, name)
            if int(width) != width or width < 1:
                raise SelectionError(f"{name.replace('_', ' ')} must be a whole number of degrees >= 1, got {width}")
        if not 0 <= self.light_threshold < 1:
            raise SelectionError(f"light threshold must be in 0..1, got {self.light_threshold}")
        unknown = sorted(set(self.exclude_bad) - set(QUALITY_WORDS))
        if unknown:
            raise SelectionError(f"unknown quality measure(s) {', '.join(unknown)}: use {', '.join(QUALITY_WORDS)}")
        object.__setattr__(self, "exclude_bad", tuple(self.exclude_bad))

    def to_dict(self) -> dict:
        values = asdict(self)
        values["exclude_bad"] = list(self.exclude_bad)
        return values


@dataclass(frozen=True)
class SelectionRow:
    """One face's fate; matches the `selection` table's columns."""

    face_id: str
    selected: bool
    pick_order: int | None  # 1 = picked first; None when not selected
    yaw_bin: int | None  # lower edge of the face's yaw bin, degrees (None: no pose)
    pitch_bin: int | None
    light_bin: str  # even, left, right, top, bottom, unknown (image sides)
    reason: str  # 'selected' or why the face was left out
    expression_bin: str = "unknown"  # neutral, mouth-open, smile, eyes-closed, unknown

    def to_row(self) -> tuple:
        return (self.face_id, self.selected, self.pick_order, self.yaw_bin, self.pitch_bin,
                self.light_bin, self.reason, self.expression_bin)

    @classmethod
    def from_row(cls, row: tuple) -> "SelectionRow":
        return cls(*row)


def _bins(values: np.ndarray, width: int) -> list[int | None]:
    return [None if math.isnan(v) else int(v) for v in pose_bin(values, width)]


def cell_name(yaw_bin: int | None, pitch_bin: int | None, light: str | None, settings: SelectionSettings,
              expression: str | None = None) -> str:
    """'yaw −15° to 0°, pitch 0° to 15°, light even, neutral' for messages."""
    def span(low: int | None, width: int) -> str:
        return "unknown" if low is None else f"{degrees(low)} to {degrees(low + width)}"

    name = f"yaw {span(yaw_bin, settings.yaw_bin)}, pitch {span(pitch_bin, settings.pitch_bin)}"
    if light is not None:
        name += f", light {light}"
    return f"{name}, expression {expression}" if expression not in (None, "unknown") else name


def expression_bins(table: FaceTable) -> list[str]:
    """The expression bin of every face of `table` (curate.faces.expression.expression_bin)."""
    if len(table.landmarks68) != len(table):
        return ["unknown"] * len(table)
    return [expression_bin(features) for features in expression_features(table.landmarks68)]


def select_faces(table: FaceTable, excluded: dict[str, str],
                 settings: SelectionSettings = SelectionSettings()) -> list[SelectionRow]:
    """One row per face of `table` (in its face_id order): picked in coverage-first order, or
    left out with the reason from `excluded` (face_id -> reason) or an over-budget reason.
    Pure and deterministic: the same table, exclusions and settings give the same rows."""
    yaw_bins = _bins(table.yaw, settings.yaw_bin)
    pitch_bins = _bins(table.pitch, settings.pitch_bin)
    lights = light_bins(table.lighting_lr, table.lighting_tb, settings.light_threshold)
    expressions = expression_bins(table)
    sharpness = np.where(np.isnan(table.sharpness), -np.inf, table.sharpness)

    def pose_key(i: int) -> tuple:
        return (yaw_bins[i], pitch_bins[i])

    def cell_key(i: int) -> tuple:
        return (*pose_key(i), lights[i] if settings.lighting else None,
                expressions[i] if settings.expression else None)

    # Candidates per cell, sharpest first (face_id breaks ties).
    candidates: dict[tuple, list[int]] = {}
    for i, face_id in enumerate(table.face_ids):
        if face_id not in excluded:
            candidates.setdefault(cell_key(i), []).append(i)
    for members in candidates.values():
        members.sort(key=lambda i: (-sharpness[i], table.face_ids[i]))

    cell_picks: Counter[tuple] = Counter()
    pose_picks: Counter[tuple] = Counter()
    cells = list(candidates)
    # Heap of (cell picks, pose picks, −sharpness of the next candidate, its face_id, cell index).
    # Picks only grow, so an entry whose counts went stale is pushed back with fresh counts.
    heap = []
    for index, key in enumerate(cells):
        first = candidates[key][0]
        heap.append((0, 0, -sharpness[first], table.face_ids[first], index))
    heapq.heapify(heap)
    next_in_cell = dict.fromkeys(cells, 0)
    order: dict[int, int] = {}
    budget = settings.budget
    while heap and (budget is None or len(order) < budget):
        picks, poses, negative_sharpness, face_id, index = heapq.heappop(heap)
        key = cells[index]
        current = (cell_picks[key], pose_picks[key[:2]])
        if current != (picks, poses):
            heapq.heappush(heap, (*current, negative_sharpness, face_id, index))
            continue
        face = candidates[key][next_in_cell[key]]
        order[face] = len(order) + 1
        cell_picks[key] += 1
        pose_picks[key[:2]] += 1
        next_in_cell[key] += 1
        if next_in_cell[key] < len(candidates[key]):
            following = candidates[key][next_in_cell[key]]
            heapq.heappush(heap, (cell_picks[key], pose_picks[key[:2]], -sharpness[following],
                                  table.face_ids[following], index))

    rows = []
    for i, face_id in enumerate(table.face_ids):
        if face_id in excluded:
            reason = excluded[face_id]
        elif i in order:
            reason = "selected"
        else:
            key = cell_key(i)
            where = cell_name(key[0], key[1], key[2], settings, key[3])
            if cell_picks[key]:
                reason = (f"over budget: cell ({where}) already has {cell_picks[key]} "
                          f"{'face' if cell_picks[key] == 1 else 'faces'} sharper than this")
            else:
                reason = (f"over budget: the budget of {budget} ran out before cell ({where}) "
                          "got a pick (other cells' faces were sharper or their poses rarer)")
        rows.append(SelectionRow(
            face_id=face_id, selected=i in order, pick_order=order.get(i), yaw_bin=yaw_bins[i],
            pitch_bin=pitch_bins[i], light_bin=lights[i], reason=reason, expression_bin=expressions[i]))
    return rows


# -- exclusions and warnings ----------------------------------------------------------------------

def exclusions(statuses: list[FaceStatus]) -> dict[str, str]:
    """face_id -> why it may not be selected (every reason, joined with '; '), from the reader's
    statuses computed without the selection (curate.faceset.FacesetReader.statuses)."""
    return {status.face_id: status.reason for status in statuses if not status.trains}


# How to keep more faces, per reason category (reason_category's words).
_LOOSEN = {
    "duplicate": "loosen with curate analyze --max-phash-bits 6 --max-pose-delta 3, or choose keepers "
                 "in curate review",
    "other person": "if some are the main person, pin it with curate analyze --identity PHOTO "
                    "(or raise --identity-distance)",
    "outlier": "outliers are too small, blurred, cut or misaligned to recognise: add better material",
    "excluded by hand": "include them again in curate review",
    "aligned crop missing": "re-run curate scan on the source folder",
}


def shortfall_warning(budget: int | None, eligible: int, excluded: dict[str, int],
                      exclude_bad: tuple[str, ...]) -> str | None:
    """The warning for a budget the eligible faces cannot fill ('asked for 60, 7 eligible: 686
    faces dropped as near duplicates — loosen with …'), or None when it fills."""
    if budget is None or budget <= eligible:
        return None
    causes = {category: count for category, count in excluded.items() if category != "over budget"}
    if not causes:
        return f"asked for {budget}, {eligible} eligible: the faceset has only {eligible} faces"
    ordered = sorted(causes.items(), key=lambda item: (-item[1], item[0]))
    words = ", ".join(_category_words(category, count) for category, count in ordered[:4])
    top = ordered[0][0]
    hint = _LOOSEN.get(top)
    if hint is None:  # a quality word: 'blurry', 'too small', …
        kept = [measure for measure in exclude_bad if QUALITY_WORDS.get(measure) != top]
        hint = f"keep them with curate select --exclude-bad {','.join(kept) or 'none'}"
    return f"asked for {budget}, {eligible} eligible: {words} — {hint}"


def _category_words(category: str, count: int) -> str:
    faces = "face" if count == 1 else "faces"
    words = {
        "duplicate": f"{faces} dropped as near or exact duplicates",
        "other person": f"{faces} of other people",
        "outlier": f"unrecognisable {faces} (outliers)",
        "excluded by hand": f"{faces} excluded by hand",
        "aligned crop missing": f"{faces} without their aligned crop",
    }.get(category, f"{faces} {category}")
    return f"{count} {words}"


def stale_analyses(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """Warnings for duplicate/identity analyses that are missing or ran on a different face count."""
    faces = connection.execute("SELECT count(*) FROM faces").fetchone()[0]
    recorded = dict(connection.execute(
        "SELECT kind, faces FROM analyses WHERE kind IN ('duplicates', 'identities')").fetchall())
    warnings = []
    for kind in ("duplicates", "identities"):
        if kind not in recorded:
            warnings.append(f"no {kind} analysis yet: {kind} cannot be left out")
        elif recorded[kind] != faces:
            warnings.append(f"the {kind} analysis saw {recorded[kind]} faces, the faceset now has {faces}: "
                            "run it again")
    return warnings


def reason_category(reason: str) -> str:
    """The kind of a reason, for counts: selected, duplicate, other person, outlier, over budget,
    aligned crop missing, or the quality words ('blurry', 'too small', …)."""
    first = reason.split("; ")[0]
    for prefix in ("selected", "excluded by hand", "duplicate", "other person", "outlier", "over budget",
                   "aligned crop missing"):
        if first.startswith(prefix):
            return prefix
    return first.split(" (")[0]


# -- export -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SelectionSummary:
    database: str
    out_dir: str
    manifest: str
    budget: int | None
    faces: int
    eligible: int  # faces not excluded
    selected: int
    excluded: dict[str, int]  # reason category -> faces (over budget included)
    cells_eligible: int  # occupied cells among the eligible faces
    cells_selected: int  # of those, cells with at least one pick
    files_written: int
    files_removed: int  # files of an earlier selection in out_dir that this one dropped
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _rounded(value: float, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


# What this command names its files: `<pick_order:05d>_<face_id><suffix>`. Nothing else in an
# output folder is ever removed, whatever a manifest there says: the pattern has no separators,
# no leading dot and no '..', so a name that matches it is a plain file name inside out_dir.
_EXPORT_NAME = re.compile(r"\d{5,}_(?P<face_id>[0-9A-Za-z][0-9A-Za-z_-]*)\.[a-z0-9]{1,5}")


def _export_name(pick_order: int, face_id: str, suffix: str) -> str:
    return f"{pick_order:05d}_{face_id}{suffix}"


def _exported_face(name: object) -> str | None:
    """The face_id in a file name this command writes, or None for any other name (paths included)."""
    if not isinstance(name, str):
        return None
    match = _EXPORT_NAME.fullmatch(name)
    return match["face_id"] if match else None


def _previous_files(out_dir: Path, face_ids: set[str]) -> set[str]:
    """Files an earlier selection wrote directly inside out_dir; refuse a folder holding anything else.

    Ours are the names that match the export pattern and are either listed in the folder's
    manifest or name a face of this faceset: the second lets a selection interrupted before it
    wrote its manifest run again into the same folder.
    """
    present: set[str] = set()  # plain files (or links): the only entries ever removed
    strangers: set[str] = set()  # folders and the like: never ours
    for entry in out_dir.iterdir():
        if not entry.name.startswith("."):
            (present if entry.is_file() or entry.is_symlink() else strangers).add(entry.name)
    listed: set[str] = set()
    try:
        content = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        content = None
    if isinstance(content, dict) and content.get("tool") == "facesmith" and content.get("kind") == "selection":
        listed.add(MANIFEST_NAME)
        faces = content.get("faces")
        if isinstance(faces, list):
            listed |= {face.get("file") for face in faces if isinstance(face, dict)
                       and _exported_face(face.get("file")) is not None}
    ours = {name for name in present if name in listed or _exported_face(name) in face_ids}
    strangers |= present - ours
    if strangers:
        ordered = sorted(strangers)
        raise SelectionError(
            f"{out_dir} holds files no earlier 'curate select' wrote ({', '.join(ordered[:3])}"
            f"{', …' if len(ordered) > 3 else ''}): choose an empty or new folder")
    return ours - {MANIFEST_NAME}


def select_and_export(database: Path, out_dir: Path, settings: SelectionSettings = SelectionSettings(),
                      on_progress: ProgressCallback | None = None) -> SelectionSummary:
    """Select faces of the faceset at `database`, copy their aligned crops to `out_dir` as
    `<pick_order:05d>_<face_id>.jpg` with a `manifest.json`, and record every face's row in the
    `selection` table. `out_dir` must be new, empty or an earlier selection's folder (whose
    dropped files are removed). Deterministic: the same faceset and settings give the same files,
    manifest and rows."""
    started = time.perf_counter()
    database, out_dir = Path(database), Path(out_dir)
    if not database.is_file():
        raise StoreError(f"no faceset at {database}: run 'facesmith curate scan' first")
    if out_dir.exists() and not out_dir.is_dir():
        raise SelectionError(f"not a folder: {out_dir}")
    with FacesetStore(database) as store:
        connection = store.connection
        reader = FacesetReader.on(connection, database, settings.exclude_bad)
        if reader.role == "dst":
            raise SelectionError(f"{database} is a dst faceset: the frames to merge into are never thinned "
                                 "(training takes every dst face); select from the src faceset")
        table = reader.faces()
        known = set(table.face_ids)
        excluded = exclusions(reader.statuses(use_selection=False))
        warnings = stale_analyses(connection)
        roots = dict(connection.execute(
            "SELECT i.image_id, r.source_root FROM images i LEFT JOIN runs r USING (run_id)").fetchall())
        crops = {face_id: database.parent / aligned for face_id, aligned in zip(table.face_ids, table.aligned_paths)}
        for face_id, crop in crops.items():
            if face_id not in excluded and not crop.is_file():
                excluded[face_id] = f"aligned crop missing: {crop}"
        rows = select_faces(table, excluded, settings)

        out_dir.mkdir(parents=True, exist_ok=True)
        previous = _previous_files(out_dir, known)
        index_of = {face_id: i for i, face_id in enumerate(table.face_ids)}
        picked = sorted((row for row in rows if row.selected), key=lambda row: row.pick_order or 0)
        entries, names = [], set()
        for done, row in enumerate(picked, start=1):
            i = index_of[row.face_id]
            crop = crops[row.face_id]
            name = _export_name(row.pick_order, row.face_id, crop.suffix.lower() or ".jpg")
            write_atomically(out_dir / name, crop.read_bytes())
            names.add(name)
            entries.append({
                "pick_order": row.pick_order, "file": name, "face_id": row.face_id,
                "source_root": roots.get(table.image_ids[i]), "source_path": table.paths[i],
                "face_index": int(table.face_index[i]), "aligned_path": table.aligned_paths[i],
                "yaw": _rounded(table.yaw[i], 2), "pitch": _rounded(table.pitch[i], 2),
                "yaw_bin": row.yaw_bin, "pitch_bin": row.pitch_bin, "light_bin": row.light_bin,
                "expression_bin": row.expression_bin,
                "lighting_lr": _rounded(table.lighting_lr[i]), "lighting_tb": _rounded(table.lighting_tb[i]),
                "sharpness": _rounded(table.sharpness[i], 2), "face_size": _rounded(table.face_size[i], 1),
            })
            if on_progress:
                on_progress(done, len(picked))
        removed = 0
        for stale in sorted(previous - names):
            (out_dir / stale).unlink(missing_ok=True)
            removed += 1

        categories = dict(sorted(Counter(reason_category(row.reason) for row in rows if not row.selected).items()))
        def cell(row: SelectionRow) -> tuple:
            return (row.yaw_bin, row.pitch_bin, row.light_bin if settings.lighting else None,
                    row.expression_bin if settings.expression else None)

        eligible_cells = {cell(row) for row in rows if row.face_id not in excluded}
        selected_cells = {cell(row) for row in picked}
        eligible = len(rows) - len(excluded)
        shortfall = shortfall_warning(settings.budget, eligible, categories, settings.exclude_bad)
        if shortfall:
            warnings.insert(0, shortfall)
        counts = {
            "faces": len(rows), "eligible": eligible, "selected": len(picked), "excluded": categories,
            "cells_eligible": len(eligible_cells), "cells_selected": len(selected_cells),
        }
        manifest = {
            "tool": "facesmith", "kind": "selection", "version": __version__,
            "database": str(database.resolve()), "settings": settings.to_dict(), "counts": counts,
            "faces": entries,
        }
        manifest_path = out_dir / MANIFEST_NAME
        write_atomically(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        store.replace_analysis("selection", "selection", [row.to_row() for row in rows],
                               {**settings.to_dict(), "eligible": eligible, "warnings": warnings})
    for warning in warnings:  # also in the summary, for the caller to show
        logger.info("%s", warning)
    return SelectionSummary(
        database=str(database), out_dir=str(out_dir), manifest=str(manifest_path), budget=settings.budget,
        faces=len(rows), eligible=eligible, selected=len(picked), excluded=categories,
        cells_eligible=len(eligible_cells), cells_selected=len(selected_cells), files_written=len(picked),
        files_removed=removed, seconds=round(time.perf_counter() - started, 3), warnings=warnings,
    )
