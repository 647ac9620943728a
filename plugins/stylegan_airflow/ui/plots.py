"""Server-rendered SVG line charts: no JavaScript, no chart library, nothing from a CDN."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Colours shared with the workflow graph: pretrained orange, ours green.
SERIES_COLOURS = {"pretrained": "#e07a00", "ours": "#2e7d32"}
FALLBACK_COLOURS = ("#1565c0", "#8e24aa", "#c62828", "#00838f", "#6d4c41")
WIDTH, HEIGHT = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 130, 30, 40


@dataclass(frozen=True)
class Point:
    """One value of a chart."""

    x: float  # version number
    y: float
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


def line_chart(title: str, series: Mapping[str, Sequence[Point]],
               stand_in: bool = False) -> Markup:
    """A chart of one metric: x = version number, one line per series, a legend."""
    points = [p for ps in series.values() for p in ps]
    if not points:
        return Markup("")
    xs = sorted({p.x for p in points})
    yticks = nice_ticks(min(p.y for p in points), max(p.y for p in points))
    x_lo, x_hi = (xs[0] - 0.5, xs[-1] + 0.5)
    y_lo, y_hi = yticks[0], yticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y_lo) / ((y_hi - y_lo) or 1) * plot_h

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{LEFT}" y="18" class="chart-title">{escape(title)}</text>']
    if stand_in:
        out.append(f'<text x="{WIDTH - RIGHT}" y="18" text-anchor="end" '
                   'class="chart-standin">STAND-IN, not a standard score</text>')
    for y in yticks:  # horizontal grid and y labels
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   'class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" '
                   f'class="tick">{_fmt(y)}</text>')
    for x in xs:
        out.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" '
                   f'class="tick">v{int(x)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
               'class="axis">version</text>')
    for i, (name, ps) in enumerate(series.items()):
        c = colour(name, i)
        ordered = sorted(ps, key=lambda p: p.x)
        if len(ordered) > 1:
            path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in ordered)
            out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for p in ordered:
            out.append(f'<circle cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="4" fill="{c}">'
                       f'<title>{escape(p.label)}</title></circle>')
        ly = TOP + 14 + i * 18  # legend on the right
        out.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{ly - 9}" width="12" height="12" '
                   f'fill="{c}"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 30}" y="{ly + 1}" class="legend">'
                   f'{escape(name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through escape()
