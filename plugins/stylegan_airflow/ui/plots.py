"""Server-rendered SVG line charts: no JavaScript, no chart library, nothing from a CDN."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Colours shared with the workflow graph: pretrained orange, ours green.
SERIES_COLOURS = {"pretrained": "#e07a00", "ours": "#2e7d32"}
FALLBACK_COLOURS = ("#1565c0", "#8e24aa", "#c62828", "#00838f", "#6d4c41")
BEST_COLOUR = "#1a202c"
WIDTH, HEIGHT = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 130, 30, 40


@dataclass(frozen=True)
class Point:
    """One value of a chart."""

    x: float  # version number, or kimg
    y: float | None  # None: no value there (a gap in the line)
    label: str  # tooltip: the version ref and value


def colour(series: str, index: int) -> str:
    """The line colour of a series: pretrained orange, ours green, others cycle."""
    return SERIES_COLOURS.get(series, FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)])


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _scales(xs: tuple[float, float], ys: tuple[float, float]
            ) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """Data → SVG coordinates for the plot area between the margins (a zero span maps
    to the lower edge instead of dividing by zero)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - xs[0]) / ((xs[1] - xs[0]) or 1) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - ys[0]) / ((ys[1] - ys[0]) or 1) * plot_h

    return sx, sy


def line_chart(title: str, series: Mapping[str, Sequence[Point]],
               stand_in: bool = False) -> Markup:
    """A chart of one metric: x = version number, one line per series, a legend."""
    points = [p for ps in series.values() for p in ps if p.y is not None]
    if not points:
        return Markup("")
    xs = sorted({p.x for p in points})
    values = [p.y for p in points if p.y is not None]
    yticks = nice_ticks(min(values), max(values))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    sx, sy = _scales((xs[0] - 0.5, xs[-1] + 0.5), (yticks[0], yticks[-1]))

    out = _frame("chart", title, stand_in, yticks, sy)
    for x in xs:
        out.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" '
                   f'class="tick">v{int(x)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
               'class="axis">version</text>')
    for i, (name, ps) in enumerate(series.items()):
        c = colour(name, i)
        ordered = [(p.x, p.y, p.label) for p in sorted(ps, key=lambda p: p.x)
                   if p.y is not None]
        if len(ordered) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in ordered)
            out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y, label in ordered:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{c}">'
                       f'<title>{escape(label)}</title></circle>')
        out += _legend(i, name, c)
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through escape()


def kimg_chart(title: str, series: Mapping[str, Sequence[Point]], best: Point | None = None,
               stand_in: bool = False) -> Markup:
    """A metric over training: x = kimg from 0, one line per result key; a null value is
    a gap in its line (crossed on the x axis, never drawn as 0); the best snapshot ringed.
    Each mark carries its kimg and value as data attributes, as plotted."""
    points = [p for ps in series.values() for p in ps]
    if not points:
        return Markup("")
    values = [p.y for p in points if p.y is not None]
    xticks = nice_ticks(0.0, max(p.x for p in points) or 1.0)
    yticks = nice_ticks(min(values), max(values)) if values else [0.0, 1.0]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base_y = TOP + plot_h
    sx, sy = _scales((xticks[0], xticks[-1]), (yticks[0], yticks[-1]))

    out = _frame("chart kimg-chart", title, stand_in, yticks, sy)
    for x in xticks:
        out.append(f'<text x="{sx(x):.1f}" y="{base_y + 16}" text-anchor="middle" '
                   f'class="tick">{_fmt(x)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
               'class="axis">kimg</text>')
    if not values:
        out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
                   'text-anchor="middle" class="axis">no finite values</text>')
    for i, (name, ps) in enumerate(series.items()):
        c = FALLBACK_COLOURS[i % len(FALLBACK_COLOURS)]  # keys, not pipeline branches
        ordered = sorted(ps, key=lambda p: p.x)
        segment: list[str] = []
        for p in [*ordered, None]:  # a null (or the end) closes the line drawn so far
            if p is not None and p.y is not None:
                segment.append(f"{sx(p.x):.1f},{sy(p.y):.1f}")
                continue
            if len(segment) > 1:
                out.append(f'<polyline class="line" data-key="{escape(name)}" '
                           f'points="{" ".join(segment)}" fill="none" stroke="{c}" '
                           'stroke-width="2"/>')
            segment = []
        for p in ordered:
            data = f'data-key="{escape(name)}" data-kimg="{p.x!r}"'
            if p.y is None:
                x = sx(p.x)
                out.append(f'<path class="gap" {data} d="M{x - 4:.1f},{base_y - 4} '
                           f'L{x + 4:.1f},{base_y + 4} M{x + 4:.1f},{base_y - 4} '
                           f'L{x - 4:.1f},{base_y + 4}" stroke="{c}" stroke-width="2">'
                           f'<title>{escape(p.label)}</title></path>')
            else:
                out.append(f'<circle class="point" {data} data-value="{p.y!r}" '
                           f'cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="3.5" fill="{c}">'
                           f'<title>{escape(p.label)}</title></circle>')
        out += _legend(i, name, c)
    if best is not None and best.y is not None:
        bx, by = sx(best.x), sy(best.y)
        out.append(f'<circle class="best" data-kimg="{best.x!r}" data-value="{best.y!r}" '
                   f'cx="{bx:.1f}" cy="{by:.1f}" r="8" fill="none" stroke="{BEST_COLOUR}" '
                   f'stroke-width="2"><title>{escape(best.label)}</title></circle>')
        out.append(f'<text x="{bx:.1f}" y="{by - 11:.1f}" text-anchor="middle" '
                   'class="best-label">best</text>')
        ly = TOP + 14 + len(series) * 18
        out.append(f'<circle cx="{WIDTH - RIGHT + 18}" cy="{ly - 3}" r="6" fill="none" '
                   f'stroke="{BEST_COLOUR}" stroke-width="2"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 30}" y="{ly + 1}" class="legend">best '
                   'snapshot</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through escape()


def _frame(css: str, title: str, stand_in: bool, yticks: list[float],
           sy: Callable[[float], float]) -> list[str]:
    """The opening of a chart: title, stand-in warning, horizontal grid and y labels."""
    plot_w = WIDTH - LEFT - RIGHT
    out = [f'<svg class="{css}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{LEFT}" y="18" class="chart-title">{escape(title)}</text>']
    if stand_in:
        out.append(f'<text x="{WIDTH - RIGHT}" y="18" text-anchor="end" '
                   'class="chart-standin">STAND-IN, not a standard score</text>')
    for y in yticks:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   'class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" '
                   f'class="tick">{_fmt(y)}</text>')
    return out


def _legend(i: int, name: str, c: str) -> list[str]:
    """The ``i``-th legend entry, on the right."""
    ly = TOP + 14 + i * 18
    return [f'<rect x="{WIDTH - RIGHT + 12}" y="{ly - 9}" width="12" height="12" fill="{c}"/>',
            f'<text x="{WIDTH - RIGHT + 30}" y="{ly + 1}" class="legend">{escape(name)}</text>']
