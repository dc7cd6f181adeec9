"""Training previews: the min/max loss graph, the src/dst mosaic, and their atomic PNG output."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from curate.fileio import write_atomically

COLUMN_KEYS: tuple[str, ...] = ("src", "src_src", "dst", "dst_dst", "src_dst")
# Hershey fonts only draw ASCII, so the arrows of the DFL titles become "->".
COLUMN_TITLES: tuple[str, ...] = ("src", "src->src", "dst", "dst->dst", "src->dst")

MOSAIC_HEADER_HEIGHT = 16  # px: one line of column titles above each mosaic
MAX_MOSAIC_ROWS = 4
MAX_MOSAIC_HEIGHT = 800  # px: rows are capped so the faces alone fit in this height (DFL: 800 // res)
GRAPH_HEIGHT = 100  # px, DFL's loss-graph height
GRID_LINES = 5
# Only the last 80% of history sets the y scale (the first len // 5 samples are left out, in integer
# arithmetic so 1 − 0.8 rounding never lets one early sample in), so the steep first iterations
# do not squash the rest of the curve against the floor.
SCALE_SKIPPED_PARTS = 5

_BACKGROUND = (24, 24, 24)
_GRID = (64, 64, 64)
# Neutral grey text keeps the label apart from the saturated series colours.
_TEXT = (200, 200, 200)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def series_colour(index: int, count: int) -> tuple[int, int, int]:
    """BGR uint8 colour of loss series `index` of `count`: fully saturated, hue = index / count.

    With two series (src, dst) this gives red and cyan, which stay apart for colour-blind readers.
    """
    red, green, blue = colorsys.hsv_to_rgb(index / max(count, 1), 1.0, 1.0)
    return round(blue * 255), round(green * 255), round(red * 255)


def _text_scale(text: str, max_width: int, max_height: int, preferred: float = 0.4) -> float:
    """Largest Hershey scale ≤ `preferred` at which `text` fits the box (never below 0.2)."""
    (width, height), baseline = cv2.getTextSize(text, _FONT, 1.0, 1)
    fit = min(max_width / max(width, 1), max_height / max(height + baseline, 1))
    return max(0.2, min(preferred, fit))


def _column_spans(iterations: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel column, the half-open index range [start, stop) of the samples it shows.

    The x axis is linear in iteration number, so gaps in the history stay visible. A column with
    no sample of its own spans the samples just before and after it, which joins the bars into a
    continuous band when the history has fewer samples than the graph has columns.
    """
    first, last = float(iterations[0]), float(iterations[-1])
    edges = first + (last - first + 1.0) * np.arange(width + 1, dtype=np.float64) / width
    starts = np.searchsorted(iterations, edges[:-1], side="left")
    stops = np.searchsorted(iterations, edges[1:], side="left")
    empty = stops <= starts
    # For an empty column, `starts` already points at the first sample after it.
    stops = np.where(empty, np.minimum(starts + 1, iterations.size), stops)
    starts = np.where(empty, np.maximum(starts - 1, 0), starts)
    return starts, stops


def _put_label(image: np.ndarray, text: str) -> None:
    height, width = image.shape[:2]
    scale = _text_scale(text, width - 4, max(height // 4, 8))
    (_, text_height), _ = cv2.getTextSize(text, _FONT, scale, 1)
    # A dark outline keeps the label readable where the bars run underneath it.
    cv2.putText(image, text, (3, 3 + text_height), _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (3, 3 + text_height), _FONT, scale, _TEXT, 1, cv2.LINE_AA)


def loss_graph(
    iterations: np.ndarray,
    losses: np.ndarray,
    width: int,
    height: int = GRAPH_HEIGHT,
    skip_first: int = 0,
    iteration: int | None = None,
) -> np.ndarray:
    """Draw the loss history as per-column min-to-max bars, one colour per series.

    iterations: (N,) integers, non-decreasing; losses: (N, K) or (N,) float, one column per
    series (src, dst). Non-finite losses are ignored. The y axis runs from 0 at the bottom row to
    2 × mean(finite losses of the last 80% of the shown history) at the top row; higher values are
    clipped to the top. `skip_first` drops the samples whose iteration is below
    iterations[0] + skip_first, for a graph that the first steep iterations do not dominate.
    The label reads "Iter: <iteration>" (default: the last iteration of the history); a history
    with no finite loss gives a blank graph whose label says so.
    Returns uint8 BGR (height, width, 3).
    """
    if width < 1 or height < 2:
        raise ValueError(f"loss graph needs width >= 1 and height >= 2, got {width}x{height}")
    if skip_first < 0:
        raise ValueError(f"skip_first must be >= 0, got {skip_first}")
    iterations = np.asarray(iterations)
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim == 1:
        losses = losses[:, None]
    if iterations.ndim != 1 or losses.ndim != 2 or losses.shape[0] != iterations.shape[0]:
        raise ValueError(
            f"loss graph needs iterations (N,) and losses (N, K); got {iterations.shape} and {losses.shape}"
        )
    if iterations.size and np.any(np.diff(iterations) < 0):
        raise ValueError("loss history iterations must be non-decreasing")
    if iterations.size and skip_first:
        keep = iterations >= iterations[0] + skip_first
        iterations, losses = iterations[keep], losses[keep]

    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = _BACKGROUND
    for line in range(GRID_LINES):
        image[line * height // GRID_LINES, :] = _GRID

    if iteration is None:
        iteration = int(iterations[-1]) if iterations.size else 0
    finite = np.isfinite(losses)
    recent = losses[losses.shape[0] // SCALE_SKIPPED_PARTS :]
    recent = recent[np.isfinite(recent)]
    if recent.size == 0:
        _put_label(image, f"Iter: {iteration}  (no loss values)")
        return image
    # An all-zero history would give a zero scale; any positive height keeps the bars on the floor.
    scale = max(2.0 * float(np.mean(recent)), np.finfo(np.float32).tiny)

    starts, stops = _column_spans(iterations, width)
    # Masked reductions per column: non-finite samples read as +inf for the min and -inf for the max.
    lows = np.where(finite, losses, np.inf)
    highs = np.where(finite, losses, -np.inf)
    top = height - 1
    count = losses.shape[1]
    for series in range(count):
        colour = series_colour(series, count)
        for column in range(width):
            start, stop = int(starts[column]), int(stops[column])
            low = float(np.min(lows[start:stop, series]))
            high = float(np.max(highs[start:stop, series]))
            if not np.isfinite(low):
                continue
            row_high = top - round(min(max(high / scale, 0.0), 1.0) * top)
            row_low = top - round(min(max(low / scale, 0.0), 1.0) * top)
            image[row_high : row_low + 1, column] = colour
    _put_label(image, f"Iter: {iteration}")
    return image


def _to_uint8(images: np.ndarray) -> np.ndarray:
    # A collapsing model predicts NaN; those pixels show black instead of breaking the preview.
    cleaned = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(np.clip(cleaned, 0.0, 1.0) * 255.0).astype(np.uint8)


def _header(width: int, tile: int, titles: tuple[str, ...]) -> np.ndarray:
    header = np.empty((MOSAIC_HEADER_HEIGHT, width, 3), dtype=np.uint8)
    header[:] = _BACKGROUND
    for index, title in enumerate(titles):
        scale = _text_scale(title, tile - 4, MOSAIC_HEADER_HEIGHT - 4)
        (text_width, text_height), _ = cv2.getTextSize(title, _FONT, scale, 1)
        x = index * tile + max((tile - text_width) // 2, 1)
        y = (MOSAIC_HEADER_HEIGHT + text_height) // 2
        cv2.putText(header, title, (x, y), _FONT, scale, _TEXT, 1, cv2.LINE_AA)
    return header


def mosaic_rows(batch: int, resolution: int) -> int:
    """Rows a mosaic shows: min(4, batch, 800 // resolution), at least 1."""
    return max(1, min(MAX_MOSAIC_ROWS, batch, MAX_MOSAIC_HEIGHT // resolution))


def _check_columns(columns: Mapping[str, np.ndarray]) -> tuple[int, int]:
    missing = [key for key in COLUMN_KEYS if key not in columns]
    if missing:
        raise ValueError(f"preview needs columns {list(COLUMN_KEYS)}; missing {missing}")
    shape = np.shape(columns[COLUMN_KEYS[0]])
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[0] < 1:
        raise ValueError(f"preview column 'src' must be (batch, R, R, 3) with batch >= 1, got {shape}")
    for key in COLUMN_KEYS[1:]:
        if np.shape(columns[key]) != shape:
            raise ValueError(
                f"preview column {key!r} has shape {np.shape(columns[key])}, expected {shape} like 'src'"
            )
    return shape[0], shape[1]


def _mosaic_body(columns: Mapping[str, np.ndarray], rows: int, masks: Mapping[str, np.ndarray] | None) -> np.ndarray:
    tiles = []
    for key in COLUMN_KEYS:
        faces = np.asarray(columns[key][:rows], dtype=np.float32)
        if masks is not None and key in masks:
            mask = np.asarray(masks[key][:rows], dtype=np.float32)
            if mask.ndim == 3:
                mask = mask[..., None]
            if mask.shape[:3] != faces.shape[:3] or mask.shape[3] != 1:
                raise ValueError(
                    f"preview mask {key!r} must be (batch, R, R) or (batch, R, R, 1) matching the faces, "
                    f"got {np.shape(masks[key])}"
                )
            faces = faces * mask
        # (rows, R, R, 3) → (rows·R, R, 3): the faces of one column stacked top to bottom.
        tiles.append(_to_uint8(faces).reshape(-1, faces.shape[2], 3))
    return np.concatenate(tiles, axis=1)


def preview_mosaic(
    columns: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Lay out the preview faces in DFL's column order src, src->src, dst, dst->dst, src->dst.

    columns: keys "src", "src_src", "dst", "dst_dst", "src_dst", each (batch, R, R, 3) float32
    BGR in [0, 1] (values outside are clipped, NaN shows black); the first
    rows = min(4, batch, 800 // R) samples are shown. masks: optional, same keys (any subset),
    each (batch, R, R) or (batch, R, R, 1) in [0, 1]; when given, a masked copy (faces × mask;
    columns without a mask unchanged) with its own header is stacked below the plain mosaic.
    Returns uint8 BGR of shape (k · (16 + rows · R), 5 · R, 3), k = 2 with masks else 1.
    """
    batch, resolution = _check_columns(columns)
    rows = mosaic_rows(batch, resolution)
    header = _header(len(COLUMN_KEYS) * resolution, resolution, COLUMN_TITLES)
    parts = [header, _mosaic_body(columns, rows, None)]
    if masks is not None:
        parts += [header, _mosaic_body(columns, rows, masks)]
    return np.concatenate(parts, axis=0)


def render_preview(
    columns: Mapping[str, np.ndarray],
    iterations: np.ndarray,
    losses: np.ndarray,
    iteration: int,
    masks: Mapping[str, np.ndarray] | None = None,
    graph_height: int = GRAPH_HEIGHT,
    skip_first: int = 0,
) -> np.ndarray:
    """The full preview image: the loss graph (labelled `iteration`) above the mosaic, equal width.

    Arguments as `preview_mosaic` and `loss_graph`. Returns uint8 BGR
    (graph_height + mosaic height, 5 · R, 3).
    """
    mosaic = preview_mosaic(columns, masks)
    graph = loss_graph(
        iterations, losses, mosaic.shape[1], graph_height, skip_first=skip_first, iteration=iteration
    )
    return np.concatenate([graph, mosaic], axis=0)


def write_png_atomically(path: Path | str, image: np.ndarray) -> Path:
    """Encode `image` (uint8 or uint16; (H, W), (H, W, 3) BGR or (H, W, 4) BGRA) as PNG at `path`.

    The bytes go to a temporary file beside `path` and are renamed over it, so a viewer polling
    the file never reads half a PNG. Returns the path written.
    """
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG preview must be uint8 or uint16, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or image.size == 0:
        raise ValueError(f"PNG preview must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as PNG")
    return write_atomically(Path(path), encoded.tobytes())
