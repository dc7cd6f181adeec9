"""Small, dependency-free SVG charts for the HTML reports: histogram, heat map, scatter, line chart."""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

WIDTH, HEIGHT, MARGIN = 360, 200, 34
PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096")


def _frame(body: str, title: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<title>{escape(title)}</title>'
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12" font-weight="bold">{escape(title)}</text>'
        f"{body}</svg>"
    )


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


VERDICT_FILLS = {"ok": "#c6f6d5", "warn": "#fefcbf", "bad": "#fed7d7"}


def _position(value: float, edges: Sequence[float]) -> float:
    """Where `value` falls along evenly drawn bins with these edges, in bins (0..len(edges) − 1);
    piecewise linear between edges, so log-spaced bins read right too. Clamped to the plot."""
    if value <= edges[0]:
        return 0.0
    for index in range(len(edges) - 1):
        low, high = edges[index], edges[index + 1]
        if value <= high:
            return index + ((value - low) / (high - low) if high > low else 0.0)
    return float(len(edges) - 1)


def verdict_zones(band: Sequence[float | None]) -> list[tuple[float, float, str]]:
    """(low, high, verdict) spans of a check band (bad_low, ok_low, ok_high, bad_high; None: an
    open edge): bad below bad_low, warn up to ok_low, ok to ok_high, warn to bad_high, bad above."""
    bad_low, ok_low, ok_high, bad_high = band
    inf = math.inf
    zones = []
    if bad_low is not None:
        zones.append((-inf, bad_low, "bad"))
    if ok_low is not None:
        zones.append((bad_low if bad_low is not None else -inf, ok_low, "warn"))
    zones.append((ok_low if ok_low is not None else -inf, ok_high if ok_high is not None else inf, "ok"))
    if ok_high is not None:
        zones.append((ok_high, bad_high if bad_high is not None else inf, "warn"))
    if bad_high is not None:
        zones.append((bad_high, inf, "bad"))
    return [(low, high, verdict) for low, high, verdict in zones if high > low]


def band_text(band: Sequence[float | None]) -> str:
    """'bad < 30 · warn 30–150 · ok ≥ 150' for a check band."""
    parts = []
    for low, high, verdict in verdict_zones(band):
        if low == -math.inf:
            parts.append(f"{verdict} < {_number(high)}")
        elif high == math.inf:
            parts.append(f"{verdict} ≥ {_number(low)}")
        else:
            parts.append(f"{verdict} {_number(low)}–{_number(high)}")
    return " · ".join(parts)


def histogram(edges: Sequence[float], counts: Sequence[int], title: str,
              band: Sequence[float | None] | None = None) -> str:
    """Bars for `counts` between consecutive `edges` (drawn evenly spaced, labelled at the ends).
    With a check `band` (bad_low, ok_low, ok_high, bad_high), the ok, warn and bad ranges are
    shaded behind the bars and spelled out under the axis."""
    if not counts:
        return _frame('<text x="20" y="100" font-size="11">no data</text>', title)
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    peak = max(counts) or 1
    bar_w = plot_w / len(counts)
    zones = []
    if band is not None:
        for low, high, verdict in verdict_zones(band):
            x1 = MARGIN + _position(low, edges) * bar_w
            x2 = MARGIN + _position(high, edges) * bar_w
            if x2 - x1 >= 0.5:
                zones.append(f'<rect x="{x1:.1f}" y="{MARGIN}" width="{x2 - x1:.1f}" height="{plot_h}" '
                             f'fill="{VERDICT_FILLS[verdict]}"><title>{verdict}</title></rect>')
    bars = []
    for index, count in enumerate(counts):
        bar_h = plot_h * count / peak
        x, y = MARGIN + index * bar_w, MARGIN + plot_h - bar_h
        label = f"{_number(edges[index])}–{_number(edges[index + 1])}: {count}"
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{bar_h:.1f}" '
                    f'fill="{PALETTE[0]}"><title>{escape(label)}</title></rect>')
    axis = (f'<line x1="{MARGIN}" y1="{MARGIN + plot_h}" x2="{MARGIN + plot_w}" y2="{MARGIN + plot_h}" stroke="#333"/>'
            f'<text x="{MARGIN}" y="{HEIGHT - 20}" font-size="10">{_number(edges[0])}</text>'
            f'<text x="{MARGIN + plot_w}" y="{HEIGHT - 20}" font-size="10" text-anchor="end">{_number(edges[-1])}</text>'
            f'<text x="{MARGIN - 4}" y="{MARGIN + 4}" font-size="10" text-anchor="end">{peak}</text>')
    if band is not None:
        axis += (f'<text x="{WIDTH / 2}" y="{HEIGHT - 6}" font-size="8.5" text-anchor="middle" class="bands">'
                 f"{escape(band_text(band))}</text>")
    return _frame("".join(zones) + "".join(bars) + axis, title)


HEAT_LOW, HEAT_HIGH = (238, 244, 251), (8, 48, 107)


def heat_colour(count: int, peak: int) -> str:
    """Light to dark blue on a square-root scale (a few full cells would wash the rest out)."""
    t = math.sqrt(count / peak) if peak > 0 else 0.0
    return "rgb({},{},{})".format(*(round(low + (high - low) * t) for low, high in zip(HEAT_LOW, HEAT_HIGH)))


def heatmap(
    counts: Sequence[Sequence[int]], row_labels: Sequence[str], column_labels: Sequence[str], title: str,
    x_label: str = "", y_label: str = "",
) -> str:
    """A grid of cells shaded by count, each with its count written in it (0 drawn hollow, so gaps
    stand out), and a legend of the colour scale; rows top to bottom."""
    rows, columns = len(counts), len(counts[0]) if counts else 0
    if not rows or not columns:
        return _frame('<text x="20" y="100" font-size="11">no data</text>', title)
    cell = max(22, min(34, (560 - 70) // columns))
    left, top = 62, 40
    width, height = left + columns * cell + 12, top + rows * cell + 82
    peak = max(max(row) for row in counts) or 1
    parts = []
    for r, row in enumerate(counts):
        parts.append(f'<text x="{left - 6}" y="{top + r * cell + cell * 0.6:.1f}" font-size="10" text-anchor="end">{escape(row_labels[r])}</text>')
        for c, count in enumerate(row):
            x, y = left + c * cell, top + r * cell
            if count:
                style = f'fill="{heat_colour(count, peak)}"'
            else:
                style = 'fill="#fff" stroke="#c53030" stroke-dasharray="2,2"'
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" {style}>'
                         f'<title>{escape(row_labels[r])} / {escape(column_labels[c])}: {count}</title></rect>')
            if count:
                ink = "#fff" if math.sqrt(count / peak) > 0.55 else "#1a202c"
                parts.append(f'<text x="{x + (cell - 2) / 2:.1f}" y="{y + cell * 0.6:.1f}" font-size="{9 if count < 1000 else 7}" '
                             f'text-anchor="middle" fill="{ink}" class="count">{count}</text>')
    for c, label in enumerate(column_labels):
        parts.append(f'<text x="{left + c * cell + cell / 2:.1f}" y="{top + rows * cell + 12}" font-size="10" '
                     f'text-anchor="middle">{escape(label)}</text>')
    axis_y = top + rows * cell + 26
    if x_label:
        parts.append(f'<text x="{left + columns * cell / 2:.1f}" y="{axis_y}" font-size="10" text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{top + rows * cell / 2:.1f}" font-size="10" text-anchor="middle" '
                     f'transform="rotate(-90 12 {top + rows * cell / 2:.1f})">{escape(y_label)}</text>')
    # legend: an empty cell, then the scale from 1 face to the fullest cell
    legend_y = axis_y + 14
    stops = "".join(f'<stop offset="{k * 25}%" stop-color="{heat_colour(round(peak * (k / 4) ** 2) or 1, peak)}"/>'
                    for k in range(5))
    parts.append(f'<defs><linearGradient id="heat-legend">{stops}</linearGradient></defs>'
                 f'<rect x="{left}" y="{legend_y}" width="14" height="12" fill="#fff" stroke="#c53030" stroke-dasharray="2,2"/>'
                 f'<text x="{left + 18}" y="{legend_y + 10}" font-size="10">0 (empty)</text>'
                 f'<rect x="{left + 82}" y="{legend_y}" width="160" height="12" fill="url(#heat-legend)" class="legend"/>'
                 f'<text x="{left + 82}" y="{legend_y + 24}" font-size="10">1</text>'
                 f'<text x="{left + 242}" y="{legend_y + 24}" font-size="10" text-anchor="end">{peak} faces</text>')
    return _frame("".join(parts), title, width, height)


def scatter(points: Sequence[tuple[float, float]], groups: Sequence[str], title: str) -> str:
    """Points coloured by group, with a legend; axes are unitless (e.g. a 2-D embedding map)."""
    if not points:
        return _frame('<text x="20" y="100" font-size="11">no data</text>', title)
    width, height = 420, 320
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0
    names = sorted(set(groups))
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    dots = []
    for (x, y), group in zip(points, groups, strict=True):
        px = 20 + (x - x_low) / span_x * (width - 140)
        py = 30 + (1 - (y - y_low) / span_y) * (height - 50)
        dots.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour[group]}" fill-opacity="0.75">'
                    f'<title>{escape(group)}</title></circle>')
    legend = "".join(
        f'<circle cx="{width - 105}" cy="{40 + i * 16}" r="5" fill="{colour[name]}"/>'
        f'<text x="{width - 95}" y="{44 + i * 16}" font-size="11">{escape(name)} ({groups.count(name)})</text>'
        for i, name in enumerate(names)
    )
    return _frame("".join(dots) + legend, title, width, height)


def _tick(value: float) -> str:
    """Axis label: whole numbers for iteration-sized values, else the short form."""
    return f"{value:.0f}" if abs(value) >= 100 else _number(value)


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, *,
    markers: Sequence[tuple[float, str]] = (), highlight: tuple[float, str] | None = None,
    x_label: str = "iteration", log_x: bool = False, dots: bool = False, width: int = 640, height: int = 260,
    y_range: tuple[float, float] | None = None,
) -> str:
    """One line per named (xs, ys) series, with a legend right of the plot.

    Non-finite ys break a line rather than drop to zero. `markers` are dashed vertical lines at x
    (their label shows on hover); `highlight` is one solid, labelled vertical line, its label kept
    inside the plot (left of the line in the plot's right half) so it never reaches the legend.
    With `log_x`, x is spaced by log10 and x <= 0 sits at the smallest positive x. `dots` marks
    every point, for short series where a lone point would otherwise be invisible. `y_range` fixes
    the y axis (scores on 0..1) instead of fitting it to the data.
    """
    finite_ys = [y for _, ys in series.values() for y in ys if math.isfinite(y)]
    if not finite_ys:
        return _frame('<text x="20" y="100" font-size="11">no data</text>', title, width, height)
    xs_all = [x for xs, _ in series.values() for x in xs] + [x for x, _ in markers]
    if highlight is not None:
        xs_all.append(highlight[0])
    positive = [x for x in xs_all if x > 0]
    floor = min(positive) if positive else 1.0

    def along(x: float) -> float:
        return math.log10(max(x, floor)) if log_x else x

    x_low, x_high = min(map(along, xs_all)), max(map(along, xs_all))
    if x_high == x_low:  # one x (a single check): centre it
        spread = 0.5 if log_x else max(abs(x_low) * 0.1, 1.0)
        x_low, x_high = x_low - spread, x_high + spread
    if y_range is not None:
        y_low, y_high = y_range
    else:
        y_low, y_high = min(finite_ys), max(finite_ys)
        pad = (y_high - y_low) * 0.05 or abs(y_high) * 0.05 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    left, right, top, bottom = 52, width - 120, 26, height - 30

    def point(x: float, y: float) -> tuple[float, float]:
        return (left + (along(x) - x_low) / (x_high - x_low) * (right - left),
                bottom - (y - y_low) / (y_high - y_low) * (bottom - top))

    parts = []
    for x, label in markers:
        px = point(x, y_low)[0]
        parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" stroke="#a0aec0" '
                     f'stroke-dasharray="3,3"><title>{escape(label)}</title></line>')
    if highlight is not None:
        px = point(highlight[0], y_low)[0]
        parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" stroke="#2f855a" '
                     f'stroke-width="2"><title>{escape(highlight[1])}</title></line>')
        anchor, offset = ("end", -4) if px > (left + right) / 2 else ("start", 4)
        parts.append(f'<text x="{px + offset:.1f}" y="{top + 10}" font-size="10" fill="#2f855a" '
                     f'text-anchor="{anchor}">{escape(highlight[1])}</text>')
    for index, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        path, pen_down = [], False
        for x, y in zip(xs, ys, strict=True):
            if not math.isfinite(y):
                pen_down = False
                continue
            px, py = point(x, y)
            path.append(f"{'L' if pen_down else 'M'}{px:.1f},{py:.1f}")
            pen_down = True
            if dots:
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}">'
                             f"<title>{escape(name)} at {_tick(x)}: {_number(y)}</title></circle>")
        if path:
            parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="1.5">'
                         f"<title>{escape(name)}</title></path>")
        parts.append(f'<line x1="{right + 12}" y1="{top + 6 + index * 16}" x2="{right + 28}" '
                     f'y2="{top + 6 + index * 16}" stroke="{colour}" stroke-width="3"/>'
                     f'<text x="{right + 32}" y="{top + 10 + index * 16}" font-size="11">{escape(name)}</text>')
    x_values = [10 ** v for v in (x_low, x_high)] if log_x else [x_low, x_high]
    parts.append(
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>'
        f'<text x="{left}" y="{bottom + 14}" font-size="10">{_tick(x_values[0])}</text>'
        f'<text x="{right}" y="{bottom + 14}" font-size="10" text-anchor="end">{_tick(x_values[1])}</text>'
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 24}" font-size="10" text-anchor="middle">'
        f'{escape(x_label)}{" (log scale)" if log_x else ""}</text>'
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{_number(y_high)}</text>'
        f'<text x="{left - 4}" y="{bottom}" font-size="10" text-anchor="end">{_number(y_low)}</text>')
    return _frame("".join(parts), title, width, height)
