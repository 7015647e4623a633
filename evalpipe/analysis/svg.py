"""Charts as inline SVG text: the report must open with no network, so no chart library is loaded.

Each function returns one `<svg>` element sized by a viewBox, so it scales with the page. All text that
comes from the data is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e")
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def color(index: int) -> str:
    """The series colour of the `index`-th backend."""
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True, slots=True)
class Point:
    """A point of a scatter chart with an optional vertical interval and a hover label."""

    x: float
    y: float
    low: float | None
    high: float | None
    series: int
    label: str


@dataclass(frozen=True, slots=True)
class Interval:
    """A labelled estimate with its interval, for the paired-difference chart."""

    label: str
    value: float
    low: float
    high: float


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def _span(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high == low:
        return low - 0.5 if low else -0.5, high + 0.5 if high else 0.5
    margin = (high - low) * pad
    return low - margin, high + margin


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" '
            f'aria-label="{escape(title)}" {_FONT}><title>{escape(title)}</title>{"".join(body)}</svg>')


def histogram(counts: Sequence[int], edges: Sequence[float], title: str, series: int = 0) -> str:
    """Bars of `counts` between consecutive `edges`."""
    width, height, left, bottom, top = 320, 180, 36, 28, 18
    plot_w, plot_h = width - left - 10, height - bottom - top
    most = max(counts, default=0) or 1
    bar_w = plot_w / max(len(counts), 1)
    body = [f'<text x="{left}" y="12" font-weight="600">{escape(title)}</text>',
            f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>']
    for i, count in enumerate(counts):
        h = plot_h * count / most
        body.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                    f'height="{h:.1f}" fill="{color(series)}"><title>{edges[i]:.3g}–{edges[i + 1]:.3g}: '
                    f'{count:,}</title></rect>')
    for value in (edges[0], edges[-1]):
        x = left + plot_w * (value - edges[0]) / ((edges[-1] - edges[0]) or 1)
        body.append(f'<text x="{x:.1f}" y="{height - 12}" text-anchor="middle">{value:.3g}</text>')
    body.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{most:,}</text>')
    return _svg(width, height, body, title)


def scatter(points: Sequence[Point], x_label: str, y_label: str, title: str, legend: Sequence[str]) -> str:
    """Points with vertical intervals; axes fitted to the data."""
    width, height, left, bottom, top, right = 480, 300, 56, 44, 24, 130
    plot_w, plot_h = width - left - right, height - bottom - top
    x_low, x_high = _span([p.x for p in points])
    y_low, y_high = _span([v for p in points for v in (p.y, p.low, p.high) if v is not None])

    def sx(v: float) -> float:
        return left + plot_w * (v - x_low) / (x_high - x_low)

    def sy(v: float) -> float:
        return top + plot_h * (1 - (v - y_low) / (y_high - y_low))

    body = [f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>',
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
    for tick in _ticks(x_low, x_high):
        body.append(f'<text x="{sx(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick:g}</text>')
    for tick in _ticks(y_low, y_high):
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
                    f'stroke="#eee"/><text x="{left - 4}" y="{sy(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    body.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    body.append(f'<text transform="translate(12 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
                f'{escape(y_label)}</text>')
    for p in points:
        if not (math.isfinite(p.x) and math.isfinite(p.y)):
            continue
        if p.low is not None and p.high is not None and math.isfinite(p.low) and math.isfinite(p.high):
            body.append(f'<line x1="{sx(p.x):.1f}" x2="{sx(p.x):.1f}" y1="{sy(p.low):.1f}" y2="{sy(p.high):.1f}" '
                        f'stroke="{color(p.series)}" stroke-width="1.5"/>')
        body.append(f'<circle cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="4.5" fill="{color(p.series)}">'
                    f'<title>{escape(p.label)}</title></circle>')
    for i, name in enumerate(legend):
        y = top + 8 + i * 16
        body.append(f'<circle cx="{width - right + 14}" cy="{y}" r="5" fill="{color(i)}"/>'
                    f'<text x="{width - right + 24}" y="{y + 4}">{escape(name)}</text>')
    return _svg(width, height, body, title)


def heatmap(rows: Sequence[float], columns: Sequence[float], values: dict[tuple[float, float], float],
            row_label: str, column_label: str, title: str) -> str:
    """A grid of mean scores, darker for higher; `values` is keyed by (row value, column value)."""
    cell_w, cell_h, left, top = 64, 30, 70, 52
    width, height = max(240, left + cell_w * len(columns) + 10), top + cell_h * len(rows) + 34
    finite = [v for v in values.values() if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    body = [f'<text x="4" y="14" font-weight="600">{escape(title)}</text>',
            f'<text x="{left + cell_w * len(columns) / 2}" y="32" text-anchor="middle">{escape(column_label)}</text>',
            f'<text x="4" y="{height - 6}">rows: {escape(row_label)}</text>']
    for j, column in enumerate(columns):
        body.append(f'<text x="{left + j * cell_w + cell_w / 2}" y="{top - 6}" text-anchor="middle">'
                    f'{column:g}</text>')
    for i, row in enumerate(rows):
        y = top + i * cell_h
        body.append(f'<text x="{left - 6}" y="{y + cell_h / 2 + 4}" text-anchor="end">{row:g}</text>')
        for j, column in enumerate(columns):
            value = values.get((row, column), math.nan)
            if math.isfinite(value):
                share = (value - low) / (high - low) if high > low else 1.0
                fill = f"rgb({int(235 - 170 * share)},{int(240 - 135 * share)},{int(250 - 42 * share)})"
                ink = "#fff" if share > 0.6 else "#222"
                text = f"{value:.3f}"
            else:
                fill, ink, text = "#f4f4f4", "#999", "—"
            body.append(f'<rect x="{left + j * cell_w}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                        f'fill="{fill}"/><text x="{left + j * cell_w + cell_w / 2 - 1}" y="{y + cell_h / 2 + 3}" '
                        f'text-anchor="middle" fill="{ink}">{text}</text>')
    return _svg(width, height, body, title)


def interval_chart(intervals: Sequence[Interval], title: str, threshold: float | None) -> str:
    """One row per estimate: a dot at the value and a bar over its interval, with zero and −threshold marked."""
    width, left, right, top, row_h = 640, 190, 20, 34, 22
    height = top + row_h * len(intervals) + 30
    plot_w = width - left - right
    bounds = [v for i in intervals for v in (i.low, i.high, i.value)] + [0.0]
    if threshold is not None:
        bounds.append(-threshold)
    low, high = _span(bounds, pad=0.08)

    def sx(v: float) -> float:
        return left + plot_w * (v - low) / (high - low)

    body = [f'<text x="4" y="14" font-weight="600">{escape(title)}</text>',
            f'<line x1="{sx(0):.1f}" x2="{sx(0):.1f}" y1="{top - 6}" y2="{height - 24}" stroke="#555"/>']
    if threshold is not None:
        body.append(f'<line x1="{sx(-threshold):.1f}" x2="{sx(-threshold):.1f}" y1="{top - 6}" y2="{height - 24}" '
                    f'stroke="#d62728" stroke-dasharray="4 3"/><text x="{sx(-threshold):.1f}" y="{top - 8}" '
                    f'text-anchor="middle" fill="#d62728">−{threshold:g}</text>')
    for tick in _ticks(low, high):
        body.append(f'<text x="{sx(tick):.1f}" y="{height - 8}" text-anchor="middle">{tick:g}</text>')
    for n, interval in enumerate(intervals):
        y = top + n * row_h + row_h / 2
        worse, better = interval.high < 0, interval.low > 0
        ink = "#d62728" if worse else "#2ca02c" if better else "#555"
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(interval.label)}</text>')
        if math.isfinite(interval.low) and math.isfinite(interval.high):
            body.append(f'<line x1="{sx(interval.low):.1f}" x2="{sx(interval.high):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                        f'stroke="{ink}" stroke-width="3"/>')
        if math.isfinite(interval.value):
            body.append(f'<circle cx="{sx(interval.value):.1f}" cy="{y:.1f}" r="5" fill="{ink}"><title>'
                        f'{escape(interval.label)}: {interval.value:+.4f} [{interval.low:+.4f}, '
                        f'{interval.high:+.4f}]</title></circle>')
    return _svg(width, height, body, title)


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One run in a trend chart: its estimate and interval (NaN when the run has none), whether the change
    from the run before is significant (`worse` / `better`), an axis tick and a hover label."""

    tick: str
    value: float
    low: float
    high: float
    mark: str | None
    label: str


_MARK_INK = {"worse": "#d62728", "better": "#2ca02c"}


def trend(points: Sequence[TrendPoint], title: str, y_label: str, current: int | None = None) -> str:
    """One estimate per run, left to right in run order, with its interval; runs whose change from the run
    before is significant are drawn large, in red (worse) or green (better), with a triangle; the
    `current` run is shaded."""
    width, height, left, bottom, top, right = 480, 230, 60, 44, 28, 14
    plot_w, plot_h = width - left - right, height - bottom - top
    y_low, y_high = _span([v for p in points for v in (p.value, p.low, p.high)])
    step = plot_w / max(len(points), 1)

    def sx(index: int) -> float:
        return left + step * (index + 0.5)

    def sy(v: float) -> float:
        return top + plot_h * (1 - (v - y_low) / (y_high - y_low))

    body = [f'<text x="4" y="14" font-weight="600">{escape(title)}</text>',
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>']
    if current is not None and 0 <= current < len(points):
        body.append(f'<rect class="current" x="{sx(current) - step / 2:.1f}" y="{top}" width="{step:.1f}" '
                    f'height="{plot_h}" fill="#f0f4ff"/>')
    for tick in _ticks(y_low, y_high):
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
                    f'stroke="#eee"/><text x="{left - 4}" y="{sy(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    body.append(f'<text transform="translate(12 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
                f'{escape(y_label)}</text>')
    every = max(1, math.ceil(len(points) / 8))  # at most about eight tick labels
    for index, point in enumerate(points):
        if index % every == 0 or index == len(points) - 1:
            body.append(f'<text x="{sx(index):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                        f'{escape(point.tick)}</text>')
    line: list[str] = []
    for index, point in enumerate(points):  # the line breaks where a run has no value
        if math.isfinite(point.value):
            line.append(f"{sx(index):.1f},{sy(point.value):.1f}")
        elif line:
            body.append(_polyline(line))
            line = []
    if line:
        body.append(_polyline(line))
    for index, point in enumerate(points):
        if not math.isfinite(point.value):
            continue
        ink = _MARK_INK.get(point.mark or "", color(0))
        x, y = sx(index), sy(point.value)
        if math.isfinite(point.low) and math.isfinite(point.high):
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{sy(point.low):.1f}" y2="{sy(point.high):.1f}" '
                        f'stroke="{ink}" stroke-width="2"/>')
        radius = 6 if point.mark else 4
        css = f' class="change {escape(point.mark)}"' if point.mark else ""
        body.append(f'<circle{css} cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{ink}">'
                    f'<title>{escape(point.label)}</title></circle>')
        if point.mark:  # beside the point: ▲ better, ▼ worse
            up = point.mark == "better"
            tip, base, side = (y - 5, y + 4, x + 14) if up else (y + 5, y - 4, x + 14)
            body.append(f'<path d="M{side - 5:.1f},{base:.1f} L{side + 5:.1f},{base:.1f} L{side:.1f},{tip:.1f} Z" '
                        f'fill="{ink}"/>')
    return _svg(width, height, body, title)


def _polyline(coordinates: list[str]) -> str:
    return f'<polyline points="{" ".join(coordinates)}" fill="none" stroke="#999" stroke-width="1.5"/>'
