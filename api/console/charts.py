"""Bar charts for the console, computed on the server and drawn as inline SVG by the
`chart` macro (`templates/console/macros.html`): no script, no chart library, nothing from
another origin. Geometry only; colours come from the stylesheet (classes), so the CSP needs
no inline style. Every chart also has its numbers as a table for screen readers and for
anyone who wants the figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 200
LEFT = 56  # room for the y-axis labels
BOTTOM = 24  # room for the x-axis labels
TOP = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    series: int = 0


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class XLabel:
    x: float
    label: str


@dataclass(frozen=True)
class BarChart:
    title: str
    description: str
    width: int
    height: int
    plot_left: int
    plot_bottom: float
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    x_labels: tuple[XLabel, ...]
    series: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]
    """the figures as a table: (label, one value per series)"""

    @property
    def empty(self) -> bool:
        return not any(b.height > 0 for b in self.bars)


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for 0)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover (the loop always returns)


def bar_chart(
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
    label_every: int | None = None,
) -> BarChart:
    """Grouped bars: one group per label, one bar per series in it. `fmt` writes a value
    for people (amounts in their currency)."""
    n = max(len(labels), 1)
    plot_width = WIDTH - LEFT - 8
    plot_height = HEIGHT - TOP - BOTTOM
    top = nice_max(max((v for _, values in series for v in values), default=0))
    group = plot_width / n
    k = max(len(series), 1)
    bar_width = max(group * 0.8 / k, 1)
    bars = []
    for s, (name, values) in enumerate(series):
        for i, value in enumerate(values):
            h = plot_height * value / top
            bars.append(
                Bar(
                    x=round(LEFT + i * group + group * 0.1 + s * bar_width, 2),
                    y=round(TOP + plot_height - h, 2),
                    width=round(bar_width, 2),
                    height=round(h, 2),
                    label=f"{labels[i]}: {name} {fmt(value)}",
                    value=fmt(value),
                    series=s,
                )
            )
    ticks = tuple(
        Tick(y=round(TOP + plot_height * (1 - f), 2), label=fmt(top * f)) for f in (0, 0.5, 1)
    )
    every = label_every or max(1, math.ceil(n / 8))
    x_labels = tuple(
        XLabel(x=round(LEFT + i * group + group / 2, 2), label=labels[i])
        for i in range(0, len(labels), every)
    )
    rows = tuple(
        (labels[i], tuple(fmt(values[i]) for _, values in series)) for i in range(len(labels))
    )
    return BarChart(
        title=title,
        description=description,
        width=WIDTH,
        height=HEIGHT,
        plot_left=LEFT,
        plot_bottom=TOP + plot_height,
        bars=tuple(bars),
        ticks=ticks,
        x_labels=x_labels,
        series=tuple(name for name, _ in series),
        rows=rows,
    )
