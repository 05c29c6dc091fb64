"""Inline SVG charts for the static report (no scripts, so the report keeps its strict CSP)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

from harness.ui.views._compare import ComparisonRow

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2"]


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def tick(value: float, lo: float, hi: float) -> str:
    """An axis label with just enough decimals to tell the two ends of the axis apart."""
    span = abs(hi - lo)
    if span < 1e-8 or abs(value) >= 1e5:
        return f"{value:.4g}"
    if span >= 1 and float(value).is_integer():
        return str(int(value))
    return f"{value:.{max(0, 2 - math.floor(math.log10(span)))}f}"


class _Frame:
    """Maps data coordinates to an SVG plot area with a margin for axis labels."""

    def __init__(
        self,
        xs: Iterable[float],
        ys: Iterable[float],
        width: int,
        height: int,
        left: int = 70,
        bottom: int = 34,
        include_zero_x: bool = False,
        right: int = 12,
    ) -> None:
        xs, ys = list(xs), list(ys)
        self.x0, self.x1 = min(xs), max(xs)
        if include_zero_x:
            self.x0, self.x1 = min(self.x0, 0.0), max(self.x1, 0.0)
        self.y0, self.y1 = min(ys), max(ys)
        if self.x1 <= self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        if self.y1 <= self.y0:
            self.y0, self.y1 = self.y0 - 0.5, self.y1 + 0.5
        self.width, self.height, self.left, self.bottom, self.top, self.right = width, height, left, bottom, 10, right

    def x(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        return self.top + (1 - (v - self.y0) / (self.y1 - self.y0)) * (self.height - self.top - self.bottom)

    def axes(self, xlabel: str, ylabel: str) -> list[str]:
        w, h, b, mid = self.width, self.height, self.bottom, (self.height - self.bottom) / 2
        y0, y1 = tick(self.y0, self.y0, self.y1), tick(self.y1, self.y0, self.y1)
        x0, x1 = tick(self.x0, self.x0, self.x1), tick(self.x1, self.x0, self.x1)
        return [
            (
                f'<rect x="{self.left}" y="{self.top}" width="{w - self.left - self.right}" '
                f'height="{h - self.top - b}" fill="none" stroke="#ccc"/>'
            ),
            f'<text x="{self.left - 4}" y="{self.top + 10}" font-size="11" text-anchor="end">{y1}</text>',
            f'<text x="{self.left - 4}" y="{h - b}" font-size="11" text-anchor="end">{y0}</text>',
            f'<text x="{self.left}" y="{h - 12}" font-size="11">{x0}</text>',
            f'<text x="{w - self.right}" y="{h - 12}" font-size="11" text-anchor="end">{x1}</text>',
            (
                f'<text x="{(self.left + w - self.right) / 2}" y="{h - 4}" font-size="11" text-anchor="middle">'
                f"{esc(xlabel)}</text>"
            ),
            (
                f'<text x="12" y="{mid}" font-size="11" transform="rotate(-90 12 {mid})" text-anchor="middle">'
                f"{esc(ylabel)}</text>"
            ),
        ]


def _svg(width: int, height: int, parts: list[str], label: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(label)}">' + "".join(parts) + "</svg>"
    )


def _legend(names: list[str], x: float, y: float) -> list[str]:
    return [
        f'<text x="{x}" y="{y + 14 * i}" font-size="11" fill="{COLORS[i % len(COLORS)]}">{esc(n)}</text>'
        for i, n in enumerate(names)
    ]


LEGEND_W = 280


def svg_lines(
    series: dict[str, list[tuple[float, float]]],
    width: int = 860,
    height: int = 240,
    ylabel: str = "loss",
    xlabel: str = "step",
) -> str:
    """A line chart as inline SVG (one polyline per series)."""
    series = {k: [p for p in v if p[1] is not None and not math.isnan(p[1])] for k, v in series.items()}
    points = [p for s in series.values() for p in s]
    if not points:
        return "<p class=small>no data</p>"
    f = _Frame((p[0] for p in points), (p[1] for p in points), width, height, right=LEGEND_W)
    parts = f.axes(xlabel, ylabel)
    for i, pts in enumerate(series.values()):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}"/>')
        parts += [
            f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="2.2" fill="{color}"/>' for x, y in pts if len(pts) <= 60
        ]
    parts += _legend(list(series), width - LEGEND_W + 10, f.top + 10)
    return _svg(width, height, parts, ylabel)


def svg_intervals(
    series: dict[str, list[tuple[float, float, float, float]]],
    width: int = 860,
    height: int = 260,
    xlabel: str = "",
    ylabel: str = "metric",
    log_x: bool = False,
) -> str:
    """Points joined by lines, each with a vertical interval: series -> [(x, y, lo, hi)]."""
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    pts = [p for s in series.values() for p in s if not (log_x and p[0] <= 0)]
    if not pts:
        return "<p class=small>no data</p>"
    f = _Frame((tx(p[0]) for p in pts), [v for p in pts for v in (p[2], p[3])], width, height, right=LEGEND_W)
    parts = f.axes(xlabel + (" (log10)" if log_x else ""), ylabel)
    for i, s in enumerate(series.values()):
        color = COLORS[i % len(COLORS)]
        s = sorted(p for p in s if not (log_x and p[0] <= 0))
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.4" points="'
            + " ".join(f"{f.x(tx(x)):.1f},{f.y(y):.1f}" for x, y, _, _ in s)
            + '"/>'
        )
        for x, y, lo, hi in s:
            parts.append(
                f'<line x1="{f.x(tx(x)):.1f}" x2="{f.x(tx(x)):.1f}" y1="{f.y(lo):.1f}" y2="{f.y(hi):.1f}" '
                f'stroke="{color}"/><circle cx="{f.x(tx(x)):.1f}" cy="{f.y(y):.1f}" r="3" fill="{color}"/>'
            )
    parts += _legend(list(series), width - LEGEND_W + 10, f.top + 10)
    return _svg(width, height, parts, ylabel)


def svg_forest(rows: list[ComparisonRow], width: int = 760) -> str:
    """Forest plot: one row per comparison, the delta as a dot and its 95% interval as a bar, 0 dashed."""
    rows = [r for r in rows if r.delta is not None and r.lo is not None and r.hi is not None]
    if not rows:
        return "<p class=small>no comparable results</p>"
    label_w, row_h = 300, 22
    height = 40 + row_h * len(rows)
    f = _Frame(
        [v for r in rows for v in (r.lo, r.hi)], [0, 1], width, height, left=label_w, bottom=30, include_zero_x=True
    )
    parts = [
        (f'<line x1="{f.x(0):.1f}" x2="{f.x(0):.1f}" y1="6" y2="{height - 30}" stroke="#444" stroke-dasharray="4 4"/>'),
        f'<text x="{label_w}" y="{height - 12}" font-size="11">{f.x0:+.3g}</text>',
        f'<text x="{width - 12}" y="{height - 12}" font-size="11" text-anchor="end">{f.x1:+.3g}</text>',
        (
            f'<text x="{(label_w + width) / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
            "Δ vs baseline (95% interval)</text>"
        ),
    ]
    for i, r in enumerate(rows):
        y = 16 + i * row_h
        color = {"better": "#0a7d28", "worse": "#b00020"}.get(r.verdict, "#777")
        parts.append(f'<text x="4" y="{y + 4}" font-size="11">{esc(f"{r.arm} · {r.suite} · {r.metric}")}</text>')
        parts.append(
            f'<line x1="{f.x(r.lo):.1f}" x2="{f.x(r.hi):.1f}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{f.x(r.delta):.1f}" cy="{y}" r="4" fill="{color}"/>')
    return _svg(width, height, parts, "forest plot")
