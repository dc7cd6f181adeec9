"""Small, dependency-free SVG charts for the HTML report: histogram, heat map, scatter."""

from __future__ import annotations

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


def histogram(edges: Sequence[float], counts: Sequence[int], title: str) -> str:
    """Bars for `counts` between consecutive `edges` (drawn evenly spaced, labelled at the ends)."""
    if not counts:
        return _frame('<text x="20" y="100" font-size="11">no data</text>', title)
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    peak = max(counts) or 1
    bar_w = plot_w / len(counts)
    bars = []
    for index, count in enumerate(counts):
        bar_h = plot_h * count / peak
        x, y = MARGIN + index * bar_w, MARGIN + plot_h - bar_h
        label = f"{_number(edges[index])}–{_number(edges[index + 1])}: {count}"
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{bar_h:.1f}" '
                    f'fill="{PALETTE[0]}"><title>{escape(label)}</title></rect>')
    axis = (f'<line x1="{MARGIN}" y1="{MARGIN + plot_h}" x2="{MARGIN + plot_w}" y2="{MARGIN + plot_h}" stroke="#333"/>'
            f'<text x="{MARGIN}" y="{HEIGHT - 12}" font-size="10">{_number(edges[0])}</text>'
            f'<text x="{MARGIN + plot_w}" y="{HEIGHT - 12}" font-size="10" text-anchor="end">{_number(edges[-1])}</text>'
            f'<text x="{MARGIN - 4}" y="{MARGIN + 4}" font-size="10" text-anchor="end">{peak}</text>')
    return _frame("".join(bars) + axis, title)


def heatmap(
    counts: Sequence[Sequence[int]], row_labels: Sequence[str], column_labels: Sequence[str], title: str,
) -> str:
    """A grid of cells shaded by count (0 drawn hollow, so gaps stand out); rows top to bottom."""
    rows, columns = len(counts), len(counts[0]) if counts else 0
    if not rows or not columns:
        return _frame('<text x="20" y="100" font-size="11">no data</text>', title)
    cell = min(28, (520 - 60) // columns, (320 - 60) // rows)
    width, height = 60 + columns * cell + 10, 40 + rows * cell + 30
    peak = max(max(row) for row in counts) or 1
    parts = []
    for r, row in enumerate(counts):
        parts.append(f'<text x="54" y="{40 + r * cell + cell * 0.65:.1f}" font-size="9" text-anchor="end">{escape(row_labels[r])}</text>')
        for c, count in enumerate(row):
            x, y = 60 + c * cell, 40 + r * cell
            if count:
                shade = 0.15 + 0.85 * count / peak
                style = f'fill="{PALETTE[0]}" fill-opacity="{shade:.2f}"'
            else:
                style = 'fill="none" stroke="#c53030" stroke-dasharray="2,2"'
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" {style}>'
                         f'<title>{escape(row_labels[r])} / {escape(column_labels[c])}: {count}</title></rect>')
    for c, label in enumerate(column_labels):
        parts.append(f'<text x="{60 + c * cell + cell / 2:.1f}" y="{40 + rows * cell + 14}" font-size="9" '
                     f'text-anchor="middle">{escape(label)}</text>')
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
    for (x, y), group in zip(points, groups):
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
