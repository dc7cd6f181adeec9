"""Pose × lighting coverage of a faceset: the yaw/pitch grid, lighting bins, gaps and plain advice.

Conventions (those of the faces table): yaw > 0 when the face points towards image right, pitch > 0
when it looks up. Lighting directions name the side of the *image* (not the subject's own left):
"lit from the left" means the image-left half of the aligned face is the brighter one
(`lighting_lr` < 0), which is the subject's right cheek on a frontal face.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from curate.errors import FacesmithError
from curate.faceset import FaceTable
from curate.faces.quality import DEFAULTS

LIGHT_BINS = ("even", "left", "right", "top", "bottom")
UNKNOWN_LIGHT = "unknown"  # a face without lighting values

# |asymmetry| of the half-face mean lumas, (R − L)/(R + L), below which a face counts as evenly lit.
# 0.10 means one half at least 22 % brighter than the other: about a 2:1 key-to-fill ratio in
# linear light, once gamma and the blend of lit and shadowed skin near the middle are counted.
DEFAULT_LIGHT_THRESHOLD = 0.10


class CoverageError(FacesmithError):
    """Coverage settings that cannot describe a grid."""


@dataclass(frozen=True)
class CoverageSettings:
    """How the pose grid is cut and what counts as a gap.

    The grid spans yaw_range × pitch_range in bins of yaw_bin × pitch_bin degrees, with edges at
    multiples of the bin width (as the `coverage` view). Gaps are only judged inside the
    expected region, the poses a real faceset of one person is expected to cover (frontal to
    three-quarter views: yaw ±45°, pitch ±30°); profiles beyond it get their own advice line.
    """

    yaw_bin: int = 15  # degrees
    pitch_bin: int = 15  # degrees
    yaw_range: tuple[float, float] = (-90.0, 90.0)
    pitch_range: tuple[float, float] = (-60.0, 60.0)
    expected_yaw: tuple[float, float] = (-45.0, 45.0)
    expected_pitch: tuple[float, float] = (-30.0, 30.0)
    # An occupied cell of the expected region is thin when it holds fewer faces than this
    # fraction of an even share (faces in the region / cells in the region).
    thin_fraction: float = 0.25
    light_threshold: float = DEFAULT_LIGHT_THRESHOLD
    # One lighting direction holding at least this share of the faces gets an advice line.
    dominant_light_fraction: float = 0.5
    # With at least this many faces, a missing left- or right-lit group gets an advice line.
    min_faces_for_light_advice: int = 20
    # A cell whose sharpest face is below this Laplacian variance has only blurry faces
    # (the sharpness band's 'bad' edge).
    blurry_below: float = DEFAULTS.sharpness.bad_low

    def __post_init__(self) -> None:
        for name in ("yaw_bin", "pitch_bin"):
            width = getattr(self, name)
            if int(width) != width or width < 1:
                raise CoverageError(f"{name.replace('_', ' ')} must be a whole number of degrees >= 1, got {width}")
        for name in ("yaw_range", "pitch_range", "expected_yaw", "expected_pitch"):
            low, high = getattr(self, name)
            if not low < high:
                raise CoverageError(f"{name.replace('_', ' ')} must be (low, high) with low < high, got {(low, high)}")
        if not 0 <= self.thin_fraction <= 1:
            raise CoverageError(f"thin fraction must be in 0..1, got {self.thin_fraction}")
        if not 0 <= self.light_threshold < 1:
            raise CoverageError(f"light threshold must be in 0..1, got {self.light_threshold}")


def bin_edges(low: float, high: float, width: int) -> np.ndarray:
    """Boundaries (bins + 1 values, int64, ascending) of the bins of `width` that cover
    [low, high], at multiples of width: (-90, 90, 15) -> −90, −75, …, 90."""
    first = math.floor(low / width) * width
    last = max(math.ceil(high / width) * width, first + width)
    return np.arange(first, last + width, width, dtype=np.int64)


def pose_bin(values: np.ndarray, width: int) -> np.ndarray:
    """Lower edge of each value's bin, floor(value / width) · width, as float64 (NaN stays NaN)."""
    return np.floor(np.asarray(values, dtype=np.float64) / width) * width


def light_bins(lighting_lr: np.ndarray, lighting_tb: np.ndarray,
               threshold: float = DEFAULT_LIGHT_THRESHOLD) -> list[str]:
    """One of LIGHT_BINS per face (or 'unknown'): 'even' when both asymmetries are below the
    threshold, otherwise the brighter image side along the stronger of the two axes
    (left/right wins a tie)."""
    result = []
    for lr, tb in zip(np.asarray(lighting_lr, np.float64), np.asarray(lighting_tb, np.float64)):
        if math.isnan(lr) or math.isnan(tb):
            result.append(UNKNOWN_LIGHT)
        elif max(abs(lr), abs(tb)) < threshold:
            result.append("even")
        elif abs(lr) >= abs(tb):
            result.append("right" if lr > 0 else "left")
        else:
            result.append("top" if tb > 0 else "bottom")
    return result


@dataclass(frozen=True)
class CoverageCell:
    yaw_bin: int  # lower edge, degrees; the cell is [yaw_bin, yaw_bin + width)
    pitch_bin: int
    faces: int
    best_sharpness: float | None
    best_face_id: str | None
    expected: bool  # inside the expected region
    state: str  # empty, thin or ok (thin is only judged inside the expected region)


@dataclass(frozen=True, eq=False)
class Coverage:
    """Pose grid and lighting counts of a set of faces."""

    settings: CoverageSettings
    yaw_edges: np.ndarray  # (Y + 1,) int64 yaw bin boundaries, degrees, ascending
    pitch_edges: np.ndarray  # (P + 1,) int64 pitch bin boundaries, degrees, ascending
    counts: np.ndarray  # (Y, P) int64 faces per cell, indexed [yaw bin, pitch bin] (as histogram2d)
    best_sharpness: np.ndarray  # (Y, P) float64 sharpest face per cell, NaN when empty
    best_face_ids: tuple[tuple[str | None, ...], ...]  # (Y, P) face id of that face
    expected: np.ndarray  # (Y, P) bool, cell inside the expected region
    lighting: dict[str, int]  # LIGHT_BINS (and 'unknown' when any) -> faces
    faces: int  # faces considered
    faces_without_pose: int  # yaw or pitch unknown: not in the grid
    faces_outside_range: int  # pose outside yaw_range × pitch_range: not in the grid
    yaw_extent: tuple[float, float] | None  # lowest and highest yaw among faces with a pose
    pitch_extent: tuple[float, float] | None
    thin_below: float  # faces per cell under which an occupied expected cell is thin
    empty_cells: tuple[tuple[int, int], ...]  # (yaw_bin, pitch_bin) empty inside the expected region
    thin_cells: tuple[tuple[int, int], ...]  # (yaw_bin, pitch_bin) thin inside the expected region
    cells: tuple[CoverageCell, ...] = field(default=())  # every grid cell, yaw then pitch ascending

    def to_dict(self) -> dict:
        """JSON-ready numbers (the grid as a list of cells)."""
        return {
            "settings": asdict(self.settings),
            "yaw_edges": self.yaw_edges.tolist(),
            "pitch_edges": self.pitch_edges.tolist(),
            "counts": self.counts.tolist(),  # [yaw bin][pitch bin]
            "best_sharpness": [[None if math.isnan(v) else float(v) for v in row] for row in self.best_sharpness],
            "faces": self.faces,
            "faces_without_pose": self.faces_without_pose,
            "faces_outside_range": self.faces_outside_range,
            "yaw_extent": list(self.yaw_extent) if self.yaw_extent else None,
            "pitch_extent": list(self.pitch_extent) if self.pitch_extent else None,
            "lighting": dict(self.lighting),
            "thin_below": self.thin_below,
            "empty_cells": [list(cell) for cell in self.empty_cells],
            "thin_cells": [list(cell) for cell in self.thin_cells],
            "cells": [asdict(cell) for cell in self.cells],
        }


def coverage(table: FaceTable, settings: CoverageSettings = CoverageSettings(),
             include: np.ndarray | None = None) -> Coverage:
    """Count the faces of `table` (those where `include`, a (N,) bool mask, is true) per
    yaw × pitch cell and per lighting direction, and find the empty and thin cells of the
    expected region. Pure: reads only the table."""
    mask = np.ones(len(table), bool) if include is None else np.asarray(include, bool)
    if mask.shape != (len(table),):
        raise CoverageError(f"include mask has shape {mask.shape}, expected ({len(table)},)")
    yaw, pitch = table.yaw[mask], table.pitch[mask]
    sharpness = table.sharpness[mask]
    face_ids = [face_id for face_id, keep in zip(table.face_ids, mask) if keep]
    s = settings

    yaw_edges = bin_edges(*s.yaw_range, s.yaw_bin)
    pitch_edges = bin_edges(*s.pitch_range, s.pitch_bin)
    yaw_lows, pitch_lows = yaw_edges[:-1], pitch_edges[:-1]
    has_pose = ~(np.isnan(yaw) | np.isnan(pitch))
    in_range = (has_pose & (yaw >= s.yaw_range[0]) & (yaw <= s.yaw_range[1])
                & (pitch >= s.pitch_range[0]) & (pitch <= s.pitch_range[1]))
    # A value on the grid's upper edge (yaw exactly 90°) belongs to the last bin.
    yaw_index = np.clip(((pose_bin(np.where(in_range, yaw, 0), s.yaw_bin) - yaw_edges[0]) // s.yaw_bin)
                        .astype(np.int64), 0, len(yaw_lows) - 1)
    pitch_index = np.clip(((pose_bin(np.where(in_range, pitch, 0), s.pitch_bin) - pitch_edges[0]) // s.pitch_bin)
                          .astype(np.int64), 0, len(pitch_lows) - 1)

    counts = np.zeros((len(yaw_lows), len(pitch_lows)), np.int64)
    best = np.full(counts.shape, np.nan)
    best_ids: list[list[str | None]] = [[None] * len(pitch_lows) for _ in yaw_lows]
    # Face order need not be face_id order: the smaller face_id wins a tie in sharpness.
    for i in np.flatnonzero(in_range):
        y, p = yaw_index[i], pitch_index[i]
        counts[y, p] += 1
        value, current = sharpness[i], best_ids[y][p]
        if math.isnan(value):
            if current is None:
                best_ids[y][p] = face_ids[i]
            elif math.isnan(best[y, p]) and face_ids[i] < current:
                best_ids[y][p] = face_ids[i]
        elif (math.isnan(best[y, p]) or value > best[y, p]
              or (value == best[y, p] and current is not None and face_ids[i] < current)):
            best[y, p] = value
            best_ids[y][p] = face_ids[i]

    expected = (
        (yaw_lows[:, None] >= s.expected_yaw[0]) & (yaw_lows[:, None] + s.yaw_bin <= s.expected_yaw[1])
        & (pitch_lows[None, :] >= s.expected_pitch[0]) & (pitch_lows[None, :] + s.pitch_bin <= s.expected_pitch[1])
    )
    expected_cells = int(expected.sum())
    in_expected = int(counts[expected].sum())
    thin_below = s.thin_fraction * in_expected / expected_cells if expected_cells else 0.0

    cells, empty, thin = [], [], []
    for y, yaw_low in enumerate(yaw_lows):
        for p, pitch_low in enumerate(pitch_lows):
            n = int(counts[y, p])
            key = (int(yaw_low), int(pitch_low))
            if n == 0:
                state = "empty"
            elif expected[y, p] and n < thin_below:
                state = "thin"
            else:
                state = "ok"
            if expected[y, p] and state == "empty":
                empty.append(key)
            elif state == "thin":
                thin.append(key)
            cells.append(CoverageCell(
                yaw_bin=key[0], pitch_bin=key[1], faces=n,
                best_sharpness=None if math.isnan(best[y, p]) else float(best[y, p]),
                best_face_id=best_ids[y][p], expected=bool(expected[y, p]), state=state))

    lights = light_bins(table.lighting_lr[mask], table.lighting_tb[mask], s.light_threshold)
    lighting = {name: lights.count(name) for name in LIGHT_BINS}
    if UNKNOWN_LIGHT in lights:
        lighting[UNKNOWN_LIGHT] = lights.count(UNKNOWN_LIGHT)

    posed_yaw, posed_pitch = yaw[has_pose], pitch[has_pose]
    return Coverage(
        settings=s, yaw_edges=yaw_edges, pitch_edges=pitch_edges, counts=counts,
        best_sharpness=best, best_face_ids=tuple(tuple(row) for row in best_ids), expected=expected,
        lighting=lighting, faces=int(mask.sum()), faces_without_pose=int((~has_pose).sum()),
        faces_outside_range=int((has_pose & ~in_range).sum()),
        yaw_extent=(float(posed_yaw.min()), float(posed_yaw.max())) if posed_yaw.size else None,
        pitch_extent=(float(posed_pitch.min()), float(posed_pitch.max())) if posed_pitch.size else None,
        thin_below=float(thin_below), empty_cells=tuple(empty), thin_cells=tuple(thin), cells=tuple(cells),
    )


# -- advice --------------------------------------------------------------------------------------

def degrees(value: float) -> str:
    """'−45°' with a true minus sign, as people write angles."""
    text = f"{abs(value):g}°"
    return f"−{text}" if value < 0 else text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _span(low: float, high: float) -> str:
    return f"{degrees(low)} to {degrees(high)}"


def _runs(edges: list[int], width: int) -> list[tuple[int, int]]:
    """Merge sorted bin edges into (low, high) spans of adjacent bins."""
    spans: list[tuple[int, int]] = []
    for edge in edges:
        if spans and spans[-1][1] == edge:
            spans[-1] = (spans[-1][0], edge + width)
        else:
            spans.append((edge, edge + width))
    return spans


def _yaw_words(low: float, high: float) -> str:
    if high <= 0:
        return "faces turned towards image left"
    if low >= 0:
        return "faces turned towards image right"
    return "near-frontal faces"


def _pitch_words(low: float, high: float) -> str:
    if low >= 0:
        return "faces looking up"
    if high <= 0:
        return "faces looking down"
    return "faces looking straight ahead"


def _cell_name(yaw_bin: int, pitch_bin: int, settings: CoverageSettings) -> str:
    return (f"yaw {_span(yaw_bin, yaw_bin + settings.yaw_bin)}, "
            f"pitch {_span(pitch_bin, pitch_bin + settings.pitch_bin)}")


def _listing(cells: list[tuple[int, int]], settings: CoverageSettings, limit: int = 4) -> str:
    names = [f"({_cell_name(y, p, settings)})" for y, p in cells[:limit]]
    more = f" and {len(cells) - limit} more" if len(cells) > limit else ""
    return "; ".join(names) + more


def advice(cov: Coverage) -> list[str]:
    """Plain sentences on what the faceset lacks, most important first (empty: nothing to add)."""
    s = cov.settings
    if cov.faces == 0:
        return ["no faces: scan photos or extracted video frames first"]
    lines: list[str] = []
    if cov.faces_without_pose:
        lines.append(f"{_count(cov.faces_without_pose, 'face')} without a pose estimate, left out of the grid")
    if cov.faces_outside_range:
        lines.append(
            f"{_count(cov.faces_outside_range, 'face')} with a pose outside yaw {_span(*s.yaw_range)}, "
            f"pitch {_span(*s.pitch_range)} (extreme or misdetected): check them")

    if cov.yaw_extent is not None:
        low, high = s.expected_yaw
        if cov.yaw_extent[0] >= low:
            lines.append(f"no faces with yaw below {degrees(low)}: add left profiles "
                         "(faces turned towards image left)")
        if cov.yaw_extent[1] <= high:
            lines.append(f"no faces with yaw above {degrees(high)}: add right profiles "
                         "(faces turned towards image right)")

    expected_yaws = np.flatnonzero(cov.expected.any(axis=1))
    expected_pitches = np.flatnonzero(cov.expected.any(axis=0))
    empty_columns = [int(cov.yaw_edges[y]) for y in expected_yaws
                     if cov.counts[y, expected_pitches].sum() == 0]
    empty_rows = [int(cov.pitch_edges[p]) for p in expected_pitches
                  if cov.counts[expected_yaws, p].sum() == 0]
    for low, high in _runs(empty_columns, s.yaw_bin):
        lines.append(f"no faces with yaw from {_span(low, high)}: add {_yaw_words(low, high)}")
    for low, high in _runs(empty_rows, s.pitch_bin):
        lines.append(f"no faces with pitch from {_span(low, high)}: add {_pitch_words(low, high)}")

    region = f"yaw {_span(*s.expected_yaw)}, pitch {_span(*s.expected_pitch)}"
    expected_cells = int(cov.expected.sum())
    # Cells in an empty row or column were named above; list the other gaps.
    scattered = [(y, p) for y, p in cov.empty_cells if y not in empty_columns and p not in empty_rows]
    if cov.empty_cells:
        listed = f": {_listing(scattered, s)}" if scattered else ""
        lines.append(f"{len(cov.empty_cells)} of {expected_cells} pose cells in the usual range "
                     f"({region}) are empty{listed}")
    if cov.thin_cells:
        lines.append(f"{_count(len(cov.thin_cells), 'pose cell')} with fewer than {cov.thin_below:.1f} faces "
                     f"({s.thin_fraction:g} of an even share): {_listing(list(cov.thin_cells), s)}")

    blurry = [(cell.yaw_bin, cell.pitch_bin) for cell in cov.cells
              if cell.best_sharpness is not None and cell.best_sharpness < s.blurry_below]
    if blurry:
        lines.append(f"only blurry faces (sharpness below {s.blurry_below:g}) in {_count(len(blurry), 'pose cell')}: "
                     f"{_listing(blurry, s)}: add sharper ones")

    known = sum(count for name, count in cov.lighting.items() if name != UNKNOWN_LIGHT)
    if known:
        for name in ("left", "right", "top", "bottom"):
            share = cov.lighting[name] / known
            if share >= s.dominant_light_fraction:
                lines.append(f"{round(100 * share)} % of faces lit from the {name} (the image-{name} half "
                             f"of the face is brighter): add faces lit from other sides or evenly")
        if known >= s.min_faces_for_light_advice:
            for name in ("left", "right"):
                if cov.lighting[name] == 0:
                    lines.append(f"no faces lit from the {name} (image {name} brighter): add some if "
                                 "the destination footage has light from that side")
    return lines


# -- SQL -----------------------------------------------------------------------------------------

def coverage_grid_sql(settings: CoverageSettings = CoverageSettings()) -> str:
    """A query over the faces table giving (yaw_bin, pitch_bin, faces, best_sharpness) for the
    occupied cells of the grid `coverage` uses (same bins, same range, upper edge in the last bin)."""
    s = settings
    yaw_last = int(bin_edges(*s.yaw_range, s.yaw_bin)[-2])  # lower edge of the last bin
    pitch_last = int(bin_edges(*s.pitch_range, s.pitch_bin)[-2])
    return (
        f"SELECT least(CAST(floor(yaw / {s.yaw_bin}) * {s.yaw_bin} AS INTEGER), {yaw_last}) AS yaw_bin,\n"
        f"       least(CAST(floor(pitch / {s.pitch_bin}) * {s.pitch_bin} AS INTEGER), {pitch_last}) AS pitch_bin,\n"
        "       count(*) AS faces, max(sharpness) AS best_sharpness\n"
        "FROM faces\n"
        f"WHERE yaw BETWEEN {s.yaw_range[0]:g} AND {s.yaw_range[1]:g}\n"
        f"  AND pitch BETWEEN {s.pitch_range[0]:g} AND {s.pitch_range[1]:g}\n"
        "GROUP BY ALL ORDER BY yaw_bin, pitch_bin"
    )


def lighting_sql(threshold: float = DEFAULT_LIGHT_THRESHOLD) -> str:
    """A query giving (light_bin, faces) with the same bins as `light_bins`."""
    t = f"{threshold:g}"
    return (
        "SELECT CASE WHEN lighting_lr IS NULL OR lighting_tb IS NULL THEN 'unknown'\n"
        f"            WHEN greatest(abs(lighting_lr), abs(lighting_tb)) < {t} THEN 'even'\n"
        "            WHEN abs(lighting_lr) >= abs(lighting_tb)\n"
        "                 THEN CASE WHEN lighting_lr > 0 THEN 'right' ELSE 'left' END\n"
        "            ELSE CASE WHEN lighting_tb > 0 THEN 'top' ELSE 'bottom' END END AS light_bin,\n"
        "       count(*) AS faces\n"
        "FROM faces GROUP BY ALL ORDER BY faces DESC, light_bin"
    )
