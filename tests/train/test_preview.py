"""The preview's loss graph, mosaic and PNG output draw what the history and faces say."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from train.preview import (
    COLUMN_KEYS,
    MOSAIC_HEADER_HEIGHT,
    loss_graph,
    preview_mosaic,
    render_preview,
    series_colour,
    write_png_atomically,
)


def colour_rows(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Row indices holding at least one pixel of exactly `colour`."""
    return np.flatnonzero(np.all(image == np.asarray(colour, dtype=np.uint8), axis=2).any(axis=1))


def saturated(image: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels whose channels differ a lot, i.e. series colours, not greys."""
    spread = image.max(axis=2).astype(np.int32) - image.min(axis=2).astype(np.int32)
    return spread > 100


def faces(batch: int, resolution: int, value: float) -> np.ndarray:
    return np.full((batch, resolution, resolution, 3), value, dtype=np.float32)


def test_graph_shape_dtype_and_series_colours() -> None:
    iterations = np.arange(1, 301)
    losses = np.stack([np.full(300, 0.5), np.full(300, 0.7)], axis=1)
    graph = loss_graph(iterations, losses, width=64, height=40)
    assert graph.shape == (40, 64, 3) and graph.dtype == np.uint8
    red, cyan = series_colour(0, 2), series_colour(1, 2)
    assert red == (0, 0, 255) and cyan == (255, 255, 0)
    assert colour_rows(graph, red).size > 0 and colour_rows(graph, cyan).size > 0


def test_constant_loss_sits_at_half_the_scale() -> None:
    # Scale = 2 × mean = 2, so a constant 1.0 lies at half height: row 100 - round(0.5 · 100) = 50.
    graph = loss_graph(np.arange(1, 201), np.ones((200, 1)), width=50, height=101)
    rows = colour_rows(graph, series_colour(0, 1))
    assert rows.tolist() == [50]
    # A quarter of the scale (0.5 against 2 × mean 1.0 when paired with a 1.5 series) lies lower.
    graph = loss_graph(np.arange(1, 201), np.stack([np.full(200, 0.5), np.full(200, 1.5)], 1), 50, 101)
    assert colour_rows(graph, series_colour(0, 2)).tolist() == [75]
    assert colour_rows(graph, series_colour(1, 2)).tolist() == [25]


def test_bigger_loss_draws_higher() -> None:
    iterations = np.arange(1, 401)
    even = np.stack([np.full(400, 1.0), np.full(400, 1.0)], axis=1)
    raised = even.copy()
    raised[:, 1] = 1.5
    top_even = np.flatnonzero(saturated(loss_graph(iterations, even, 80)).any(axis=1)).min()
    top_raised = np.flatnonzero(saturated(loss_graph(iterations, raised, 80)).any(axis=1)).min()
    assert top_raised < top_even


def test_column_bar_spans_min_to_max_of_its_iterations() -> None:
    # Two samples per column alternating 0.5 and 1.5: mean 1, scale 2, so every bar covers rows
    # 100 - round(0.75 · 100) = 25 to 100 - round(0.25 · 100) = 75.
    losses = np.tile([0.5, 1.5], 50)[:, None]
    graph = loss_graph(np.arange(100), losses, width=50, height=101)
    mask = np.all(graph == np.asarray(series_colour(0, 1), np.uint8), axis=2)
    for column in (0, 10, 49):
        assert np.flatnonzero(mask[:, column]).min() == 25
        assert np.flatnonzero(mask[:, column]).max() == 75


def test_nan_and_inf_are_ignored() -> None:
    iterations = np.arange(1, 201)
    clean = np.ones((200, 1))
    dirty = clean.copy()
    dirty[::7] = np.nan
    dirty[3] = np.inf
    assert np.array_equal(saturated(loss_graph(iterations, dirty, 50)), saturated(loss_graph(iterations, clean, 50)))


@pytest.mark.parametrize(
    ("iterations", "losses"),
    [(np.zeros(0, dtype=np.int64), np.zeros((0, 2))), (np.arange(10), np.full((10, 2), np.nan))],
)
def test_empty_or_all_nan_history_is_blank_with_label(iterations: np.ndarray, losses: np.ndarray) -> None:
    graph = loss_graph(iterations, losses, width=120, height=60)
    assert graph.shape == (60, 120, 3)
    assert not saturated(graph).any()
    # The label is drawn in light grey, brighter than the background and grid.
    assert graph.max() >= 150


def test_skip_first_drops_early_iterations_from_the_scale() -> None:
    # A huge start (10.0 for 100 iterations) lifts the scale; skipping it leaves a constant 1.0 at half height.
    iterations = np.arange(0, 1000)
    losses = np.where(iterations < 100, 10.0, 1.0)[:, None]
    skipped = loss_graph(iterations, losses, width=90, height=101, skip_first=100)
    assert colour_rows(skipped, series_colour(0, 1)).tolist() == [50]
    full = loss_graph(iterations, losses, width=90, height=101)
    assert colour_rows(full, series_colour(0, 1)).min() == 0  # the early 10.0 is clipped at the top


def test_scale_ignores_the_first_fifth_of_history() -> None:
    # 200 of 1000 samples at 10.0, the rest at 1.0: only the last 80% set the scale (2 × 1.0), so
    # the 1.0 plateau lies at half height; a whole-history mean (2.8) would put it at row 82.
    iterations = np.arange(1000)
    losses = np.where(iterations < 200, 10.0, 1.0)[:, None]
    graph = loss_graph(iterations, losses, width=100, height=101)
    mask = np.all(graph == np.asarray(series_colour(0, 1), np.uint8), axis=2)
    assert np.flatnonzero(mask[:, 60]).tolist() == [50]


def test_graph_rejects_mismatched_history() -> None:
    with pytest.raises(ValueError):
        loss_graph(np.arange(5), np.ones((4, 2)), width=10)
    with pytest.raises(ValueError):
        loss_graph(np.array([3, 2, 1]), np.ones((3, 1)), width=10)


@pytest.mark.parametrize(("batch", "resolution", "rows"), [(8, 32, 4), (2, 32, 2), (8, 320, 2)])
def test_mosaic_size(batch: int, resolution: int, rows: int) -> None:
    columns = {key: faces(batch, resolution, 0.5) for key in COLUMN_KEYS}
    mosaic = preview_mosaic(columns)
    assert mosaic.dtype == np.uint8
    assert mosaic.shape == (MOSAIC_HEADER_HEIGHT + rows * resolution, 5 * resolution, 3)
    masked = preview_mosaic(columns, masks={"src": np.ones((batch, resolution, resolution))})
    assert masked.shape == (2 * (MOSAIC_HEADER_HEIGHT + rows * resolution), 5 * resolution, 3)


def test_mosaic_places_columns_in_order_and_applies_masks() -> None:
    resolution, batch = 32, 3
    values = {"src": 0.1, "src_src": 0.3, "dst": 0.5, "dst_dst": 0.7, "src_dst": 0.9}
    columns = {key: faces(batch, resolution, value) for key, value in values.items()}
    columns["src"][1] = 0.2  # the second row of the src column
    half = np.full((batch, resolution, resolution, 1), 0.5, dtype=np.float32)
    mosaic = preview_mosaic(columns, masks={"dst": half})
    top = MOSAIC_HEADER_HEIGHT
    for index, key in enumerate(COLUMN_KEYS):
        pixel = mosaic[top + 5, index * resolution + 5]
        assert pixel.tolist() == [round(values[key] * 255)] * 3
    assert mosaic[top + resolution + 5, 5].tolist() == [round(0.2 * 255)] * 3
    masked_top = 2 * MOSAIC_HEADER_HEIGHT + batch * resolution
    assert mosaic[masked_top + 5, 2 * resolution + 5].tolist() == [round(0.25 * 255)] * 3
    assert mosaic[masked_top + 5, 3 * resolution + 5].tolist() == [round(0.7 * 255)] * 3  # no mask given


def test_mosaic_shows_nan_faces_black_and_rejects_bad_columns() -> None:
    columns = {key: faces(1, 32, 0.5) for key in COLUMN_KEYS}
    columns["src_dst"][:] = np.nan
    mosaic = preview_mosaic(columns)
    assert mosaic[MOSAIC_HEADER_HEIGHT + 5, 4 * 32 + 5].tolist() == [0, 0, 0]
    del columns["dst"]
    with pytest.raises(ValueError, match="dst"):
        preview_mosaic(columns)
    with pytest.raises(ValueError):
        preview_mosaic({key: faces(1, 32, 0.5)[:, :, :16] for key in COLUMN_KEYS})


def test_render_preview_stacks_graph_on_mosaic() -> None:
    columns = {key: faces(2, 32, 0.4) for key in COLUMN_KEYS}
    iterations = np.arange(1, 101)
    losses = np.ones((100, 2))
    image = render_preview(columns, iterations, losses, iteration=100, graph_height=50)
    mosaic = preview_mosaic(columns)
    assert image.shape == (50 + mosaic.shape[0], mosaic.shape[1], 3)
    assert np.array_equal(image[50:], mosaic)
    assert np.array_equal(image[:50], loss_graph(iterations, losses, mosaic.shape[1], 50, iteration=100))


def test_write_png_atomically_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    target = tmp_path / "preview.png"
    target.write_bytes(b"old")
    assert write_png_atomically(target, image) == target
    assert np.array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), image)
    assert [path.name for path in tmp_path.iterdir()] == ["preview.png"]
    with pytest.raises(ValueError):
        write_png_atomically(tmp_path / "bad.png", image.astype(np.float32))
