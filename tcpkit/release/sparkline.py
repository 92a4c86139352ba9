"""Small inline SVG line plots of one metric across runs, for ``reports/index.html``.

Hand-written SVG (a polyline and one dot per run), so the index needs no plotting
library and no external file: each plot is a few hundred bytes inside the page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 160
HEIGHT = 36
PAD = 4


@dataclass(frozen=True)
class Point:
    """One run's value of a metric: the value, whether its criterion held, a hover label."""

    value: float
    ok: bool
    label: str


def sparkline(points: Sequence[Point], width: int = WIDTH, height: int = HEIGHT) -> str:
    """An ``<svg>`` of ``points`` in order: green dots where the criterion held, red where not.

    Empty string for no points. A constant series is drawn as a flat line in the middle.
    """
    if not points:
        return ""
    values = [p.value for p in points]
    low, high = min(values), max(values)
    span = high - low
    step = (width - 2 * PAD) / max(1, len(points) - 1)

    def y(v: float) -> float:
        if span == 0:
            return height / 2
        return PAD + (high - v) / span * (height - 2 * PAD)

    xy = [(PAD + i * step if len(points) > 1 else width / 2, y(p.value)) for i, p in enumerate(points)]
    line = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in xy)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="2.5" fill="{"#1a7f37" if p.ok else "#cf222e"}">'
        f"<title>{html.escape(p.label)}</title></circle>"
        for (x, yy), p in zip(xy, points, strict=True)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" xmlns="http://www.w3.org/2000/svg">'
        f'<polyline points="{line}" fill="none" stroke="#57606a" stroke-width="1.2"/>{dots}</svg>'
    )
